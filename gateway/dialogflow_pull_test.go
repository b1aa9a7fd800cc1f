package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/outbound"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"github.com/prometheus/client_golang/prometheus"
)

// esLines is the text of every fulfillment message of an ES answer.
func esLines(t *testing.T, body []byte) []string {
	t.Helper()
	var r esResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("ES answer: %v: %s", err, body)
	}
	var out []string
	for _, m := range r.FulfillmentMessages {
		if m.Text != nil {
			for _, s := range m.Text.Text {
				if s != "" {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

func cxLines(t *testing.T, body []byte) []string {
	t.Helper()
	var r cxResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("CX answer: %v: %s", err, body)
	}
	var out []string
	if r.FulfillmentResponse != nil {
		for _, m := range r.FulfillmentResponse.Messages {
			if m.Text != nil {
				out = append(out, m.Text.Text...)
			}
		}
	}
	return out
}

func sameLines(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("%s: lines %q, want %q", what, got, want)
	}
}

// Without a callback, a Dialogflow user's next turn is where the agent's
// replies show: the answer carries every message waiting on the feed,
// each once, with the agent's name, and a retried call carries the same.
func TestDialogflowPullCarriesWaitingAgentMessagesOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.setMode(esSession, handoff.ModeAgent)
	e.appendFeed(esSession, "Hi, I'm Anna")
	e.appendFeed(esSession, "What is your order number?")

	code, b := e.do(request{path: "/dialogflow/es", body: esTurnBody("p-1", "hello", "en")})
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	sameLines(t, "first turn", esLines(t, b), "Anna: Hi, I'm Anna", "Anna: What is your order number?")
	if !strings.Contains(string(b), `"lifespanCount":50`) {
		t.Errorf("the answer lost the agent context: %s", b)
	}
	// Dialogflow retries the same turn: the same answer.
	_, again := e.do(request{path: "/dialogflow/es", body: esTurnBody("p-1", "hello", "en")})
	sameLines(t, "retried first turn", esLines(t, again), "Anna: Hi, I'm Anna", "Anna: What is your order number?")
	// The next turn has nothing new.
	_, b = e.do(request{path: "/dialogflow/es", body: esTurnBody("p-2", "1234", "en")})
	sameLines(t, "second turn", esLines(t, b))
	e.appendFeed(esSession, "Thanks, looking")
	_, b = e.do(request{path: "/dialogflow/es", body: esTurnBody("p-3", "ok", "en")})
	sameLines(t, "third turn", esLines(t, b), "Anna: Thanks, looking")

	// CX: before the gateway's own text (here the ack reply).
	e2 := newEnv(t, func(c *Config) { c.AckReply = map[string]string{"": "Sent to the agent."} })
	e2.setMode(cxSession, handoff.ModeAgent)
	e2.appendFeed(cxSession, "Hello from the agent")
	_, b = e2.do(request{path: "/dialogflow/cx", body: cxTurnBody("pc-1", "hi", "live-agent-message")})
	sameLines(t, "CX turn", cxLines(t, b), "Anna: Hello from the agent", "Sent to the agent.")
	_, b = e2.do(request{path: "/dialogflow/cx", body: cxTurnBody("pc-2", "hi again", "live-agent-message")})
	sameLines(t, "next CX turn", cxLines(t, b), "Sent to the agent.")
}

// Concurrent turns of one session never carry a message twice.
func TestDialogflowPullConcurrentTurnsCarryEachMessageOnce(t *testing.T) {
	e := newEnv(t, nil)
	e.setMode(esSession, handoff.ModeAgent)
	for _, s := range []string{"one", "two", "three"} {
		e.appendFeed(esSession, s)
	}
	var mu sync.Mutex
	var all []string
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := e.send(request{path: "/dialogflow/es", body: esTurnBody("pp-"+string(rune('a'+i)), "x", "en")})
			defer resp.Body.Close()
			var r esResponse
			_ = json.NewDecoder(resp.Body).Decode(&r)
			mu.Lock()
			defer mu.Unlock()
			for _, m := range r.FulfillmentMessages {
				if m.Text != nil {
					for _, s := range m.Text.Text {
						if s != "" {
							all = append(all, s)
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	if len(all) != 3 {
		t.Errorf("8 concurrent turns carried %q, want each of the 3 messages once", all)
	}
}

// A message an event stream or the pull endpoint already showed is not
// carried again; with a callback configured, auto leaves the pull off
// (the callback's receiver shows the replies), and on turns it on.
func TestDialogflowPullSkipsWhatPushSurfacesShowed(t *testing.T) {
	// A front end's key, bound to Dialogflow sessions.
	dfKey := func(c *Config) { c.APIKeys = append(c.APIKeys, "df-key;channels=dialogflow-es|dialogflow-cx") }
	t.Run("seen on the pull endpoint", func(t *testing.T) {
		e := newEnv(t, dfKey)
		e.setMode(esSession, handoff.ModeAgent)
		e.appendFeed(esSession, "seen by the page")
		code, b := e.do(request{method: "GET", path: "/v1/conversations/" + url.PathEscape(esSession) + "/events", headers: map[string]string{"Accept": "application/json"},
			auth: "Bearer df-key"})
		if code != 200 || !strings.Contains(string(b), "seen by the page") {
			t.Fatalf("pull: %d %s", code, b)
		}
		e.appendFeed(esSession, "not seen yet")
		_, b = e.do(request{path: "/dialogflow/es", body: esTurnBody("s-1", "hi", "en")})
		sameLines(t, "turn", esLines(t, b), "Anna: not seen yet")
	})
	t.Run("seen on the event stream", func(t *testing.T) {
		e := newEnv(t, dfKey)
		e.setMode(cxSession, handoff.ModeAgent)
		e.appendFeed(cxSession, "streamed")
		c := e.openSSE(eventsPath(cxSession), map[string]string{"Authorization": "Bearer df-key"})
		if ev := c.next(t); !strings.Contains(ev.data, "streamed") {
			t.Fatalf("stream: %+v", ev)
		}
		c.resp.Body.Close()
		_, b := e.do(request{path: "/dialogflow/cx", body: cxTurnBody("s-2", "hi", "live-agent-message")})
		sameLines(t, "turn", cxLines(t, b))
	})
	for _, tc := range []struct {
		mode string
		want []string
	}{{DialogflowPullAuto, nil}, {DialogflowPullOn, []string{"Anna: hello"}}, {DialogflowPullOff, nil}} {
		t.Run("callback configured, pull "+tc.mode, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.CallbackConfigured, c.DialogflowPull = true, tc.mode })
			e.setMode(esSession, handoff.ModeAgent)
			e.appendFeed(esSession, "hello")
			_, b := e.do(request{path: "/dialogflow/es", body: esTurnBody("c-1", "hi", "en")})
			sameLines(t, "turn", esLines(t, b), tc.want...)
		})
	}
}

// End to end on real NATS, Redis, the gateway, the worker, the outbound
// delivery and the LiveChat simulator, without a callback: the agent's
// reply carries the agent's name (AgentName, from LiveChat's webhooks),
// and the Dialogflow user reads it, named, in the answer to their next
// turn. Without AgentName filled in, the line would read "Agent: ...".
func TestDialogflowUserReadsTheNamedAgentsReplyOnTheNextTurn(t *testing.T) {
	s := newStatusEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	quiet := slog.New(slog.DiscardHandler)
	w, err := worker.New(worker.Config{Continuous: true}, s.js, s.lc, s.st, prometheus.NewRegistry(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := outbound.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	ocfg := outbound.DefaultConfig()
	ocfg.Consumer.BackoffBase, ocfg.Consumer.BackoffMax = 5*time.Millisecond, 200*time.Millisecond
	ocfg.Consumer.OrderDelay, ocfg.Consumer.OutageDelay = 20*time.Millisecond, 200*time.Millisecond
	ob, err := outbound.New(ocfg, s.js, s.st, outbound.Routes{}, m, reg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- w.Run(ctx) }()
	go func() { done <- ob.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; <-done })

	if code, b := s.do(request{path: "/dialogflow/es", body: esHandoff}); code != 200 {
		t.Fatalf("handoff: %d %s", code, b)
	}
	var chatID string
	waitFor(t, "the worker to open the chat and record it", func() bool {
		rec, err := s.st.Conversation(context.Background(), esSession)
		chatID = rec.ChatID
		return err == nil && chatID != ""
	})
	if err := s.sim.AgentMessage(chatID, "Hi, I'm here to help"); err != nil {
		t.Fatal(err)
	}
	var name string
	waitFor(t, "the agent's message on the feed", func() bool {
		for _, ev := range s.stored(stream.FeedStream, stream.FeedSubject(esSession)) {
			if ev.Type == handoff.TypeMessageAgent {
				var m handoff.AgentMessage
				_ = json.Unmarshal(ev.Data, &m)
				name = m.AgentName
				return true
			}
		}
		return false
	})
	if name == "" {
		for _, ev := range s.stored(stream.FeedStream, stream.FeedSubject(esSession)) {
			t.Logf("out: %s %s", ev.Type, ev.Data)
		}
		t.Fatal("message.agent without agent_name")
	}
	code, b := s.do(request{path: "/dialogflow/es", body: esTurnBody("after-reply", "thanks", "en")})
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	// Status lines (queued, joined) come along, in the order LiveChat's
	// independent webhooks arrived; the reply is there once, named.
	lines := esLines(t, b)
	n := 0
	for _, l := range lines {
		if strings.HasSuffix(l, "Hi, I'm here to help") {
			n++
			if l != name+": Hi, I'm here to help" {
				t.Errorf("reply line %q, want it named %q", l, name)
			}
		}
	}
	if n != 1 {
		t.Errorf("next turn: lines %q, want the agent's reply once", lines)
	}
}
