package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/worker"
	"github.com/prometheus/client_golang/prometheus"
)

// handoffData reads the one handoff.requested event of a conversation.
func (e *env) handoffData(conv string) handoff.HandoffRequested {
	e.t.Helper()
	var out []handoff.HandoffRequested
	for _, ev := range e.events(conv) {
		if ev.Type != handoff.TypeHandoffRequested {
			continue
		}
		p, err := ev.Payload()
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, *p.(*handoff.HandoffRequested))
	}
	if len(out) != 1 {
		e.t.Fatalf("%d handoff.requested events on %s, want 1", len(out), conv)
	}
	return out[0]
}

// The agent sees the transcript lines and then the handoff text; the
// user's words on the handoff turn were in both, so the agent read them
// twice. Seen failing before the fix: the transcript ended with
// {user "I want to talk to an agent"} and the text was the same words.
func TestHandoffTextReachesTheAgentOnce(t *testing.T) {
	for _, tc := range []struct{ name, path, body, conv string }{
		{"ES", "/dialogflow/es", esHandoff, esSession},
		{"CX", "/dialogflow/cx", cxHandoff, cxSession},
		{"Google Chat", "/google-chat", chatDM, "spaces/AAAAx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			if code, b := e.do(request{path: tc.path, body: tc.body}); code != 200 {
				t.Fatalf("%d %s", code, b)
			}
			h := e.handoffData(tc.conv)
			if h.Text == "" {
				t.Fatal("the handoff carries no text")
			}
			for _, l := range h.Transcript {
				if l.Author == handoff.AuthorUser && l.Text == h.Text {
					t.Errorf("the handoff text %q is also a transcript line: the agent reads it twice", h.Text)
				}
			}
		})
	}
}

// The transcript holds only bot lines the user saw. On the handoff turn
// the gateway answers with its own reply, and on the first turn after a
// close with the closed text: the intent's own reply of those turns never
// reached the user. Seen failing before the fix: the transcript carried
// {bot "Connecting you to an agent"} and {bot "Bot says hi"}.
func TestTranscriptHoldsOnlyBotLinesTheUserSaw(t *testing.T) {
	t.Run("handoff turn", func(t *testing.T) {
		e := newEnv(t, nil)
		if code, b := e.do(request{path: "/dialogflow/es", body: esHandoff}); code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		for _, l := range e.handoffData(esSession).Transcript {
			if l.Author == handoff.AuthorBot {
				t.Errorf("transcript line %q: the user never saw it (the gateway answered %q)", l.Text, handoffReply)
			}
		}
	})
	t.Run("first turn after the close", func(t *testing.T) {
		e := newEnv(t, nil)
		e.setMode(cxSession, handoff.ModeClosed)
		// The gateway answers the closed text instead of "Bot says hi".
		if code, b := e.do(request{path: "/dialogflow/cx", body: cxTurnBody("d-after", "hello?", "")}); code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		if code, b := e.do(request{path: "/dialogflow/cx", body: cxTurnBody("d-again", "agent", "")}); code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		var bot []string
		for _, l := range e.handoffData(cxSession).Transcript {
			if l.Author == handoff.AuthorBot {
				bot = append(bot, l.Text)
			}
		}
		closed := DefaultConfig().Texts.Closed.For("en")
		if len(bot) != 1 || bot[0] != closed {
			t.Errorf("bot lines %q, want only what the user saw: %q", bot, closed)
		}
	})
}

// Dialogflow retries a webhook call it did not get an answer to in time;
// every copy of the handoff turn must get the first one's answer. Before,
// a copy that came after the first had marked the conversation pending was
// taken for a message to the agent: seen failing with 1 of 8 concurrent
// calls answered {"fulfillmentMessages":[{"text":{"text":[""]}}]} (ES) and
// a CX answer without the liveAgentHandoff message.
func TestRetriedHandoffTurnGetsTheSameAnswer(t *testing.T) {
	for _, tc := range []struct{ name, path, body, conv string }{
		{"ES", "/dialogflow/es", esHandoff, esSession},
		{"CX", "/dialogflow/cx", cxHandoff, cxSession},
		{"Google Chat", "/google-chat", chatDM, "spaces/AAAAx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			const n = 8
			bodies := make([]string, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp := e.send(request{path: tc.path, body: tc.body})
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					bodies[i] = fmt.Sprint(resp.StatusCode, " ", string(b))
				}()
			}
			wg.Wait()
			// And one more after the others, as a late retry.
			code, b := e.do(request{path: tc.path, body: tc.body})
			late := fmt.Sprint(code, " ", string(b))
			if !strings.Contains(late, handoffReply) {
				t.Errorf("late retry: %s, want the handoff reply", late)
			}
			for i, got := range bodies {
				if got != late {
					t.Errorf("call %d: %s\nwant: %s", i, got, late)
				}
			}
			if evs := e.events(tc.conv); len(evs) != 1 || evs[0].Type != handoff.TypeHandoffRequested {
				t.Errorf("%d events stored, want the one handoff.requested", len(evs))
			}
		})
	}
}

