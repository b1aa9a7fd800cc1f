package gateway

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/texts"
)

// statusEnv is a gateway with the LiveChat simulator sending it every
// webhook handoff setup registers.
type statusEnv struct {
	*env
	sim *livechatsim.Sim
	lc  *livechat.Client
	tok string
}

func newStatusEnv(t *testing.T, mutate func(*Config)) *statusEnv {
	e := newEnv(t, func(c *Config) {
		c.LiveChatWebhookSecret = testWebhookSecret
		if mutate != nil {
			mutate(c)
		}
	})
	sim := livechatsim.New(livechatsim.Options{})
	t.Cleanup(sim.Close)
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	ctx := context.Background()
	lc := livechat.New(livechat.Config{APIURL: ts.URL, AccountsURL: ts.URL, ClientID: "c", ClientSecret: "s", RefreshToken: "r"})
	agent, err := lc.RefreshAgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{livechat.ActionIncomingEvent, livechat.ActionChatDeactivated, livechat.ActionIncomingChat,
		livechat.ActionUserAdded, livechat.ActionChatTransferred} {
		if _, err := lc.RegisterWebhook(ctx, agent.AccessToken, livechat.Webhook{URL: e.srv.URL + "/livechat/webhook", Action: action,
			SecretKey: testWebhookSecret, OwnerClientID: "c", Type: "license", Filters: map[string]any{"only_my_chats": true}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := lc.EnableLicenseWebhooks(ctx, agent.AccessToken); err != nil {
		t.Fatal(err)
	}
	return &statusEnv{env: e, sim: sim, lc: lc, tok: agent.AccessToken}
}

// handoff opens a chat for conv as the worker does: the record is pending
// with its customer, the chat starts, the record gets the chat.
func (s *statusEnv) handoff(conv, lang string) string {
	s.t.Helper()
	ctx := context.Background()
	cust, err := s.lc.IssueCustomerToken(ctx, s.tok, "")
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
		c.Mode, c.CustomerID, c.Language = handoff.ModePending, cust.EntityID, lang
		c.ReplyTo = handoff.ReplyTo{Channel: handoff.ChannelDialogflowES, Address: conv}
		return nil
	}); err != nil {
		s.t.Fatal(err)
	}
	chat, err := s.lc.StartChat(ctx, cust.AccessToken, livechat.StartChatRequest{Continuous: true, Events: []livechat.Event{{Type: "message", Text: "agent please"}}})
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
		c.ChatID, c.ThreadID = chat.ChatID, chat.ThreadID
		return nil
	}); err != nil {
		s.t.Fatal(err)
	}
	return chat.ChatID
}

