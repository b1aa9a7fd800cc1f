package main

import (
	"encoding/json"
	"net/http"

	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// Acceptance 1 of the delivery issue on the real thing: `handoff dev`
// (NATS, Redis, the simulator, worker with outbound, gateway) with a
// callback configured. A REST handoff, then the simulated agent writes
// twice and adds one internal note: the bot's callback endpoint gets both
// replies in order, once each, verified per Standard Webhooks, and nothing
// for the note; an SSE client that left after the first reply resumes with
// Last-Event-ID and misses nothing; the agent closes the chat and
// chat.closed reaches both.
func TestDevDeliversAgentRepliesToTheCallback(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("dev needs redis-server on PATH")
	}
	rcv := testenv.StartCallbackReceiver(t, testenv.NewSecret(t))
	d := startDev(t, "--callback-url", rcv.URL(), "--callback-secret", rcv.Secret())
	sim, gw, out := d.sim, d.gw, d.out
	deadline := time.Now().Add(30 * time.Second)
	post := func(url, body string, want int) {
		t.Helper()
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %s", url, resp.Status)
		}
	}
	post("http://"+gw+"/v1/conversations/web-7/handoff", `{"customer":{"name":"Ana"},"text":"agent please"}`, http.StatusAccepted)

	var chatID string
	for chatID == "" {
		resp, err := http.Get("http://" + sim + "/_sim/chats")
		if err == nil {
			var chats []struct{ ID string }
			_ = json.NewDecoder(resp.Body).Decode(&chats)
			resp.Body.Close()
			if len(chats) == 1 {
				chatID = chats[0].ID
			}
		}
		if chatID == "" && time.Now().After(deadline) {
			t.Fatalf("no chat in the simulator; dev output:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	simURL := "http://" + sim + "/_sim/chats/" + chatID
	// An SSE client (a web front end) follows the same conversation.
	eventsURL := "http://" + gw + "/v1/conversations/web-7/events"
	sse := testenv.OpenSSE(t, eventsURL, "", nil)
	nextAgentEvent := func(c *testenv.SSEClient) (testenv.SSEEvent, handoff.Event) {
		t.Helper()
		for {
			se := c.Next(20 * time.Second)
			ev, err := handoff.UnmarshalEvent([]byte(se.Data))
			if err != nil || se.Type != string(ev.Type) {
				t.Fatalf("SSE event %+v: %v", se, err)
			}
			if ev.Type == handoff.TypeMessageAgent || ev.Type == handoff.TypeChatClosed {
				return se, ev
			}
		}
	}

	// LiveChat (and the simulator) send webhooks from several senders at
	// once, so two messages an agent sends within the same millisecond
	// may reach the gateway in either order; a person types slower than
	// that. Each reply is written once the previous one was relayed.
	post(simURL+"/agent_message", `{"text":"Hi, I am Tom"}`, http.StatusOK)
	first, firstEv := nextAgentEvent(sse)
	if firstEv.Type != handoff.TypeMessageAgent || !strings.Contains(string(firstEv.Data), "Hi, I am Tom") {
		t.Fatalf("first SSE event %s %s, want the first reply", firstEv.Type, firstEv.Data)
	}
	sse.Close() // the tab goes away after the first reply

	post(simURL+"/agent_message", `{"text":"VIP, be nice","visibility":"agents"}`, http.StatusOK)
	post(simURL+"/agent_message", `{"text":"Your order ships today"}`, http.StatusOK)
	replies := func() []testenv.ReceivedCallback {
		var out []testenv.ReceivedCallback
		for _, c := range rcv.Received() {
			if c.Event.Type == handoff.TypeMessageAgent {
				out = append(out, c)
			}
		}
		return out
	}
	deadline = time.Now().Add(20 * time.Second)
	for len(replies()) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var texts []string
	for _, c := range replies() {
		var m handoff.AgentMessage
		if json.Unmarshal(c.Event.Data, &m) != nil {
			t.Fatalf("callback %s: %s", c.ID, c.Body)
		}
		if c.Event.Subject != "web-7" || c.ID != c.Event.ID {
			t.Errorf("callback for %q with webhook-id %q (event %q)", c.Event.Subject, c.ID, c.Event.ID)
		}
		texts = append(texts, m.Text)
	}
	if strings.Join(texts, "|") != "Hi, I am Tom|Your order ships today" {
		t.Fatalf("callbacks carried %q, want the two replies in order and not the note", texts)
	}

	post(simURL+"/close", `{}`, http.StatusOK)
	deadline = time.Now().Add(20 * time.Second)
	closedAt := -1
	for closedAt < 0 && time.Now().Before(deadline) {
		for i, c := range rcv.Received() {
			if c.Event.Type == handoff.TypeChatClosed && c.Event.Subject == "web-7" {
				closedAt = i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if closedAt < 0 {
		t.Fatalf("chat.closed never reached the callback")
	}
	time.Sleep(300 * time.Millisecond) // a repeat or the note would show up by now
	all := rcv.Received()
	if len(all) != len(rcv.Unique()) {
		t.Errorf("%d callbacks but %d webhook-ids: something was sent twice", len(all), len(rcv.Unique()))
	}
	for _, c := range all {
		if strings.Contains(string(c.Body), "VIP") {
			t.Errorf("the internal note reached the callback: %s", c.Body)
		}
	}
	if bad := rcv.BadSignatures(); len(bad) > 0 {
		t.Errorf("signatures that do not verify: %v", bad)
	}

	// The front end comes back with Last-Event-ID and misses nothing: the
	// second reply, then the close; the note is not in the feed either.
	again := testenv.OpenSSE(t, eventsURL, first.ID, nil)
	_, second := nextAgentEvent(again)
	_, closed := nextAgentEvent(again)
	if second.Type != handoff.TypeMessageAgent || !strings.Contains(string(second.Data), "Your order ships today") || closed.Type != handoff.TypeChatClosed {
		t.Fatalf("after resuming: %s %s, then %s; want the second reply, then chat.closed", second.Type, second.Data, closed.Type)
	}
	for _, c := range []handoff.Event{second, closed} {
		if strings.Contains(string(c.Data), "VIP") {
			t.Errorf("the internal note reached the feed: %s", c.Data)
		}
	}
}

// Issue 9's acceptance 1, its Dialogflow end, on the real thing: `handoff
// dev` with a callback and --es-followup-event. An ES and a CX session hand
// off; the simulated agent closes both chats (/_sim/chats/{id}/close);
// chat.closed reaches the callback (the event stream is the REST test's
// above: dev has no API key scoped to Dialogflow sessions); the next ES turn clears the live-agent context (lifespan 0), says the closed
// text and invokes the follow-up event so the bot takes the turn; the next
// CX turn sets live_agent to null with the closed text; after that the
// bot answers alone.
func TestDevDialogflowBackToTheBotAfterTheClose(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("dev needs redis-server on PATH")
	}
	rcv := testenv.StartCallbackReceiver(t, testenv.NewSecret(t))
	d := startDev(t, "--callback-url", rcv.URL(), "--callback-secret", rcv.Secret(), "--es-followup-event", "HANDOFF_ENDED")
	sim, gw := d.sim, d.gw
	w := walkthrough{t: t, gw: "http://" + gw, sim: "http://" + sim, deadline: time.Now().Add(60 * time.Second)}
	const (
		es = "projects/acme-bot/agent/sessions/es-after-close"
		cx = "projects/acme/locations/global/agents/a1/sessions/cx-after-close"
	)
	// Dialogflow's webhook calls, as ES and CX send them (dev turns
	// authentication off).
	turn := func(path, body string) map[string]any {
		t.Helper()
		resp, err := http.Post(w.gw+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %s, %v", path, resp.Status, err)
		}
		return got
	}
	esTurn := func(id, text string) map[string]any {
		return turn("/dialogflow/es", `{"session":"`+es+`","responseId":"`+id+`","queryResult":{"queryText":"`+text+
			`","languageCode":"en","intent":{"name":"projects/acme-bot/agent/intents/9","displayName":"catch-all"},"parameters":{},
			"outputContexts":[{"name":"`+es+`/contexts/live-agent","lifespanCount":49}]}}`)
	}
	cxTurn := func(id, text string) map[string]any {
		return turn("/dialogflow/cx", `{"detectIntentResponseId":"`+id+`","text":"`+text+`","languageCode":"en",
			"sessionInfo":{"session":"`+cx+`","parameters":{"live_agent":true}},"messages":[{"text":{"text":["Bot says hi"]}}]}`)
	}
	turn("/dialogflow/es", `{"session":"`+es+`","responseId":"es-1","queryResult":{"queryText":"I want to talk to an agent","languageCode":"en",
		"intent":{"name":"projects/acme-bot/agent/intents/123","displayName":"live-agent","liveAgentHandoff":true},"parameters":{}}}`)
	turn("/dialogflow/cx", `{"detectIntentResponseId":"cx-1","text":"talk to a human please","languageCode":"en",
		"fulfillmentInfo":{"tag":"live-agent-handoff"},"sessionInfo":{"session":"`+cx+`","parameters":{}},
		"messages":[{"liveAgentHandoff":{"metadata":{"reason":"billing"}}}]}`)
	// The REST surface may not read Dialogflow sessions' records, so the
	// chats are told apart by what each user said.
	esChat, cxChat := w.chatSaying("I want to talk to an agent"), w.chatSaying("talk to a human please")

	w.post(w.sim+"/_sim/chats/"+esChat+"/close", `{}`)
	w.post(w.sim+"/_sim/chats/"+cxChat+"/close", `{}`)
	closedFor := map[string]bool{}
	for len(closedFor) < 2 && time.Now().Before(w.deadline) {
		for _, c := range rcv.Received() {
			if c.Event.Type == handoff.TypeChatClosed {
				closedFor[c.Event.Subject] = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !closedFor[es] || !closedFor[cx] {
		t.Fatalf("chat.closed reached the callback for %v, want both sessions", closedFor)
	}

	const closedText = "The agent ended the chat. You are back with the bot."
	got := esTurn("es-2", "hello?")
	b, _ := json.Marshal(got)
	ctxs, _ := got["outputContexts"].([]any)
	cleared := false
	for _, c := range ctxs {
		if m, _ := c.(map[string]any); m["name"] == es+"/contexts/live-agent" && m["lifespanCount"] == float64(0) {
			cleared = true
		}
	}
	followup, _ := got["followupEventInput"].(map[string]any)
	params, _ := followup["parameters"].(map[string]any)
	if !cleared || got["fulfillmentText"] != closedText || followup["name"] != "HANDOFF_ENDED" || params["text"] != closedText {
		t.Errorf("first ES turn after the close answered %s; want the live-agent context at lifespan 0, the closed text and the HANDOFF_ENDED follow-up event", b)
	}
	got = cxTurn("cx-2", "hello?")
	b, _ = json.Marshal(got)
	session, _ := got["sessionInfo"].(map[string]any)
	cxParams, _ := session["parameters"].(map[string]any)
	if v, ok := cxParams["live_agent"]; !ok || v != nil || !strings.Contains(string(b), closedText) {
		t.Errorf("first CX turn after the close answered %s; want live_agent null and the closed text", b)
	}
	// The bot has both users again: the gateway says nothing more.
	if got := esTurn("es-3", "and now?"); len(got) != 0 {
		t.Errorf("the next ES turn got %v from the gateway, want the bot's turn ({})", got)
	}
	if got := cxTurn("cx-3", "and now?"); len(got) != 0 {
		t.Errorf("the next CX turn got %v from the gateway, want the bot's turn ({})", got)
	}
}

// chatSaying waits for the simulator's chat in which the customer said
// text and returns its ID.
func (w walkthrough) chatSaying(text string) string {
	w.t.Helper()
	return w.waitChat(text, func(chats []simChat) (string, bool) {
		for _, c := range chats {
			for _, e := range c.Events {
				if e.Text == text {
					return c.ID, true
				}
			}
		}
		return "", false
	})
}