// ES keeps what earlier turns collected in the output contexts'
// parameters; the current turn's parameters win. Seen failing before the
// fix: the handoff carried no customer at all.
func TestESCustomerFromOutputContexts(t *testing.T) {
	e := newEnv(t, nil)
	body := `{"session":"` + esSession + `","responseId":"r-ctx","queryResult":{"queryText":"agent please","languageCode":"en",
		"parameters":{"email":"ana.now@example.com"},
		"outputContexts":[
		  {"name":"` + esSession + `/contexts/other","lifespanCount":2,"parameters":{"plan":"pro"}},
		  {"name":"` + esSession + `/contexts/collected","lifespanCount":4,"parameters":{"name":"Ana Souza","name.original":"ana","email":"ana.before@example.com"}}],
		"intent":{"displayName":"live-agent","liveAgentHandoff":true}}}`
	if code, b := e.do(request{path: "/dialogflow/es", body: body}); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	got := e.handoffData(esSession).Customer
	if got.Name != "Ana Souza" || got.Email != "ana.now@example.com" {
		t.Errorf("customer %+v, want name Ana Souza from the context and the current turn's email", got)
	}
}

// CX's liveAgentHandoff metadata is the designer's, whole: the answer
// echoes all of it and LiveChat gets it as the customer's session fields,
// which the agent sees beside the chat. Seen failing before the fix: the
// answer's metadata was {"reason":"billing"} only and the customer had no
// queue field.
func TestCXHandoffMetadataReachesLiveChat(t *testing.T) {
	s := newStatusEnv(t, nil)
	s.startWorker()

	body := strings.Replace(cxHandoff, `{"reason":"billing"}`, `{"reason":"billing","queue":"billing-tier-2","priority":2}`, 1)
	code, b := s.do(request{path: "/dialogflow/cx", body: body})
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	jsonEqual(t, "CX answer", b, `{"fulfillmentResponse":{"messages":[{"text":{"text":["`+handoffReply+`"]}},
		{"liveAgentHandoff":{"metadata":{"reason":"billing","queue":"billing-tier-2","priority":2}}}],"mergeBehavior":"REPLACE"},
		"sessionInfo":{"parameters":{"live_agent":true}}}`)
	if f := s.handoffData(cxSession).Customer.Fields; f["queue"] != "billing-tier-2" || f["priority"] != "2" {
		t.Errorf("customer fields %v, want queue and priority from the metadata", f)
	}
	deadline := time.Now().Add(15 * time.Second) // the worker opens the chat asynchronously
	for {
		if chats := s.sim.Chats(); len(chats) == 1 {
			fields := map[string]string{}
			for _, f := range chats[0].Customer.SessionFields {
				for k, v := range f {
					fields[k] = v
				}
			}
			if fields["queue"] == "billing-tier-2" && fields["priority"] == "2" && fields["handoff_reason"] == "billing" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("LiveChat customer's session fields %v, want queue, priority and handoff_reason", fields)
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("%d chats in LiveChat, want 1", len(chats))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A 400 says which field is wrong in the request's own terms. Seen
// failing before the fix: a bad transcript time answered `parsing time
// "yesterday" as "2006-01-02T15:04:05Z07:00"` (Go's layout, no field), a
// fractional group `must be a JSON number, got JSON number 1.5`.
func TestBadRequestReasonsNameTheField(t *testing.T) {
	e := newEnv(t, nil)
	rest := "/v1/conversations/" + url.PathEscape("web-1") + "/handoff"
	for _, tc := range []struct {
		r    request
		want string
	}{
		{request{path: rest, body: `{"transcript":[{"author":"user","text":"hi","time":"2026-11-20T10:00:00Z"},{"author":"bot","text":"yo","time":"yesterday"}]}`},
			`"transcript[1].time" must be an RFC 3339 time`},
		{request{path: rest, body: `{"group":1.5}`}, `"group" must be a JSON integer, got JSON number 1.5`},
		{request{path: rest, body: `{"group":"7"}`}, `"group" must be a JSON integer, got JSON string`},
		{request{path: rest, body: `{"customer":{"fields":{"plan":3}}}`}, `"customer.fields" must be a JSON string`},
		{request{path: "/dialogflow/es", body: `{"session":"` + esSession + `","queryResult":{"outputContexts":[{"lifespanCount":"5"}]}}`},
			`"queryResult.outputContexts.lifespanCount" must be a JSON integer, got JSON string`},
		{request{path: "/dialogflow/cx", body: `{"sessionInfo":{"session":"` + cxSession + `"},"messages":[{"liveAgentHandoff":{"metadata":"billing"}}]}`},
			`"messages.liveAgentHandoff.metadata" must be a JSON object, got JSON string`},
		{request{path: "/google-chat", body: `{"type":"MESSAGE","space":{"name":"spaces/A"},"message":{"thread":"spaces/A/threads/t"}}`},
			`"message.thread" must be a JSON object, got JSON string`},
	} {
		code, body := e.do(tc.r)
		_, reason := errorCode(t, body)
		if code != 400 || !strings.Contains(reason, tc.want) {
			t.Errorf("%s %s:\n got %d %s\nwant 400 with %s", tc.r.path, tc.r.body, code, reason, tc.want)
		}
		for _, goWords := range []string{"2006", "parsing time", "struct", "Go ", "int", "float", "gateway.", "handoff.", "publisher."} {
			if strings.Contains(strings.ReplaceAll(reason, "integer", ""), goWords) {
				t.Errorf("%s: reason %q speaks Go (%q)", tc.r.path, reason, goWords)
			}
		}
	}
}

// LiveChat delivers an agent's first message and the webhook saying who
// joined independently, often the message first. Seen failing before the
// fix (also end to end in
// TestDialogflowUserReadsTheNamedAgentsReplyOnTheNextTurn, 6 of 6 runs):
// the message.agent went out without agent_name, so the user read
// "Agent: ..." instead of the agent's name.
func TestAgentMessageCarriesTheNameThatArrivesJustAfterIt(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LiveChatWebhookSecret = testWebhookSecret })
	conv := "projects/acme/agent/sessions/named-1"
	if _, err := e.st.UpdateConversation(context.Background(), conv, func(c *handoff.Conversation) error {
		c.Mode, c.ChatID, c.ThreadID, c.CustomerID = handoff.ModeQueued, "PS0X0L086G", "PZ070E0W1B", "cust-1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	joined := webhookBody("user_added_to_chat", testWebhookSecret, `{"chat_id":"PS0X0L086G","thread_id":"PZ070E0W1B",
		"user":{"id":"agent-1","name":"Tom Agent","email":"agent-1@example.com","type":"agent","present":true},"user_type":"agent"}`)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(200 * time.Millisecond) // the join webhook comes second
		if code, b := e.do(request{path: "/livechat/webhook", body: joined, auth: "-"}); code != 200 {
			t.Errorf("join: %d %s", code, b)
		}
	}()
	if code, b := e.do(request{path: "/livechat/webhook", body: webhookBody("incoming_event", testWebhookSecret,
		agentEvent("PZ070E0W1B_2", "message", "agent-1", "all", "Hi, I'm Tom")), auth: "-"}); code != 200 {
		t.Fatalf("message: %d %s", code, b)
	}
	wg.Wait()
	// An author no join webhook ever names: published without a name,
	// after one wait; the next message does not wait again.
	for _, id := range []string{"PZ070E0W1B_3", "PZ070E0W1B_4"} {
		if code, b := e.do(request{path: "/livechat/webhook", body: webhookBody("incoming_event", testWebhookSecret,
			agentEvent(id, "message", "supervisor-9", "all", "Supervisor here")), auth: "-"}); code != 200 {
			t.Fatalf("unnamed message: %d %s", code, b)
		}
	}
	names := map[string][]string{}
	for _, ev := range e.outEvents(conv) {
		if ev.Type == handoff.TypeMessageAgent {
			var m handoff.AgentMessage
			if err := json.Unmarshal(ev.Data, &m); err != nil {
				t.Fatal(err)
			}
			names[m.AgentID] = append(names[m.AgentID], m.AgentName)
		}
	}
	if got := names["agent-1"]; len(got) != 1 || got[0] != "Tom Agent" {
		t.Errorf("agent-1's message names %q, want [Tom Agent]", got)
	}
	if got := names["supervisor-9"]; len(got) != 2 || got[0] != "" || got[1] != "" {
		t.Errorf("supervisor's messages %q, want two, without a name", got)
	}
}

// startWorker runs the inbound worker against the simulator until the
// test ends.
func (s *statusEnv) startWorker() {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := worker.New(worker.Config{Continuous: true}, s.js, s.lc, s.st, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		s.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	s.t.Cleanup(func() { cancel(); <-done })
}

// What the agent reads when the chat opens, end to end through the worker
// and the simulator: the earlier turns, the bot's lines marked, then the
// user's handoff words once; never the intent reply the gateway replaced.
func TestAgentSeesTheHandoffOnceAndOnlyWhatTheUserSaw(t *testing.T) {
	s := newStatusEnv(t, nil)
	s.startWorker()
	if code, b := s.do(request{path: "/dialogflow/es", body: `{"session":"` + esSession + `","responseId":"t-1",
		"queryResult":{"queryText":"where is my order?","languageCode":"en","fulfillmentText":"Let me check that.","intent":{"displayName":"order"}}}`}); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	if code, b := s.do(request{path: "/dialogflow/es", body: esHandoff}); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	var texts []string
	waitFor(t, "the chat to open", func() bool {
		chats := s.sim.Chats()
		if len(chats) != 1 {
			return false
		}
		texts = texts[:0]
		for _, ev := range chats[0].Events {
			if ev.Type == "message" {
				texts = append(texts, ev.Text)
			}
		}
		return len(texts) >= 3
	})
	want := []string{"where is my order?", "[bot] Let me check that.", "I want to talk to an agent"}
	if strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Errorf("the agent read %q, want %q", texts, want)
	}
}