// waitFor waits for an event of type typ on the conversation's reverse
// subject (generous bound: webhooks are asynchronous).
func (s *statusEnv) waitFor(conv string, typ handoff.EventType) handoff.Event {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, ev := range s.outEvents(conv) {
			if ev.Type == typ {
				return ev
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no %s for %s; got %+v", typ, conv, s.outEvents(conv))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStatusBusyAgentsQueueThenTheAgentsNameArrives(t *testing.T) {
	s := newStatusEnv(t, nil)
	conv := "projects/acme/agent/sessions/busy-1"
	chatID := s.handoff(conv, "pt-BR")

	queued := s.waitFor(conv, handoff.TypeChatQueued)
	p, err := queued.Payload()
	if err != nil {
		t.Fatal(err)
	}
	q := p.(*handoff.ChatQueued)
	if q.Position < 1 || q.ChatID != chatID || q.Language != "pt-BR" || q.ReplyTo.Channel != handoff.ChannelDialogflowES {
		t.Errorf("chat.queued %+v: want a position, the chat, the user's language and reply_to", q)
	}
	if text, ok := texts.Defaults().Render(queued, ""); !ok || text == "" {
		t.Errorf("queued renders as %q", text)
	}

	// The agent takes the chat (an internal note first: it joins without
	// a word for the user), then writes.
	if err := s.sim.AgentNote(chatID, "looking at the order"); err != nil {
		t.Fatal(err)
	}
	joined := s.waitFor(conv, handoff.TypeAgentJoined)
	jp, _ := joined.Payload()
	if a := jp.(*handoff.AgentJoined); a.AgentName != "Agent Smith" || a.AgentID != livechatsim.AgentID {
		t.Errorf("agent.joined %+v, want Agent Smith", a)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.mode(conv) != handoff.ModeAgent && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if m := s.mode(conv); m != handoff.ModeAgent {
		t.Errorf("mode %s after the agent joined, want agent", m)
	}
	if err := s.sim.AgentMessage(chatID, "Hi, I'm here"); err != nil {
		t.Fatal(err)
	}
	msg := s.waitFor(conv, handoff.TypeMessageAgent)
	mp, _ := msg.Payload()
	if m := mp.(*handoff.AgentMessage); m.AgentName != "Agent Smith" || m.Text != "Hi, I'm here" {
		t.Errorf("message.agent %+v: want the agent's name", m)
	}
	for _, ev := range s.outEvents(conv) {
		if ev.Type == handoff.TypeMessageAgent && ev.ID != msg.ID {
			t.Errorf("more than the one message relayed (the internal note?): %s", ev.Data)
		}
	}
}

func TestStatusAgentsOfflineBackToTheBotWithTheConfiguredAnswer(t *testing.T) {
	s := newStatusEnv(t, func(c *Config) {
		c.WhenNoAgents = WhenNoAgentsBot
		c.Texts.NoAgentsBot = texts.ByLanguage{"": "Nobody is here now; the bot helps you.", "pt": "Ninguém agora; o bot ajuda."}
	})
	if err := s.sim.SetFaults(livechatsim.Faults{AgentsOffline: true}); err != nil {
		t.Fatal(err)
	}
	conv := esSession // the ES turn at the end is this session's
	chatID := s.handoff(conv, "pt-BR")

	ev := s.waitFor(conv, handoff.TypeAgentsUnavailable)
	p, _ := ev.Payload()
	if u := p.(*handoff.AgentsUnavailable); !u.Back || u.ChatID != chatID || u.Reason != "routing.archived_offline" {
		t.Errorf("agents.unavailable %+v", u)
	}
	if text, ok := s.gw.cfg.Texts.Render(ev, ""); !ok || text != "Ninguém agora; o bot ajuda." {
		t.Errorf("the user is told %q, want the configured answer in their language", text)
	}
	if m := s.mode(conv); m != handoff.ModeBot {
		t.Errorf("mode %s, want bot", m)
	}
	// The worker is asked to end the chat for the agents' side.
	in := s.stored(stream.InStream, stream.InSubject(conv))
	if len(in) != 1 || in[0].Type != handoff.TypeHandoffCancelled {
		t.Errorf("inbound events %+v, want one handoff.cancelled", in)
	}
	// LiveChat archives the thread; the user already heard, so no second
	// "chat ended" follows.
	time.Sleep(300 * time.Millisecond)
	for _, ev := range s.outEvents(conv) {
		if ev.Type == handoff.TypeChatClosed {
			t.Errorf("chat.closed relayed after the user went back to the bot: %s", ev.Data)
		}
	}
	// The next ES turn is the bot's.
	code, body := s.do(request{path: "/dialogflow/es", body: esTurnBody("resp-after-offline", "hello again", "pt-BR")})
	if code != 200 {
		t.Fatalf("ES turn: %d %s", code, body)
	}
	if in := s.stored(stream.InStream, stream.InSubject(conv)); len(in) != 1 {
		t.Errorf("the turn after going back to the bot was forwarded: %+v", in)
	}
	if strings.TrimSpace(string(body)) != "{}" {
		t.Errorf("the bot's turn got an answer from the gateway: %s", body)
	}
}

// After the agent closed the chat, Dialogflow still holds the agent
// context (ES) and parameter (CX). The first turn after the close must
// clear them, say the closed text and, with --es-followup-event, hand the
// turn to the bot; before, it answered {} and the user stayed stuck.
func TestFirstDialogflowTurnAfterTheCloseGoesBackToTheBot(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.LiveChatWebhookSecret = testWebhookSecret
		c.ESFollowupEvent = "HANDOFF_ENDED"
		c.Texts.Closed = texts.ByLanguage{"": "The agent left; the bot is back."}
	})
	ctx := context.Background()
	for _, conv := range []string{esSession, cxSession} {
		if _, err := e.st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
			c.Mode, c.ChatID, c.CustomerID = handoff.ModeAgent, "CHAT-"+conv[len(conv)-4:], "cust"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		body := webhookBody("chat_deactivated", testWebhookSecret, `{"chat_id":"CHAT-`+conv[len(conv)-4:]+`","thread_id":"T1","user_id":"agent@example.com"}`)
		if code, b := e.do(request{path: "/livechat/webhook", body: body, auth: "-"}); code != 200 {
			t.Fatalf("close: %d %s", code, b)
		}
	}
	ctxName := esSession + "/contexts/live-agent"
	code, body := e.do(request{path: "/dialogflow/es", body: esTurnBody("after-close-1", "hello?", "en")})
	if code != 200 {
		t.Fatalf("ES: %d %s", code, body)
	}
	jsonEqual(t, "first ES turn after the close", body, `{"fulfillmentText":"The agent left; the bot is back.",
		"fulfillmentMessages":[{"text":{"text":["The agent left; the bot is back."]}}],
		"outputContexts":[{"name":"`+ctxName+`","lifespanCount":0}],
		"followupEventInput":{"name":"HANDOFF_ENDED","languageCode":"en","parameters":{"text":"The agent left; the bot is back."}}}`)
	if m := e.mode(esSession); m != handoff.ModeBot {
		t.Errorf("ES mode %s, want bot", m)
	}
	if code, body := e.do(request{path: "/dialogflow/es", body: esTurnBody("after-close-2", "and now?", "en")}); code != 200 || strings.TrimSpace(string(body)) != "{}" {
		t.Errorf("the next ES turn: %d %s, want the bot's ({})", code, body)
	}
	code, body = e.do(request{path: "/dialogflow/cx", body: cxTurnBody("after-close-cx", "hello?", "")})
	if code != 200 {
		t.Fatalf("CX: %d %s", code, body)
	}
	jsonEqual(t, "first CX turn after the close", body, `{"fulfillmentResponse":{"messages":[{"text":{"text":["The agent left; the bot is back."]}}],"mergeBehavior":"REPLACE"},
		"sessionInfo":{"parameters":{"live_agent":null}}}`)
	if n := e.streamCount(); n != 0 {
		t.Errorf("%d turns after the close were forwarded to the agent", n)
	}
}

// A 400 names the field in the request's JSON terms; it quoted Go types
// before ("want struct { QueryText string ...").
func TestBadRequestReasonsSpeakJSONNotGo(t *testing.T) {
	e := newEnv(t, nil)
	for _, r := range []request{
		{path: "/dialogflow/es", body: `{"session":"projects/p/agent/sessions/s","queryResult":"hello"}`},
		{path: "/dialogflow/cx", body: `{"sessionInfo":{"session":"projects/p/locations/l/agents/a/sessions/s"},"text":["x"]}`},
		{path: "/dialogflow/es", body: `[1,2]`},
	} {
		code, body := e.do(r)
		if code != 400 || strings.Contains(string(body), "struct") || strings.Contains(string(body), "gateway.") ||
			strings.Contains(string(body), "publisher.") || !strings.Contains(string(body), "must be a JSON") {
			t.Errorf("%s %s: %d %s", r.path, r.body, code, body)
		}
	}
}

// LiveChat's incoming_chat describes the chat as it was created, queued,
// and may arrive late: held until the worker recorded the chat, or
// retried. Once an agent has the chat, telling the user "you are in the
// queue" would contradict the agent's words already shown. Seen failing
// before the fix: chat.queued published for a conversation in mode agent
// (end to end: the Dialogflow answer listed the queue line after the
// agent's reply).
func TestLateIncomingChatDoesNotQueueAConversationAnAgentHas(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LiveChatWebhookSecret = testWebhookSecret })
	conv := "projects/acme/agent/sessions/late-1"
	if _, err := e.st.UpdateConversation(context.Background(), conv, func(c *handoff.Conversation) error {
		c.Mode, c.ChatID, c.ThreadID, c.CustomerID = handoff.ModeAgent, "PJ0MRSHTDG", "K600PKZON8", "cust-1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	body := webhookBody("incoming_chat", testWebhookSecret, `{"chat":{"id":"PJ0MRSHTDG","users":[],
		"thread":{"id":"K600PKZON8","active":true,"queue":{"position":1,"wait_time":30,"queued_at":"2026-11-30T10:00:00Z"}}}}`)
	if code, b := e.do(request{path: "/livechat/webhook", body: body, auth: "-"}); code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	for _, ev := range e.outEvents(conv) {
		if ev.Type == handoff.TypeChatQueued {
			t.Errorf("chat.queued published while an agent has the chat: %s", ev.Data)
		}
	}
	if m := e.mode(conv); m != handoff.ModeAgent {
		t.Errorf("mode %s, want agent", m)
	}
}
