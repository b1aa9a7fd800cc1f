package testenv

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// CallbackReceiver is a bot's callback endpoint for tests. It verifies
// every request with the Standard Webhooks reference library (not with
// handoff's own signer, so a mistake in both cannot cancel out), records
// what it accepted in arrival order, and counts every webhook-id it saw,
// accepted or not, so a test can tell a repeat from a single delivery.
type CallbackReceiver struct {
	t      testing.TB
	srv    *httptest.Server
	secret string
	wh     *standardwebhooks.Webhook

	mu       sync.Mutex
	status   int // answer while down; 0 = up
	got      []ReceivedCallback
	seen     map[string]int
	bad      []string
	arrivals chan struct{}
}

// ReceivedCallback is one accepted, verified callback.
type ReceivedCallback struct {
	ID        string
	Timestamp string
	Header    http.Header
	Body      []byte
	Event     handoff.Event
}

// NewSecret returns a fresh Standard Webhooks secret (whsec_ + base64 of
// 32 random bytes).
func NewSecret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// StartCallbackReceiver starts a receiver that accepts callbacks signed
// with secret, until the test ends.
func StartCallbackReceiver(t testing.TB, secret string) *CallbackReceiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("testenv: callback secret: %v", err)
	}
	r := &CallbackReceiver{t: t, secret: secret, wh: wh, seen: map[string]int{}, arrivals: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// URL is the endpoint to configure as --callback-url.
func (r *CallbackReceiver) URL() string { return r.srv.URL + "/hooks/handoff" }

// Secret is the secret it verifies with.
func (r *CallbackReceiver) Secret() string { return r.secret }

// Down makes the receiver answer status (e.g. 503) to everything, without
// recording it; Up makes it accept again.
func (r *CallbackReceiver) Down(status int) {
	r.mu.Lock()
	r.status = status
	r.mu.Unlock()
}

// Up makes the receiver accept callbacks again.
func (r *CallbackReceiver) Up() { r.Down(0) }

func (r *CallbackReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	r.seen[id]++
	status := r.status
	r.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	if err := r.wh.Verify(body, req.Header); err != nil {
		r.mu.Lock()
		r.bad = append(r.bad, id+": "+err.Error())
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	ev, err := handoff.UnmarshalEvent(body)
	if err != nil {
		r.mu.Lock()
		r.bad = append(r.bad, id+": "+err.Error())
		r.mu.Unlock()
		http.Error(w, "not a CloudEvent", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.got = append(r.got, ReceivedCallback{ID: id, Timestamp: req.Header.Get("webhook-timestamp"), Header: req.Header.Clone(), Body: body, Event: ev})
	r.mu.Unlock()
	select {
	case r.arrivals <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

// Received returns the accepted callbacks in arrival order.
func (r *CallbackReceiver) Received() []ReceivedCallback {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ReceivedCallback(nil), r.got...)
}

// Unique returns the accepted callbacks with repeats of a webhook-id
// dropped, as a receiver following Standard Webhooks would process them.
func (r *CallbackReceiver) Unique() []ReceivedCallback {
	var out []ReceivedCallback
	seen := map[string]bool{}
	for _, c := range r.Received() {
		if !seen[c.ID] {
			seen[c.ID] = true
			out = append(out, c)
		}
	}
	return out
}

// Requests returns how many requests carried webhook-id id (accepted,
// refused while down, or badly signed).
func (r *CallbackReceiver) Requests(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[id]
}

// BadSignatures lists requests that failed verification (should be none).
func (r *CallbackReceiver) BadSignatures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

// WaitFor waits until at least n callbacks were accepted, failing the test
// after timeout.
func (r *CallbackReceiver) WaitFor(n int, timeout time.Duration) []ReceivedCallback {
	r.t.Helper()
	deadline := time.After(timeout)
	for {
		if got := r.Received(); len(got) >= n {
			return got
		}
		select {
		case <-r.arrivals:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			got := r.Received()
			r.t.Fatalf("testenv: callback receiver got %d callbacks within %s, want %d (bad signatures: %v)", len(got), timeout, n, r.BadSignatures())
			return got
		}
	}
}
