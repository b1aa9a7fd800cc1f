package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/stream"
)

// login runs `livechat login` against sim until it prints the authorize
// URL, then lets visit act as the browser; it returns login's error.
func login(t *testing.T, simURL, file string, visit func(authorize, redirect string)) error {
	t.Helper()
	loginStdin = strings.NewReader("") // nothing pasted
	redirect := fmt.Sprintf("http://127.0.0.1:%d/callback", testenv.FreePort(t))
	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- runLiveChatLogin(t.Context(), []string{"--livechat-accounts-url", simURL,
			"--livechat-client-id", "handoff-app", "--livechat-client-secret", "secret",
			"--redirect-uri", redirect, "--refresh-token-file", file, "--no-browser", "--timeout", "30s"}, &out)
	}()
	deadline := time.Now().Add(10 * time.Second)
	var authorize string
	for authorize == "" {
		for _, line := range strings.Split(out.String(), "\n") {
			if u, ok := strings.CutPrefix(line, "  "); ok && strings.HasPrefix(u, simURL) {
				authorize = u
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no authorize URL printed:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	visit(authorize, redirect)
	select {
	case err := <-done:
		t.Logf("login said:\n%s", out.String())
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("login did not finish")
		return nil
	}
}

// browse follows the authorize URL as a browser would: the simulator
// approves and redirects to the login's callback.
func browse(t *testing.T) func(authorize, redirect string) {
	return func(authorize, _ string) {
		resp, err := http.Get(authorize)
		if err != nil {
			t.Fatalf("authorize: %v", err)
		}
		resp.Body.Close()
	}
}

// TestLiveChatLogin is the whole flow against the simulator: authorize,
// code, token, the refresh token saved (0600), and a worker started with
// that file alone delivers a handoff. The simulator accepts only refresh
// tokens it minted, so the worker works only with the one login saved.
func TestLiveChatLogin(t *testing.T) {
	sim := livechatsim.New(livechatsim.Options{ClientID: "handoff-app", StrictRefreshTokens: true})
	t.Cleanup(sim.Close)
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	file := filepath.Join(t.TempDir(), "conf", "refresh-token")

	if err := login(t, ts.URL, file, browse(t)); err != nil {
		t.Fatalf("login: %v", err)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("refresh token file mode %v; want 0600", fi.Mode().Perm())
	}

	n := testenv.StartNATS(t)
	_, js := n.Connect()
	if _, err := stream.Setup(t.Context(), js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runWorker(ctx, []string{"--nats-url", n.URL(), "--store", "nats",
			"--livechat-api-url", ts.URL, "--livechat-accounts-url", ts.URL,
			"--livechat-client-id", "handoff-app", "--livechat-client-secret", "secret",
			"--livechat-refresh-token-file", file, "--metrics-addr", "", "--log-level", "error"}, &lockedBuffer{})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	ev, err := handoff.NewEvent(handoff.TypeHandoffRequested, "login-conv", handoff.HandoffRequested{Text: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publisher.New(js).Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(sim.Chats()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the worker started with the saved refresh token opened no chat; simulator: %v", sim.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLiveChatLoginRefuses: a redirect whose state is not this login's, and
// an app lacking scopes, stop the login with a message saying why, and
// nothing is saved.
func TestLiveChatLoginRefuses(t *testing.T) {
	tests := []struct {
		name   string
		scopes string
		visit  func(t *testing.T) func(authorize, redirect string)
		want   []string
	}{
		{"state does not match", "", func(t *testing.T) func(string, string) {
			return func(_, redirect string) {
				resp, err := http.Get(redirect + "?code=stolen&state=not-this-login")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
		}, []string{"state parameter", "does not match"}},
		{"scopes missing", "customers:own", browse, []string{"webhooks.configuration:rw (for setup)", "webhooks.state:rw (for setup)", "nothing was saved"}},
		{"worker scope missing", "webhooks.configuration:rw,webhooks.state:rw", browse, []string{"customers:own (for worker)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := livechatsim.New(livechatsim.Options{Scopes: tc.scopes})
			t.Cleanup(sim.Close)
			ts := httptest.NewServer(sim)
			t.Cleanup(ts.Close)
			file := filepath.Join(t.TempDir(), "refresh-token")
			err := login(t, ts.URL, file, tc.visit(t))
			if err == nil {
				t.Fatal("login succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, err := os.Stat(file); !os.IsNotExist(err) {
				t.Errorf("a refresh token was saved after a refusal: %v", err)
			}
		})
	}
}
