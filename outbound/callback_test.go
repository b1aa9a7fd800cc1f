package outbound

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func testMetrics(t *testing.T) *Metrics {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func agentEvent(t *testing.T, conv, id, name, text string) handoff.Event {
	t.Helper()
	ev, err := handoff.NewEvent(handoff.TypeMessageAgent, conv, handoff.AgentMessage{Text: text, AgentName: name, ChatID: "CHAT1"})
	if err != nil {
		t.Fatal(err)
	}
	ev.ID = id
	ev.Source = "livechat"
	return ev
}

func outgoing(ev handoff.Event, to handoff.ReplyTo) Outgoing {
	p, _ := ev.Payload()
	return Outgoing{Key: ev.ID, To: to, Event: ev, Payload: p}
}

func newTestCallback(t *testing.T, url, secret string) *Callback {
	t.Helper()
	c, err := NewCallback(CallbackConfig{URL: url, Secrets: secret, Timeout: 2 * time.Second, Breaker: BreakerConfig{Failures: 3, OpenFor: time.Hour}}, testMetrics(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A receiver that verifies with the Standard Webhooks reference library
// accepts what we send, and sees the CloudEvent unchanged under the event's
// ID.
func TestCallbackVerifiesWithStandardWebhooks(t *testing.T) {
	secret := testenv.NewSecret(t)
	rcv := testenv.StartCallbackReceiver(t, secret)
	cb := newTestCallback(t, rcv.URL(), secret)
	ev := agentEvent(t, "conv-1", "0193a5f2-7c1e-7b7a-9d1e-5c3f2a1b0c01", "Anna", "Hi, I'm Anna")

	if err := cb.Deliver(context.Background(), outgoing(ev, handoff.ReplyTo{Channel: handoff.ChannelREST})); err != nil {
		t.Fatalf("deliver: %v", err)
	}
	got := rcv.Received()
	if len(got) != 1 || len(rcv.BadSignatures()) != 0 {
		t.Fatalf("received %d, bad signatures %v; want one verified callback", len(got), rcv.BadSignatures())
	}
	c := got[0]
	if c.ID != ev.ID {
		t.Errorf("webhook-id = %q, want the event ID %q", c.ID, ev.ID)
	}
	if ct := c.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/cloudevents+json") {
		t.Errorf("Content-Type = %q, want CloudEvents structured mode", ct)
	}
	if c.Event.ID != ev.ID || c.Event.Type != handoff.TypeMessageAgent || c.Event.Subject != "conv-1" {
		t.Errorf("event = %+v, want the agent message of conv-1", c.Event)
	}
	var data handoff.AgentMessage
	if err := json.Unmarshal(c.Event.Data, &data); err != nil || data.Text != "Hi, I'm Anna" || data.AgentName != "Anna" {
		t.Errorf("data = %s (%v), want the agent's text and name", c.Event.Data, err)
	}
}

// While rotating, two secrets sign: a receiver that knows either one
// accepts the callback.
func TestCallbackSignsWithEverySecretWhileRotating(t *testing.T) {
	oldSecret, newSecret := testenv.NewSecret(t), testenv.NewSecret(t)
	for _, known := range []string{oldSecret, newSecret} {
		rcv := testenv.StartCallbackReceiver(t, known)
		cb := newTestCallback(t, rcv.URL(), oldSecret+" "+newSecret)
		if err := cb.Deliver(context.Background(), outgoing(agentEvent(t, "c", "e1", "", "x"), handoff.ReplyTo{Channel: handoff.ChannelREST})); err != nil {
			t.Fatalf("receiver knowing one of the secrets refused: %v", err)
		}
	}
	// And one that knows neither refuses: the signature is not decoration.
	rcv := testenv.StartCallbackReceiver(t, testenv.NewSecret(t))
	cb := newTestCallback(t, rcv.URL(), oldSecret)
	err := cb.Deliver(context.Background(), outgoing(agentEvent(t, "c", "e1", "", "x"), handoff.ReplyTo{Channel: handoff.ChannelREST}))
	if e, ok := AsError(err); !ok || e.Class != Permanent || e.Reason != "callback_401" {
		t.Fatalf("wrong secret: err = %v, want a permanent callback_401", err)
	}
	if len(rcv.BadSignatures()) != 1 {
		t.Fatalf("receiver saw %v bad signatures, want 1", rcv.BadSignatures())
	}
}

// The signature is over "id.timestamp.body" with the standard base64 of the
// HMAC, so openssl (as docs/callbacks.md shows) and any library agree.
func TestSignerMatchesReferenceLibrary(t *testing.T) {
	secret := testenv.NewSecret(t)
	s, err := ParseSecrets(secret)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1_700_000_000, 0)
	body := []byte(`{"specversion":"1.0","id":"msg_1"}`)
	want, err := wh.Sign("msg_1", ts, body)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sign("msg_1", ts, body); got != want {
		t.Fatalf("Sign = %q, reference library = %q", got, want)
	}
}

func TestParseSecretsRefusesWithoutRevealing(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "must start with whsec_"},
		{"whsec_!!!notbase64!!!", "not base64"},
		{"whsec_c2hvcnQ=", "5 bytes"},
	} {
		_, err := ParseSecrets(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSecrets(%q) = %v, want an error saying %q", tc.in, err, tc.want)
			continue
		}
		if tc.in != "" && strings.Contains(err.Error(), strings.TrimPrefix(tc.in, "whsec_")) {
			t.Errorf("error %q repeats the secret", err)
		}
	}
}

