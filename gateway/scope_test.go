package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff"
)

// Issue 11 item 2, the probe of the review: a Dialogflow session
// "spaces/AAAAx" and a REST call to /v1/conversations/spaces%2FAAAAx both
// reached a Google Chat user's LiveChat chat, and a REST GET returned its
// chat_id and reply_to.
func TestCrossChannelProbe(t *testing.T) {
	for _, insecure := range []bool{false, true} {
		name := "with credentials"
		if insecure {
			name = "insecure mode"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.InsecureNoAuth = insecure })
			const space = "spaces/AAAAx" // chatDM's space
			// The Chat user asks for an agent, and LiveChat gives them one.
			if code, b := e.do(request{path: "/google-chat", body: chatDM}); code != 200 {
				t.Fatalf("chat handoff: %d %s", code, b)
			}
			_, err := e.st.UpdateConversation(context.Background(), space, func(c *handoff.Conversation) error {
				c.Mode, c.ChatID = handoff.ModeAgent, "CHAT-OF-THE-CHAT-USER"
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			before := len(e.events(space))

			probes := []struct {
				what string
				req  request
				want int
			}{
				{"Dialogflow ES naming the space", request{path: "/dialogflow/es", body: strings.Replace(esTurnBody("probe-1", "injected", "en"), esSession, space, 1)}, 400},
				{"Dialogflow CX naming the space", request{path: "/dialogflow/cx", body: strings.Replace(cxTurnBody("probe-2", "injected", ""), cxSession, space, 1)}, 400},
				{"Dialogflow CX naming an ES session", request{path: "/dialogflow/cx", body: strings.Replace(cxTurnBody("probe-3", "injected", ""), cxSession, esSession, 1)}, 400},
				{"REST message to the space", request{path: "/v1/conversations/spaces%2FAAAAx/messages", body: `{"text":"injected"}`}, 403},
				{"REST cancel of the space", request{path: "/v1/conversations/spaces%2FAAAAx/cancel", body: `{}`}, 403},
				{"REST read of the space", request{method: "GET", path: "/v1/conversations/spaces%2FAAAAx"}, 403},
				{"REST read of the space's events", request{method: "GET", path: "/v1/conversations/spaces%2FAAAAx/events", headers: map[string]string{"Accept": "application/json"}}, 403},
				{"REST handoff replying into the space", request{path: "/v1/conversations/mine/handoff", body: `{"reply_to":{"channel":"google-chat","address":"spaces/AAAAx"}}`}, 400},
			}
			for _, p := range probes {
				code, body := e.do(p.req)
				if code != p.want {
					t.Errorf("%s: %d %s, want %d", p.what, code, body, p.want)
				}
				if strings.Contains(string(body), "CHAT-OF-THE-CHAT-USER") || strings.Contains(string(body), `"chat_id"`) {
					t.Errorf("%s: the answer shows the Chat conversation: %s", p.what, body)
				}
			}
			if n := len(e.events(space)); n != before {
				t.Errorf("the probes put %d events on the Chat user's conversation", n-before)
			}
			if m := e.mode(space); m != handoff.ModeAgent {
				t.Errorf("the Chat user's conversation is %s now", m)
			}
			// The REST conversation's agent answers go back over REST.
			evs := e.events("mine")
			if len(evs) != 0 {
				t.Errorf("the refused handoff stored %d events", len(evs))
			}
			if code, b := e.do(request{path: "/v1/conversations/mine/handoff", body: `{"reply_to":{"channel":"rest"}}`}); code != http.StatusAccepted {
				t.Fatalf("REST handoff naming its own channel: %d %s", code, b)
			}
			if rt := e.conversation("mine").ReplyTo; rt != (handoff.ReplyTo{Channel: handoff.ChannelREST}) {
				t.Errorf("REST conversation replies to %+v", rt)
			}
		})
	}
}

// A REST key can be bound to an ID prefix, or to other channels (an
// integration that hands off Chat spaces on purpose).
func TestAPIKeyScopes(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.APIKeys = []string{testAPIKey, "shop-key;prefix=shop-", "chat-key;channels=google-chat"}
	})
	for _, c := range []struct {
		key, conv string
		want      int
	}{
		{testAPIKey, "anything", 202},
		{testAPIKey, "spaces%2FBBB", 403},
		{"shop-key", "shop-1", 202},
		{"shop-key", "other-1", 403},
		{"shop-key", "spaces%2FBBB", 403},
		{"chat-key", "spaces%2FBBB", 202},
		{"chat-key", "anything", 403},
	} {
		code, body := e.do(request{path: "/v1/conversations/" + c.conv + "/handoff", body: `{}`, auth: "Bearer " + c.key})
		if code != c.want {
			t.Errorf("key %s, conversation %s: %d %s, want %d", c.key, c.conv, code, body, c.want)
		}
	}
	// A Chat space handed off by REST replies into that space.
	if rt := e.conversation("spaces/BBB").ReplyTo; rt != (handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: "spaces/BBB"}) {
		t.Errorf("reply_to %+v", rt)
	}
	for _, bad := range []string{"k;channels=fax", "k;colour=red", ";prefix=x"} {
		cfg := testConfig(t)
		cfg.APIKeys = []string{bad}
		if err := cfg.Validate(); err == nil {
			t.Errorf("API key entry %q accepted", bad)
		}
	}
}

func (e *env) conversation(id string) handoff.Conversation {
	e.t.Helper()
	c, err := e.st.Conversation(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}
