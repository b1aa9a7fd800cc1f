package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/handoff-dev/handoff"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// status sends r and returns the status and Retry-After.
func (e *env) status(r request) (int, string) {
	e.t.Helper()
	resp := e.send(r)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// hammer sends n requests from 16 clients at once and counts the answers
// by status; every 429 and 503 must say when to retry.
func (e *env) hammer(t *testing.T, n int, req func(i int) request) map[int]int {
	t.Helper()
	var mu sync.Mutex
	codes := map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				code, retry := e.status(req(i))
				if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
					if s, err := strconv.Atoi(retry); err != nil || s < 1 {
						t.Errorf("%d with Retry-After %q", code, retry)
					}
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return codes
}

// Issue 11 item 3: 50 calls with 50 session IDs opened 50 chats, with no
// bound. A burst of 1,000 handoffs from one credential meets 429s with
// Retry-After under the default limits, and another credential still gets
// through.
func TestHandoffBurstFromOneCredential(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.APIKeys = []string{testAPIKey, "api-key-2"} })
	if d := DefaultLimits(); e.gw.cfg.Limits != d {
		t.Fatalf("limits %+v, want the defaults %+v", e.gw.cfg.Limits, d)
	}
	codes := e.hammer(t, 1000, func(i int) request {
		return request{path: fmt.Sprintf("/v1/conversations/burst-%d/handoff", i), body: `{}`}
	})
	t.Logf("1,000 handoffs from one key: %v", codes)
	accepted, limited := codes[http.StatusAccepted], codes[http.StatusTooManyRequests]
	if accepted+limited != 1000 || limited == 0 || accepted < DefaultLimits().HandoffBurst {
		t.Errorf("answers %v: want the burst of %d accepted, the rest mostly 429", codes, DefaultLimits().HandoffBurst)
	}
	if got := testutil.ToFloat64(e.gw.lim.refused.WithLabelValues(limitHandoffSource)); int(got) != limited {
		t.Errorf("handoff_gateway_limited_total{limit=handoff_source} = %v, want %d", got, limited)
	}
	if n := e.streamCount(); int(n) != accepted {
		t.Errorf("%d events stored, want one per accepted handoff (%d)", n, accepted)
	}
	// The other credential is not starved by the first one's flood.
	if code, _ := e.status(request{path: "/v1/conversations/other-key/handoff", body: `{}`, auth: "Bearer api-key-2"}); code != http.StatusAccepted {
		t.Errorf("another key's handoff: %d, want 202", code)
	}
}

// Beyond the cap on conversations waiting for an agent, a handoff gets the
// no-agents answer: 503 on REST, the configured text on Dialogflow.
func TestPendingCap(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Limits.MaxPending = 3 })
	for i := 0; i < 3; i++ {
		if code, _ := e.status(request{path: fmt.Sprintf("/v1/conversations/wait-%d/handoff", i), body: `{}`}); code != http.StatusAccepted {
			t.Fatalf("handoff %d under the cap: %d", i, code)
		}
	}
	code, retry := e.status(request{path: "/v1/conversations/wait-3/handoff", body: `{}`})
	if code != http.StatusServiceUnavailable || retry == "" {
		t.Errorf("handoff over the cap: %d Retry-After %q, want 503 with Retry-After", code, retry)
	}
	_, body := e.do(request{path: "/dialogflow/es", body: esHandoff})
	if want := e.gw.cfg.Texts.NoAgentsBot.For("en"); !strings.Contains(string(body), want) {
		t.Errorf("Dialogflow handoff over the cap answered %s, want the no-agents text %q", body, want)
	}
	if m := e.mode(esSession); m.WithAgent() {
		t.Errorf("refused conversation is %s", m)
	}
	if got := testutil.ToFloat64(e.gw.lim.refused.WithLabelValues(limitPending)); got != 2 {
		t.Errorf("handoff_gateway_limited_total{limit=pending} = %v, want 2", got)
	}
}

// Issue 13 acceptance 3: 200 messages in one second to one conversation
// meet 429s (REST) and the configured text (Dialogflow), while another
// conversation in the same second is unaffected.
func TestMessageRatePerConversation(t *testing.T) {
	e := newEnv(t, nil)
	for _, id := range []string{"flood", "calm", esSession, "projects/acme-bot/agent/sessions/calm"} {
		e.setMode(id, handoff.ModeAgent)
	}
	codes := e.hammer(t, 200, func(i int) request {
		return request{path: "/v1/conversations/flood/messages", body: fmt.Sprintf(`{"text":"m%d"}`, i)}
	})
	t.Logf("200 REST messages to one conversation: %v", codes)
	accepted := codes[http.StatusAccepted]
	if codes[http.StatusTooManyRequests] == 0 || accepted < DefaultLimits().MessageBurst || accepted+codes[http.StatusTooManyRequests] != 200 {
		t.Errorf("answers %v: want the burst of %d accepted, then 429s", codes, DefaultLimits().MessageBurst)
	}
	if n := len(e.events("flood")); n != accepted {
		t.Errorf("%d messages stored, want the %d accepted", n, accepted)
	}
	if code, _ := e.status(request{path: "/v1/conversations/calm/messages", body: `{"text":"hello"}`}); code != http.StatusAccepted {
		t.Errorf("another conversation in the same second: %d, want 202", code)
	}

	slowDown := e.gw.cfg.SlowDownReply[""]
	var slowed atomic.Int64
	e.hammer(t, 200, func(i int) request {
		return request{path: "/dialogflow/es", body: esTurnBody(fmt.Sprintf("flood-%d", i), "hello?", "en")}
	})
	for i := 0; i < 5; i++ { // the bucket is empty now: these are over the rate
		_, body := e.do(request{path: "/dialogflow/es", body: esTurnBody(fmt.Sprintf("more-%d", i), "hello?", "en")})
		if strings.Contains(string(body), slowDown) {
			slowed.Add(1)
		}
	}
	if slowed.Load() == 0 {
		t.Errorf("Dialogflow turns over the rate never got the slow-down text %q", slowDown)
	}
	calm := strings.Replace(esTurnBody("calm-1", "hello", "en"), esSession, "projects/acme-bot/agent/sessions/calm", 1)
	if code, body := e.do(request{path: "/dialogflow/es", body: calm}); code != 200 || strings.Contains(string(body), slowDown) {
		t.Errorf("another Dialogflow session in the same second: %d %s", code, body)
	}
	if got := testutil.ToFloat64(e.gw.lim.refused.WithLabelValues(limitMessage)); got < float64(codes[http.StatusTooManyRequests]+1) {
		t.Errorf("handoff_gateway_limited_total{limit=message} = %v, want the REST 429s and the Dialogflow refusals", got)
	}
}
