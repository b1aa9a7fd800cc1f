package gateway

import (
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
)

const testWebhookSecret = "webhook-secret"

func webhookBody(action, secret, payload string) string {
	return `{"webhook_id":"w1","secret_key":"` + secret + `","action":"` + action + `","organization_id":"org","payload":` + payload + `,"additional_data":{}}`
}

func agentEvent(id, typ, author, visibility, text string) string {
	return `{"chat_id":"PS0X0L086G","thread_id":"PZ070E0W1B","event":{"id":"` + id + `","type":"` + typ + `","text":"` + text +
		`","author_id":"` + author + `","created_at":"2019-10-11T09:41:00.877000Z","visibility":"` + visibility + `"}}`
}

// richEvent is an agent's card as LiveChat's agent app sends it.
const richEvent = `{"chat_id":"PS0X0L086G","thread_id":"PZ070E0W1B","event":{"id":"PZ070E0W1B_8","type":"rich_message","template_id":"cards",` +
	`"elements":[{"title":"Your order","subtitle":"Shipped today","buttons":[{"text":"Track it","type":"url","value":"https://shop.example/t/1"},` +
	`{"text":"Thanks","type":"message","value":"thanks","postback_id":"p1"}]}],"author_id":"agent-1","created_at":"2019-10-11T09:41:00.877000Z","visibility":"all"}}`

func TestLiveChatWebhook(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LiveChatWebhookSecret = testWebhookSecret })
	conv := "projects/acme/agent/sessions/web 1"
	_, err := e.st.UpdateConversation(context.Background(), conv, func(c *handoff.Conversation) error {
		c.Mode, c.ChatID, c.CustomerID = handoff.ModeQueued, "PS0X0L086G", "cust-1"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	real, err := os.ReadFile("../livechat/testdata/webhooks/incoming_event.json")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		body     string
		code     int
		answer   string // substring of the answer
		relayed  int    // message.agent events on the reverse subject afterwards
		wantMode handoff.Mode
	}{
		{"agent message", webhookBody("incoming_event", testWebhookSecret, agentEvent("PZ070E0W1B_2", "message", "agent-1", "all", "Hi, I'm Tom")), 200, `"relayed"`, 1, handoff.ModeAgent},
		{"LiveChat retries the same delivery", webhookBody("incoming_event", testWebhookSecret, agentEvent("PZ070E0W1B_2", "message", "agent-1", "all", "Hi, I'm Tom")), 200, `"relayed"`, 1, handoff.ModeAgent},
		{"internal note", webhookBody("incoming_event", testWebhookSecret, agentEvent("PZ070E0W1B_4", "message", "agent-1", "agents", "VIP customer")), 200, "not visible", 1, handoff.ModeAgent},
		{"echo of the customer's own message", webhookBody("incoming_event", testWebhookSecret, agentEvent("PZ070E0W1B_5", "message", "cust-1", "all", "my order")), 200, "sent by the customer", 1, handoff.ModeAgent},
		{"system message", webhookBody("incoming_event", testWebhookSecret, agentEvent("PZ070E0W1B_6", "system_message", "system", "all", "Chat transferred")), 200, "is not status for the user", 1, handoff.ModeAgent},
		{"real body of an older version (recipients, license_id)", strings.Replace(string(real), "dummy_key", testWebhookSecret, 1), 200, `"relayed"`, 2, handoff.ModeAgent},
		{"rich message (a card, no text of its own)", webhookBody("incoming_event", testWebhookSecret, richEvent), 200, `"relayed"`, 3, handoff.ModeAgent},
		{"unknown chat", webhookBody("incoming_event", testWebhookSecret, strings.Replace(agentEvent("X_1", "message", "agent-1", "all", "hi"), "PS0X0L086G", "OTHERCHAT", 1)), 200, "unknown chat", 3, handoff.ModeAgent},
		{"unused action", webhookBody("event_updated", testWebhookSecret, `{"chat_id":"PS0X0L086G"}`), 200, "not used", 3, handoff.ModeAgent},
		{"wrong secret", webhookBody("incoming_event", "guess", agentEvent("PZ070E0W1B_7", "message", "agent-1", "all", "x")), 401, `"reason":"missing or invalid credentials"`, 3, handoff.ModeAgent},
		{"malformed: no secret can be read", `{"action":`, 401, "unauthorized", 3, handoff.ModeAgent},
		{"right secret, malformed payload", webhookBody("incoming_event", testWebhookSecret, `[1]`), 400, `"reason":"not a LiveChat webhook delivery"`, 3, handoff.ModeAgent},
		{"chat closed by the agent", webhookBody("chat_deactivated", testWebhookSecret, `{"chat_id":"PS0X0L086G","thread_id":"PZ070E0W1B","user_id":"agent@example.com"}`), 200, `"chat.closed"`, 3, handoff.ModeClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := e.do(request{path: "/livechat/webhook", body: c.body, auth: "-"})
			if code != c.code || !strings.Contains(string(body), c.answer) {
				t.Fatalf("answer %d %s; want %d with %q", code, body, c.code, c.answer)
			}
			n := 0
			for _, ev := range e.outEvents(conv) {
				if ev.Type == handoff.TypeMessageAgent {
					n++
				}
			}
			if n != c.relayed {
				t.Errorf("%d agent messages relayed, want %d", n, c.relayed)
			}
			if m := e.mode(conv); m != c.wantMode {
				t.Errorf("mode %s, want %s", m, c.wantMode)
			}
		})
	}
	evs := e.outEvents(conv)
	jsonEqual(t, "first relayed message", evs[0].Data, `{"text":"Hi, I'm Tom","agent_id":"agent-1","chat_id":"PS0X0L086G","livechat_event_id":"PZ070E0W1B_2"}`)
	jsonEqual(t, "relayed card", evs[2].Data, `{"text":"Your order\nShipped today\n[Track it] https://shop.example/t/1\n[Thanks]","agent_id":"agent-1","chat_id":"PS0X0L086G","livechat_event_id":"PZ070E0W1B_8"}`)
	last := evs[len(evs)-1]
	if last.Type != handoff.TypeChatClosed {
		t.Fatalf("last event %s, want chat.closed", last.Type)
	}
	jsonEqual(t, "chat.closed", last.Data, `{"chat_id":"PS0X0L086G","thread_id":"PZ070E0W1B","closed_by":"agent@example.com"}`)
	if e.streamCount() != 0 {
		t.Errorf("webhooks put %d events on the inbound stream", e.streamCount())
	}
}

