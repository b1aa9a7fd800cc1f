package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDevEndToEnd runs `handoff dev` and does what the README tells a
// newcomer: a handoff and a message through the REST API reach the
// simulated LiveChat, in order.
func TestDevEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("dev needs redis-server on PATH")
	}
	sim := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	gw := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, []string{"--nats-port", "-1", "--data-dir", t.TempDir(), "--sim-addr", sim,
			"--gateway-addr", gw, "--metrics-addr", metrics, "--log-level", "warn"}, &out)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev: %v", err)
			}
		case <-time.After(40 * time.Second):
			t.Errorf("dev did not stop")
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "handoff dev is running") {
		if time.Now().After(deadline) {
			t.Fatalf("dev did not start:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	post := func(path, body string) {
		t.Helper()
		resp, err := http.Post("http://"+gw+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
	post("/v1/conversations/demo-1/handoff", `{"customer":{"name":"Ana"},"text":"agent"}`)
	post("/v1/conversations/demo-1/messages", `{"text":"my order is late"}`)

	var chatID string
	for {
		resp, err := http.Get("http://" + sim + "/_sim/chats")
		if err == nil {
			var chats []struct {
				ID       string
				Customer struct{ Name string }
				Events   []struct{ Text string }
			}
			_ = json.NewDecoder(resp.Body).Decode(&chats)
			resp.Body.Close()
			if len(chats) == 1 && len(chats[0].Events) >= 2 {
				texts := []string{}
				for _, e := range chats[0].Events {
					texts = append(texts, e.Text)
				}
				if chats[0].Customer.Name != "Ana" || texts[len(texts)-1] != "my order is late" {
					t.Fatalf("chat: customer %q, texts %q", chats[0].Customer.Name, texts)
				}
				chatID = chats[0].ID
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message never reached the simulator; dev output:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The agent answers in the simulator; its webhook reaches the gateway,
	// which marks the conversation as with an agent.
	resp, err := http.Post("http://"+sim+"/_sim/chats/"+chatID+"/agent_message", "application/json", strings.NewReader(`{"text":"Hi, I am Tom"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for {
		resp, err := http.Get("http://" + gw + "/v1/conversations/demo-1")
		if err != nil {
			t.Fatal(err)
		}
		var conv struct{ Mode string }
		_ = json.NewDecoder(resp.Body).Decode(&conv)
		resp.Body.Close()
		if conv.Mode == "agent" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's reply never came back through the webhook (mode %q)", conv.Mode)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err = http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if !strings.Contains(b.String(), `handoff_worker_events_total{outcome="applied",type="message.user"} 1`) {
		t.Errorf("worker metrics do not show the applied message")
	}
}

// TestDevWithoutRedis: on a machine without redis-server, dev still runs
// NATS and the simulator and says what is missing.
func TestDevWithoutRedis(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	sim := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, []string{"--nats-port", "-1", "--data-dir", t.TempDir(), "--sim-addr", sim, "--log-level", "error"}, &out)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "handoff dev is running") {
		if time.Now().After(deadline) {
			t.Fatalf("dev did not start:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "without Redis") || !strings.Contains(out.String(), "apt-get install redis-server") {
		t.Errorf("dev does not say what is missing:\n%s", out.String())
	}
	resp, err := http.Get("http://" + sim + "/_sim/chats")
	if err != nil {
		t.Fatalf("simulator not serving: %v", err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("dev: %v", err)
	}
}