// How each answer of the receiver is classified: what retries, what waits
// for Retry-After, what is a dead letter.
func TestCallbackAnswers(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		header     map[string]string
		wantErr    bool
		class      Class
		reason     string
		retryAfter time.Duration
		uncertain  bool
	}{
		{name: "200", status: 200},
		{name: "204", status: 204},
		{name: "throttled with seconds", status: 429, header: map[string]string{"Retry-After": "7"}, wantErr: true, class: Transient, reason: "callback_429", retryAfter: 7 * time.Second},
		{name: "unavailable", status: 503, header: map[string]string{"Retry-After": "2"}, wantErr: true, class: Transient, reason: "callback_503", retryAfter: 2 * time.Second, uncertain: true},
		{name: "bad gateway", status: 502, wantErr: true, class: Transient, reason: "callback_502", uncertain: true},
		{name: "hostile Retry-After is capped", status: 429, header: map[string]string{"Retry-After": "99999999"}, wantErr: true, class: Transient, reason: "callback_429", retryAfter: 10 * time.Minute},
		{name: "redirect not followed", status: 307, header: map[string]string{"Location": "http://169.254.169.254/"}, wantErr: true, class: Permanent, reason: "callback_redirect"},
		{name: "bad request", status: 400, wantErr: true, class: Permanent, reason: "callback_400"},
		{name: "gone", status: 410, wantErr: true, class: Permanent, reason: "callback_410"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			cb := newTestCallback(t, srv.URL, testenv.NewSecret(t))
			err := cb.Deliver(context.Background(), outgoing(agentEvent(t, "c", "e1", "", "x"), handoff.ReplyTo{Channel: handoff.ChannelREST}))
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("err = %v, want delivered", err)
				}
				return
			}
			e, ok := AsError(err)
			if !ok {
				t.Fatalf("err = %v, want an *Error", err)
			}
			if e.Class != tc.class || e.Reason != tc.reason || e.RetryAfter != tc.retryAfter || e.Uncertain != tc.uncertain {
				t.Fatalf("got class %d reason %q retry-after %s uncertain %v; want %d %q %s %v",
					e.Class, e.Reason, e.RetryAfter, e.Uncertain, tc.class, tc.reason, tc.retryAfter, tc.uncertain)
			}
		})
	}
}

