package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
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

// keyServer is a JWKS endpoint for one test: it counts fetches, can be
// slowed down or made to fail, and says how long its keys may be cached.
type keyServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	delay   time.Duration
	fail    bool
	maxAge  int
	fetches atomic.Int32
}

func newKeyServer(t *testing.T, keys map[string]*rsa.PublicKey) *keyServer {
	ks := &keyServer{keys: keys}
	ks.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.fetches.Add(1)
		ks.mu.Lock()
		delay, fail, maxAge := ks.delay, ks.fail, ks.maxAge
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		for kid, pk := range ks.keys {
			set.Keys = append(set.Keys, map[string]string{"kty": "RSA", "use": "sig", "kid": kid,
				"n": base64.RawURLEncoding.EncodeToString(pk.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pk.E)).Bytes())})
		}
		ks.mu.Unlock()
		time.Sleep(delay)
		if fail {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if maxAge > 0 {
			w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d, must-revalidate", maxAge))
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(ks.Close)
	return ks
}

func (ks *keyServer) set(f func(ks *keyServer)) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	f(ks)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

func chatTokenWith(t *testing.T, key *rsa.PrivateKey, kid string) string {
	now := time.Now()
	return token(t, key, kid, jwt.MapClaims{"iss": DefaultChatIssuer, "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
}

// Issue 11 item 1: one request with a made-up key ID that hung up after
// 20 ms cancelled the key fetch it had started, and the back-off then kept
// tokens signed with Google's new key out for 30 s.
func TestKeyRotationLockOut(t *testing.T) {
	k := testKeys(t)
	// Google's key server, slow today, already serving the rotated-in k2.
	ks := newKeyServer(t, map[string]*rsa.PublicKey{"k1": &k.key.PublicKey, "k2": &k.other.PublicKey})
	ks.set(func(ks *keyServer) { ks.delay = 300 * time.Millisecond })
	e := newEnv(t, func(c *Config) {
		c.ChatJWKSURL = ks.URL
		c.ChatJWKSMinRefresh = 30 * time.Second
	})

	// The attacker: a token with a made-up key ID, no body (so the server
	// notices the hang-up at once), and a client that gives up after 20 ms.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/google-chat", nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+chatTokenWith(t, k.other, "made-up"))
	if resp, err := (&http.Client{Timeout: 20 * time.Millisecond}).Do(req); err == nil {
		resp.Body.Close()
		t.Log("the attacker's request was answered within 20 ms; the hang-up did not happen")
	}

	// Google Chat, right after, with tokens signed by the new key.
	body := strings.Replace(chatDM, "talk to an agent", "hello", -1)
	var wg sync.WaitGroup
	codes := make([]int, 10)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = e.do(request{path: "/google-chat", body: body, auth: "Bearer " + chatTokenWith(t, k.other, "k2")})
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("Chat request %d with the rotated-in key: %d, want 200", i, c)
		}
	}
	// One fetch served them all (and the attacker).
	if n := ks.fetches.Load(); n != 1 {
		t.Errorf("%d key fetches, want 1 shared by every caller", n)
	}
}

// Keys are refreshed before they are needed, on the key server's
// Cache-Control max-age: a key rotated in during that time is known when
// its first token arrives, even if the key server is down by then.
func TestKeysRefreshInTheBackground(t *testing.T) {
	k := testKeys(t)
	ks := newKeyServer(t, map[string]*rsa.PublicKey{"k1": &k.key.PublicKey})
	ks.set(func(ks *keyServer) { ks.maxAge = 100 })
	e := newEnv(t, func(c *Config) {
		c.ChatJWKSURL = ks.URL
		c.ChatJWKSMinRefresh = 30 * time.Second
		c.ChatJWKSRefresh = time.Hour // max-age, not this, decides
	})
	jk := e.gw.chatJWT.chatKeys
	waitFor(t, "the first fetch", func() bool { jk.mu.Lock(); defer jk.mu.Unlock(); return jk.keys != nil })
	clock := time.Now()
	jk.mu.Lock()
	jk.now = func() time.Time { return clock }
	jk.mu.Unlock()
	advance := func(d time.Duration) { jk.mu.Lock(); clock = clock.Add(d); jk.mu.Unlock() }

	body := strings.Replace(chatDM, "talk to an agent", "hello", -1)
	chat := func(kid string, key *rsa.PrivateKey) int {
		code, _ := e.do(request{path: "/google-chat", body: body, auth: "Bearer " + chatTokenWith(t, key, kid)})
		return code
	}
	if c := chat("k1", k.key); c != 200 {
		t.Fatalf("k1: %d", c)
	}
	ks.set(func(ks *keyServer) { ks.keys["k2"] = &k.other.PublicKey }) // Google publishes its next key
	advance(80 * time.Second)                                          // past 3/4 of max-age=100
	if c := chat("k1", k.key); c != 200 {
		t.Fatalf("k1 after 80s: %d", c)
	}
	waitFor(t, "the background refresh", func() bool {
		jk.mu.Lock()
		defer jk.mu.Unlock()
		return jk.keys["k2"] != nil
	})
	ks.set(func(ks *keyServer) { ks.fail = true })
	if c := chat("k2", k.other); c != 200 {
		t.Errorf("first token signed with the rotated-in key: %d, want 200 without asking the (now failing) key server", c)
	}
	if n := ks.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2 (the first, the background refresh)", n)
	}
}

// Issue 11 item 8: key servers only over https (or loopback, for tests),
// and RSA keys under 2048 bits are not trusted.
func TestKeyServerRules(t *testing.T) {
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"https://www.googleapis.com/oauth2/v3/certs", true},
		{"http://127.0.0.1:8080/keys", true},
		{"http://[::1]/keys", true},
		{"http://localhost/keys", true},
		{"http://www.googleapis.com/oauth2/v3/certs", false},
		{"http://10.0.0.1/keys", false},
		{"ftp://example.com/keys", false},
		{"/keys", false},
	} {
		cfg := testConfig(t)
		cfg.ChatJWKSURL = c.url
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("JWKS URL %s: %v, want ok=%v", c.url, err, c.ok)
		}
	}

	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	k := testKeys(t)
	ks := newKeyServer(t, map[string]*rsa.PublicKey{"weak": &weak.PublicKey, "k1": &k.key.PublicKey})
	e := newEnv(t, func(c *Config) { c.ChatJWKSURL = ks.URL })
	body := strings.Replace(chatDM, "talk to an agent", "hello", -1)
	if code, _ := e.do(request{path: "/google-chat", body: body, auth: "Bearer " + chatTokenWith(t, weak, "weak")}); code != 401 {
		t.Errorf("token signed with a 1024-bit key: %d, want 401", code)
	}
	if code, _ := e.do(request{path: "/google-chat", body: body, auth: "Bearer " + chatTokenWith(t, k.key, "k1")}); code != 200 {
		t.Errorf("token signed with a 2048-bit key: %d, want 200", code)
	}
}