func TestLiveChatWebhookNotServedWithoutSecret(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		e := newEnv(t, func(c *Config) { c.InsecureNoAuth = insecure })
		if code, _ := e.do(request{path: "/livechat/webhook", body: webhookBody("incoming_event", "", agentEvent("a", "message", "x", "all", "hi")), auth: "-"}); code != 404 {
			t.Errorf("insecure %v: without a configured secret the endpoint answered %d, want 404", insecure, code)
		}
	}
}

// TestLiveChatWebhookFromTheSimulator registers the gateway's URL with the
// simulator, which then delivers an agent's reply and the chat's close as
// LiveChat would.
func TestLiveChatWebhookFromTheSimulator(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LiveChatWebhookSecret = testWebhookSecret })
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
	for _, action := range []string{livechat.ActionIncomingEvent, livechat.ActionChatDeactivated} {
		if _, err := lc.RegisterWebhook(ctx, agent.AccessToken, livechat.Webhook{URL: e.srv.URL + "/livechat/webhook", Action: action,
			SecretKey: testWebhookSecret, OwnerClientID: "c", Type: "license", Filters: map[string]any{"author_type": "agent"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := lc.EnableLicenseWebhooks(ctx, agent.AccessToken); err != nil {
		t.Fatal(err)
	}
	cust, err := lc.IssueCustomerToken(ctx, agent.AccessToken, "")
	if err != nil {
		t.Fatal(err)
	}
	chat, err := lc.StartChat(ctx, cust.AccessToken, livechat.StartChatRequest{Continuous: true, Events: []livechat.Event{{Type: "message", Text: "agent please"}}})
	if err != nil {
		t.Fatal(err)
	}
	conv := "spaces/AAA/threads/t1"
	if _, err := e.st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
		c.Mode, c.ChatID, c.CustomerID = handoff.ModeQueued, chat.ChatID, cust.EntityID
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := sim.AgentNote(chat.ChatID, "internal: VIP"); err != nil {
		t.Fatal(err)
	}
	if err := sim.AgentMessage(chat.ChatID, "Hi, I'm Tom"); err != nil {
		t.Fatal(err)
	}
	waitOut := func(n int) []handoff.Event {
		deadline := time.Now().Add(10 * time.Second)
		for {
			evs := e.outEvents(conv)
			if len(evs) >= n || time.Now().After(deadline) {
				return evs
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	evs := waitOut(1)
	if len(evs) != 1 || evs[0].Type != handoff.TypeMessageAgent || !strings.Contains(string(evs[0].Data), "Hi, I'm Tom") {
		t.Fatalf("after the agent's reply: %d events %+v", len(evs), evs)
	}
	if err := sim.CloseChat(chat.ChatID); err != nil {
		t.Fatal(err)
	}
	evs = waitOut(2)
	if len(evs) != 2 || evs[1].Type != handoff.TypeChatClosed {
		t.Fatalf("after the close: %d events", len(evs))
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.mode(conv) != handoff.ModeClosed && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if m := e.mode(conv); m != handoff.ModeClosed {
		t.Errorf("mode after the close: %s, want closed", m)
	}
}

// With NATS down the webhook answers 503, so LiveChat delivers again, and
// the conversation keeps its mode: an agent's words that were not stored
// must not count as an answer. The redelivery after the outage is stored
// once and then moves the conversation to agent.
func TestLiveChatWebhookNATSOutage(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.LiveChatWebhookSecret = testWebhookSecret
		c.RequestTimeout = 2 * time.Second
	})
	conv := "projects/acme/agent/sessions/outage"
	if _, err := e.st.UpdateConversation(context.Background(), conv, func(c *handoff.Conversation) error {
		c.Mode, c.ChatID, c.CustomerID = handoff.ModeQueued, "PS0X0L086G", "cust-1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	body := webhookBody("incoming_event", testWebhookSecret, agentEvent("PZ070E0W1B_2", "message", "agent-1", "all", "Hi, I'm Tom"))

	e.nats.Stop()
	code, answer := e.do(request{path: "/livechat/webhook", body: body, auth: "-"})
	if code != 503 {
		t.Fatalf("with NATS down: %d %s, want 503", code, answer)
	}
	if m := e.mode(conv); m != handoff.ModeQueued {
		t.Errorf("mode %s after a failed relay, want queued", m)
	}

	e.nats.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, answer = e.do(request{path: "/livechat/webhook", body: body, auth: "-"})
		if code == 200 {
			break
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("after NATS restart: %d %s", code, answer)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// LiveChat's own retry of a delivery it already saw answered.
	if code, answer := e.do(request{path: "/livechat/webhook", body: body, auth: "-"}); code != 200 {
		t.Fatalf("repeated delivery: %d %s", code, answer)
	}
	evs := e.outEvents(conv)
	if len(evs) != 1 || evs[0].Type != handoff.TypeMessageAgent || evs[0].ID != deriveID("livechat", "PS0X0L086G", "PZ070E0W1B_2") {
		t.Fatalf("stored after recovery: %+v", evs)
	}
	if m := e.mode(conv); m != handoff.ModeAgent {
		t.Errorf("mode %s after the relay, want agent", m)
	}
}

// TestLiveChatWebhookForAChatBeingOpened: an agent can answer between
// LiveChat creating the chat and the worker recording its ID. While a
// handoff is pending such a webhook is held until the chat is known, or
// answered 503 so LiveChat delivers it again; it is never answered 200 and
// dropped. With no handoff pending, an unknown chat is not ours.
func TestLiveChatWebhookForAChatBeingOpened(t *testing.T) {
	ctx := context.Background()
	body := webhookBody("incoming_event", testWebhookSecret, strings.ReplaceAll(agentEvent("NEWTHREAD1_2", "message", "agent-1", "all", "Hi, I'm Tom"), "PS0X0L086G", "NEWCHAT001"))

	t.Run("nothing pending", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.LiveChatWebhookSecret = testWebhookSecret })
		if code, answer := e.do(request{path: "/livechat/webhook", body: body, auth: "-"}); code != 200 || !strings.Contains(string(answer), "unknown chat") {
			t.Errorf("%d %s; want 200 unknown chat", code, answer)
		}
	})
	t.Run("recorded while held", func(t *testing.T) {
		e := newEnv(t, func(c *Config) {
			c.LiveChatWebhookSecret = testWebhookSecret
			c.UnknownChatWait = time.Minute // bounded by the request timeout
		})
		conv := "spaces/AAA/threads/opening"
		e.setMode(conv, handoff.ModePending)
		go func() {
			time.Sleep(300 * time.Millisecond)
			// The worker's start_chat answer arrives and is recorded.
			_, _ = e.st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
				c.Mode, c.ChatID, c.CustomerID = handoff.ModeQueued, "NEWCHAT001", "cust-9"
				return nil
			})
		}()
		code, answer := e.do(request{path: "/livechat/webhook", body: body, auth: "-"})
		if code != 200 || !strings.Contains(string(answer), `"relayed"`) {
			t.Fatalf("%d %s; want the held webhook relayed", code, answer)
		}
		evs := e.outEvents(conv)
		if len(evs) != 1 || !strings.Contains(string(evs[0].Data), "Hi, I'm Tom") {
			t.Errorf("reverse events = %+v", evs)
		}
		if m := e.mode(conv); m != handoff.ModeAgent {
			t.Errorf("mode %s, want agent", m)
		}
	})
	t.Run("still unknown", func(t *testing.T) {
		e := newEnv(t, func(c *Config) {
			c.LiveChatWebhookSecret = testWebhookSecret
			c.UnknownChatWait = 200 * time.Millisecond
		})
		conv := "spaces/AAA/threads/slow"
		e.setMode(conv, handoff.ModePending)
		code, answer := e.do(request{path: "/livechat/webhook", body: body, auth: "-"})
		if code != 503 || !strings.Contains(string(answer), "chat_not_known_yet") {
			t.Fatalf("%d %s; want 503 chat_not_known_yet so LiveChat delivers again", code, answer)
		}
		// LiveChat's retry after the worker recorded the chat is relayed.
		if _, err := e.st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
			c.Mode, c.ChatID, c.CustomerID = handoff.ModeQueued, "NEWCHAT001", "cust-9"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if code, answer := e.do(request{path: "/livechat/webhook", body: body, auth: "-"}); code != 200 || !strings.Contains(string(answer), `"relayed"`) {
			t.Errorf("redelivery: %d %s", code, answer)
		}
		if evs := e.outEvents(conv); len(evs) != 1 {
			t.Errorf("%d reverse events, want 1", len(evs))
		}
	})
}