// After a 410 the endpoint is not called again: every later event is a
// dead letter saying why, without a request.
func TestCallbackGoneStopsCalling(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusGone)
	}))
	defer srv.Close()
	cb := newTestCallback(t, srv.URL, testenv.NewSecret(t))
	for i := range 3 {
		err := cb.Deliver(context.Background(), outgoing(agentEvent(t, "c", "e"+string(rune('1'+i)), "", "x"), handoff.ReplyTo{Channel: handoff.ChannelREST}))
		if e, ok := AsError(err); !ok || e.Class != Permanent {
			t.Fatalf("delivery %d: err = %v, want permanent", i, err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("endpoint called %d times, want 1 (stop after 410)", n)
	}
}

// A POST whose answer is lost is repeated with the same webhook-id and the
// same body, freshly signed, so the receiver can drop the repeat.
func TestCallbackRetryAfterLostAnswerRepeatsTheID(t *testing.T) {
	secret := testenv.NewSecret(t)
	wh, _ := standardwebhooks.NewWebhook(secret)
	type req struct {
		id, ts string
		body   []byte
		ok     bool
	}
	var reqs []req
	var first atomic.Bool
	first.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(b)
		reqs = append(reqs, req{r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), b, wh.Verify(b, r.Header) == nil})
		if first.Swap(false) {
			// Processed, then the connection drops before the answer.
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	cb := newTestCallback(t, srv.URL, secret)
	m := outgoing(agentEvent(t, "c", "evt-lost-1", "Anna", "hello"), handoff.ReplyTo{Channel: handoff.ChannelREST})

	err := cb.Deliver(context.Background(), m)
	e, ok := AsError(err)
	if !ok || e.Class != Transient || !e.Uncertain {
		t.Fatalf("lost answer: err = %v, want a transient, uncertain failure", err)
	}
	if err := cb.Deliver(context.Background(), m); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if reqs[0].id != "evt-lost-1" || reqs[1].id != reqs[0].id {
		t.Errorf("webhook-ids %q, %q; want the event ID twice", reqs[0].id, reqs[1].id)
	}
	if string(reqs[0].body) != string(reqs[1].body) {
		t.Errorf("bodies differ between attempts")
	}
	if !reqs[0].ok || !reqs[1].ok {
		t.Errorf("signatures verified: %v, %v; want both", reqs[0].ok, reqs[1].ok)
	}
}

// A receiver that keeps failing opens the circuit: later deliveries fail as
// an outage (handed back, budget kept) without calling it.
func TestCallbackBreakerTurnsFailuresIntoOutage(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	cb := newTestCallback(t, srv.URL, testenv.NewSecret(t)) // opens after 3
	m := outgoing(agentEvent(t, "c", "e1", "", "x"), handoff.ReplyTo{Channel: handoff.ChannelREST})
	for range 3 {
		if e, ok := AsError(cb.Deliver(context.Background(), m)); !ok || e.Class != Transient {
			t.Fatalf("before the circuit opens: want transient, got %v", e)
		}
	}
	err := cb.Deliver(context.Background(), m)
	if e, ok := AsError(err); !ok || e.Class != Outage || e.Reason != "callback_circuit_open" {
		t.Fatalf("err = %v, want an outage callback_circuit_open", err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("receiver called %d times, want 3 (not while open)", n)
	}
}

// A receiver that hangs costs one timeout, reported as transient and
// uncertain (it may have processed the event).
func TestCallbackTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	cb, err := NewCallback(CallbackConfig{URL: srv.URL, Secrets: testenv.NewSecret(t), Timeout: 100 * time.Millisecond}, testMetrics(t))
	if err != nil {
		t.Fatal(err)
	}
	err = cb.Deliver(context.Background(), outgoing(agentEvent(t, "c", "e1", "", "x"), handoff.ReplyTo{Channel: handoff.ChannelREST}))
	e, ok := AsError(err)
	if !ok || e.Class != Transient || e.Reason != "callback_timeout" || !e.Uncertain {
		t.Fatalf("err = %v, want transient callback_timeout, uncertain", err)
	}
}

func TestNewCallbackRefusesBadConfig(t *testing.T) {
	secret := testenv.NewSecret(t)
	for _, tc := range []struct{ url, secret, want string }{
		{"", secret, "absolute http(s) URL"},
		{"ftp://example.com/x", secret, "absolute http(s) URL"},
		{"/relative", secret, "absolute http(s) URL"},
		{"https://user:pw@example.com/x", secret, "credentials in the URL"},
		{"https://example.com/x", "", "empty"},
	} {
		_, err := NewCallback(CallbackConfig{URL: tc.url, Secrets: tc.secret}, testMetrics(t))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewCallback(%q) = %v, want %q", tc.url, err, tc.want)
		}
	}
}

func TestWebhookIDHasNoDots(t *testing.T) {
	if got := WebhookID("0193a5f2-7c1e"); got != "0193a5f2-7c1e" {
		t.Errorf("plain ID changed: %q", got)
	}
	for _, id := range []string{"a.b", "a b", ""} {
		got := WebhookID(id)
		if strings.ContainsAny(got, ". ") || got == "" || got != WebhookID(id) {
			t.Errorf("WebhookID(%q) = %q, want a stable ID without dots or spaces", id, got)
		}
	}
	if WebhookID("a.b") == WebhookID("a.c") {
		t.Error("different IDs map to one webhook-id")
	}
}
