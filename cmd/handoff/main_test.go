package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/stream"
)

// TestMain removes the handoff binary the tests built (testenv.RunTests).
func TestMain(m *testing.M) { os.Exit(testenv.RunTests(m)) }

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSetupTwiceChangesNothing(t *testing.T) {
	n := testenv.StartNATS(t)
	code, out, errs := runCLI(t, "setup", "--nats-url", n.URL())
	if code != 0 || strings.Count(out, "created") != 6 {
		t.Fatalf("first setup: code %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLI(t, "setup", "--nats-url", n.URL())
	if code != 0 || strings.Count(out, "unchanged") != 6 {
		t.Fatalf("second setup: code %d\n%s%s", code, out, errs)
	}
}

func TestPublishSameIDTwiceStoresOnce(t *testing.T) {
	n := testenv.StartNATS(t)
	if code, out, errs := runCLI(t, "setup", "--nats-url", n.URL()); code != 0 {
		t.Fatalf("setup: %s%s", out, errs)
	}
	args := []string{"publish", "--nats-url", n.URL(), "--conversation", "projects/p/agent/sessions/s 1",
		"--type", "handoff.requested", "--data", `{"customer":{"name":"Ana"}}`, "--id", "evt-42"}
	code, out1, errs := runCLI(t, args...)
	if code != 0 || !strings.Contains(out1, "seq=1") {
		t.Fatalf("first publish: code %d %s%s", code, out1, errs)
	}
	code, out2, errs := runCLI(t, args...)
	if code != 0 || !strings.Contains(out2, "seq=1") || !strings.Contains(out2, "duplicate") {
		t.Fatalf("second publish: code %d %s%s", code, out2, errs)
	}
	_, js := n.Connect()
	s, err := js.Stream(context.Background(), stream.InStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestPublishErrors(t *testing.T) {
	n := testenv.StartNATS(t)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad json", []string{"--conversation", "c", "--type", "message.user", "--data", "{"}, 1, "not valid JSON"},
		{"unknown type", []string{"--conversation", "c", "--type", "message.bogus", "--data", "{}"}, 1, `type: unknown event type "message.bogus"`},
		{"missing conversation", []string{"--type", "message.user"}, 2, "--conversation and --type are required"},
		{"invalid data", []string{"--conversation", "c", "--type", "message.user", "--data", `{"text":""}`}, 1, "data.text"},
		{"unknown flag", []string{"--bogus"}, 2, "bogus"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runCLI(t, append([]string{"publish", "--nats-url", n.URL()}, c.args...)...)
			if code != c.code || !strings.Contains(errs, c.want) && !strings.Contains(out, c.want) {
				t.Errorf("code %d (want %d), stderr %q (want it to mention %q)", code, c.code, errs, c.want)
			}
		})
	}
}

func TestHelpNamesEnvironmentVariables(t *testing.T) {
	code, out, _ := runCLI(t, "setup", "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, env := range []string{"$NATS_URL", "$HANDOFF_STREAM_DUPLICATE_WINDOW", "$HANDOFF_LOG_FORMAT"} {
		if !strings.Contains(out, env) {
			t.Errorf("setup --help does not mention %s:\n%s", env, out)
		}
	}
}

// Issue 8 names the flag and its variable; the worker's --help must show
// both with the default.
func TestWorkerHelpNamesTheIdempotencyWindow(t *testing.T) {
	code, out, _ := runCLI(t, "worker", "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, want := range []string{"--idempotency-window [$HANDOFF_IDEMPOTENCY_WINDOW]", `(default "24h0m0s")`} {
		if !strings.Contains(out, want) {
			t.Errorf("worker --help does not mention %s:\n%s", want, out)
		}
	}
}

func TestEnvironmentSetsFlagDefaults(t *testing.T) {
	n := testenv.StartNATS(t)
	t.Setenv("NATS_URL", n.URL())
	if code, out, errs := runCLI(t, "setup"); code != 0 {
		t.Fatalf("setup with NATS_URL from the environment: %s%s", out, errs)
	}
	t.Setenv("HANDOFF_ACK_WAIT", "soon")
	if code, _, errs := runCLI(t, "setup"); code != 2 || !strings.Contains(errs, "HANDOFF_ACK_WAIT") {
		t.Errorf("a bad env value should be a usage error naming it, got %d %q", code, errs)
	}
}

func TestUnknownCommand(t *testing.T) {
	if code, _, errs := runCLI(t, "frobnicate"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Errorf("unknown command: code %d, %q", code, errs)
	}
	if code, out, _ := runCLI(t, "version"); code != 0 || !strings.HasPrefix(out, "handoff ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestParseBytes(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"64MiB", 64 << 20, true}, {"1GiB", 1 << 30, true}, {"512KiB", 512 << 10, true},
		{"1000", 1000, true}, {"10B", 10, true}, {"-1MiB", 0, false}, {"lots", 0, false}, {"MiB", 0, false},
	}
	for _, c := range cases {
		got, err := parseBytes(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestSetupRegistersWebhooksOnce(t *testing.T) {
	n := testenv.StartNATS(t)
	sim := livechatsim.New(livechatsim.Options{})
	t.Cleanup(sim.Close)
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	args := func(secret string) []string {
		return []string{"setup", "--nats-url", n.URL(), "--livechat-webhook-url", "https://gw.example/livechat/webhook",
			"--livechat-webhook-secret", secret, "--livechat-api-url", ts.URL, "--livechat-accounts-url", ts.URL,
			"--livechat-client-id", "app", "--livechat-client-secret", "s", "--livechat-refresh-token", "r"}
	}
	steps := []struct {
		secret, want string
	}{{"one", "registered"}, {"one", "unchanged"}, {"two", "updated"}}
	for _, s := range steps {
		code, out, errs := runCLI(t, args(s.secret)...)
		webhookLines := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "webhook ") && strings.HasSuffix(line, " "+s.want) {
				webhookLines++
			}
		}
		if code != 0 || webhookLines != len(reversePathActions) {
			t.Fatalf("setup with secret %q: code %d, want every webhook %s:\n%s%s", s.secret, code, s.want, out, errs)
		}
	}
	lc := livechat.New(livechat.Config{APIURL: ts.URL, AccountsURL: ts.URL, ClientID: "app", ClientSecret: "s", RefreshToken: "r"})
	tok, err := lc.RefreshAgentToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := lc.ListWebhooks(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if len(hooks) != len(reversePathActions) {
		t.Fatalf("%d registrations, want %d: %+v", len(hooks), len(reversePathActions), hooks)
	}
	for _, h := range hooks {
		if h.SecretKey != "two" {
			t.Errorf("%s registered with secret %q, want the new one", h.Action, h.SecretKey)
		}
	}
	// LiveChat's action is enable_license_webhooks (plural): the
	// simulator counts each setup's call, and the license's webhooks are on.
	if n := sim.Stats()["enable_license_webhooks"][200]; n != int64(len(steps)) {
		t.Errorf("enable_license_webhooks answered 200 %d times, want once per setup (%d); stats %v", n, len(steps), sim.Stats())
	}
	if on, err := lc.LicenseWebhooksEnabled(context.Background(), tok.AccessToken); err != nil || !on {
		t.Errorf("license webhooks enabled = %v, %v", on, err)
	}
	if code, _, errs := runCLI(t, "setup", "--nats-url", n.URL(), "--livechat-webhook-url", "https://x"); code != 2 || !strings.Contains(errs, "--livechat-webhook-secret") {
		t.Errorf("a URL without a secret: code %d %q", code, errs)
	}
}
