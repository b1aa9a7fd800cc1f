package gateway

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/handoff-dev/handoff"
)

// captureRejections sends the gateway's bounded rejection log to a buffer,
// with a stopped clock so how many lines it lets through does not depend
// on how fast the test runs.
func captureRejections(e *env) *bytes.Buffer {
	var buf bytes.Buffer
	e.gw.rejected = newRejectLog(slog.New(slog.NewTextHandler(&buf, nil)))
	stopped := time.Now()
	e.gw.rejected.lim.now = func() time.Time { return stopped }
	return &buf
}

// Issue 11 item 4: a 700 KB token issuer reached the log whole and came
// back in the 401. Now the answer is generic and the log line bounded, and
// a flood of refusals writes a bounded number of lines.
func TestRefusalsAreGenericAndBounded(t *testing.T) {
	e := newEnv(t, nil)
	logged := captureRejections(e)
	k := testKeys(t)
	now := time.Now()
	hugeIssuer := strings.Repeat("A", 700<<10)
	tok := token(t, k.key, "k1", jwt.MapClaims{"iss": hugeIssuer, "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	body := strings.Replace(chatDM, "talk to an agent", "hello", -1)

	code, answer := e.do(request{path: "/google-chat", body: body, auth: "Bearer " + tok})
	if code != 401 {
		t.Fatalf("status %d, want 401", code)
	}
	if _, reason := errorCode(t, answer); reason != reasonUnauthorized || len(answer) > 200 {
		t.Errorf("answer %q: want the generic reason %q", clip(string(answer), 300), reasonUnauthorized)
	}
	if n := logged.Len(); n == 0 || n > 2048 {
		t.Errorf("the refusal wrote %d bytes to the log, want a line of at most 2 KiB:\n%s", n, clip(logged.String(), 600))
	}

	// Configuration is not revealed either: API keys exist here, but the
	// answers to a missing key and to a wrong one read the same.
	_, noKey := e.do(request{path: "/v1/conversations/c1/messages", body: `{"text":"hi"}`, auth: "-"})
	_, wrongKey := e.do(request{path: "/v1/conversations/c1/messages", body: `{"text":"hi"}`, auth: "Bearer nope"})
	if !bytes.Equal(noKey, wrongKey) {
		t.Errorf("a missing and a wrong key get different answers: %s vs %s", noKey, wrongKey)
	}

	logged.Reset()
	for i := 0; i < 200; i++ {
		e.do(request{path: "/v1/conversations/c1/messages", body: `{"text":"hi"}`, auth: "Bearer nope"})
	}
	if lines := strings.Count(logged.String(), "\n"); lines > 20 {
		t.Errorf("200 refused requests in a frozen second wrote %d log lines, want at most the burst of 20", lines)
	}
}

// Issue 11 item 5: with --insecure-no-auth a forged message.agent and a
// forged chat_deactivated were accepted. A configured secret is always
// checked.
func TestForgedWebhookInInsecureMode(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.InsecureNoAuth = true
		c.LiveChatWebhookSecret = testWebhookSecret
	})
	conv := "projects/acme/agent/sessions/forged"
	_, err := e.st.UpdateConversation(context.Background(), conv, func(c *handoff.Conversation) error {
		c.Mode, c.ChatID, c.CustomerID = handoff.ModeAgent, "PS0X0L086G", "cust-1"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"forged agent message": webhookBody("incoming_event", "guess", agentEvent("F_1", "message", "agent-1", "all", "send me your password")),
		"forged close":         webhookBody("chat_deactivated", "", `{"chat_id":"PS0X0L086G","thread_id":"PZ070E0W1B","user_id":"agent@example.com"}`),
	} {
		if code, b := e.do(request{path: "/livechat/webhook", body: body, auth: "-"}); code != 401 {
			t.Errorf("%s: %d %s, want 401", name, code, b)
		}
	}
	if evs := e.outEvents(conv); len(evs) != 0 {
		t.Errorf("forged webhooks relayed %d events", len(evs))
	}
	if m := e.mode(conv); m != handoff.ModeAgent {
		t.Errorf("mode %s after a forged close, want agent", m)
	}
	// The real one still works.
	body := webhookBody("incoming_event", testWebhookSecret, agentEvent("R_1", "message", "agent-1", "all", "hi"))
	if code, b := e.do(request{path: "/livechat/webhook", body: body, auth: "-"}); code != 200 {
		t.Errorf("genuine webhook: %d %s", code, b)
	}
}

func TestInsecureModeListensOnLoopbackOnly(t *testing.T) {
	cases := []struct {
		addr          string
		insecure, any bool
		ok            bool
	}{
		{":8080", false, false, true},
		{":8080", true, false, false},
		{"0.0.0.0:8080", true, false, false},
		{"[::]:8080", true, false, false},
		{"10.1.2.3:8080", true, false, false},
		{"gateway.example.com:8080", true, false, false},
		{"127.0.0.1:8080", true, false, true},
		{"[::1]:8080", true, false, true},
		{"localhost:8080", true, false, true},
		{":8080", true, true, true},
	}
	for _, c := range cases {
		cfg := Config{InsecureNoAuth: c.insecure, InsecureAllowRemote: c.any}
		if err := cfg.CheckListen(c.addr); (err == nil) != c.ok {
			t.Errorf("%s insecure=%v allow-remote=%v: err %v, want ok=%v", c.addr, c.insecure, c.any, err, c.ok)
		}
	}
}

// Issue 11 item 6: /readyz told anyone the backend's error text.
func TestReadyzSaysNothingOfTheBackend(t *testing.T) {
	e := newEnv(t, nil)
	if code, b := e.do(request{method: "GET", path: "/readyz", auth: "-"}); code != 200 {
		t.Fatalf("ready: %d %s", code, b)
	}
	e.nats.Stop()
	// The client notices the lost connection on its own schedule.
	code, b := 0, []byte(nil)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if code, b = e.do(request{method: "GET", path: "/readyz", auth: "-"}); code != 200 {
			break
		}
	}
	if code != 503 {
		t.Fatalf("NATS down: %d %s, want 503", code, b)
	}
	if _, reason := errorCode(t, b); reason != reasonNotReady {
		t.Errorf("reason %q, want only %q", reason, reasonNotReady)
	}
}
