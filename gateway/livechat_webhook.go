package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
)

// serveLiveChatWebhook is the start of the reverse path. LiveChat POSTs
// its webhooks here: an agent's message becomes message.agent and a closed
// chat becomes chat.closed, both on the conversation's reverse subject
// (handoff.out.<token>, stream HANDOFF_OUT), and a closed chat gives the
// conversation back to the bot. The answer comes after JetStream stored the
// event, so a failure makes LiveChat retry; its retries carry the same
// event IDs, stored once inside the duplicate window (after a NATS restart
// a copy may be stored, and only its ID tells it apart downstream).
func (g *Gateway) serveLiveChatWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	// LiveChat signs nothing: the secret_key registered with the webhook
	// comes back in the body. It is the first thing read, so an outsider
	// learns nothing from how the rest of a forged body is parsed, and it
	// is checked even with --insecure-no-auth: a forged chat_deactivated
	// would hand a user back to the bot, a forged message speak for an
	// agent.
	var sk struct {
		SecretKey string `json:"secret_key"`
	}
	if json.Unmarshal(body, &sk) != nil || g.cfg.LiveChatWebhookSecret == "" || !secretEqual(sk.SecretKey, g.cfg.LiveChatWebhookSecret) {
		g.rejected.Info("unauthenticated request", "endpoint", "livechat_webhook", "reason", "wrong or missing secret_key", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "unauthorized", reasonUnauthorized)
		return
	}
	d, err := livechat.ParseWebhook(body)
	if err != nil {
		g.rejected.Info("livechat webhook not understood", "err", truncate(err.Error()))
		writeError(w, http.StatusBadRequest, "bad_request", "not a LiveChat webhook delivery")
		return
	}
	var res webhookResult
	switch d.Action {
	case livechat.ActionIncomingEvent:
		res, err = g.relayAgentEvent(r.Context(), d)
	case livechat.ActionChatDeactivated:
		res, err = g.relayChatClosed(r.Context(), d)
	case livechat.ActionIncomingChat:
		res, err = g.relayIncomingChat(r.Context(), d)
	case livechat.ActionUserAdded, livechat.ActionUserAddedLegacy:
		res, err = g.relayUserAdded(r.Context(), d)
	case livechat.ActionChatTransferred:
		res, err = g.relayTransferred(r.Context(), d)
	default:
		res = ignored("action " + d.Action + " is not used")
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if res.Ignored != "" {
		g.log.Debug("livechat webhook ignored", "action", d.Action, "reason", res.Ignored)
	}
	writeJSON(w, http.StatusOK, res)
}

// webhookResult is the webhook's answer: what was relayed, or why nothing.
type webhookResult struct {
	Relayed      string `json:"relayed,omitempty"`
	Type         string `json:"type,omitempty"`
	Conversation string `json:"conversation,omitempty"`
	Ignored      string `json:"ignored,omitempty"`
}

func ignored(why string) webhookResult { return webhookResult{Ignored: why} }

// conversationOfChat finds the conversation a LiveChat chat belongs to.
// Chats this deployment did not start are not ours to relay.
func (g *Gateway) conversationOfChat(ctx context.Context, chatID string) (handoff.Conversation, bool, error) {
	id, err := g.st.ConversationByChat(ctx, chatID)
	if errors.Is(err, store.ErrNotFound) {
		return handoff.Conversation{}, false, nil
	}
	if err != nil {
		return handoff.Conversation{}, false, fmt.Errorf("find the chat's conversation: %w", err)
	}
	rec, err := g.st.Conversation(ctx, id)
	if err != nil {
		return handoff.Conversation{}, false, fmt.Errorf("read conversation: %w", err)
	}
	return rec, rec.ChatID == chatID, nil
}

func (g *Gateway) relayAgentEvent(ctx context.Context, d livechat.WebhookDelivery) (webhookResult, error) {
	p, err := d.IncomingEvent()
	if err != nil {
		return webhookResult{}, badRequest("%v", err)
	}
	rec, ok, err := g.chatConversation(ctx, p.ChatID)
	if err != nil || !ok {
		return ignored("unknown chat"), err
	}
	ev := p.Event
	// Our own customer's sends come back through incoming_event too.
	if ev.AuthorID == rec.CustomerID {
		return ignored("sent by the customer"), nil
	}
	if ev.Type == "system_message" {
		// Routing notices are status for the user, never agent text.
		return g.relaySystemMessage(ctx, rec, p)
	}
	visibility := ev.Visibility
	if visibility == "" {
		visibility = ev.Recipients // payloads before 3.4
	}
	if visibility != "all" {
		// An internal note between agents must never reach the user.
		return ignored("not visible to the customer"), nil
	}
	text := ev.Text
	switch ev.Type {
	case "message":
	case "rich_message":
		// Cards carry no text of their own; the surfaces downstream take
		// text, so the cards travel as their words, pictures and links.
		text = strings.TrimSpace(ev.Text + "\n" + livechat.RichText(ev.Elements))
	case "file":
		text = strings.TrimSpace(ev.Text + " " + ev.URL)
	default:
		// system_message and the like are routing status, not words
		// from the agent.
		return ignored("event type " + ev.Type + " is not relayed"), nil
	}
	if strings.TrimSpace(text) == "" {
		return ignored("no text"), nil
	}
	name, err := g.agentName(ctx, rec.ID, p.ChatID, ev.AuthorID, rec.Agents)
	if err != nil {
		return webhookResult{}, err
	}
	msg := handoff.AgentMessage{
		Text: text, AgentID: ev.AuthorID, AgentName: name, ChatID: p.ChatID, LiveChatEventID: ev.ID,
		ReplyTo: rec.ReplyTo, Language: rec.Language,
	}
	id := handoff.AgentMessageID(p.ChatID, ev.ID)
	if _, err := g.publishReverse(ctx, handoff.TypeMessageAgent, rec.ID, msg, id); err != nil {
		return webhookResult{}, err
	}
	// An agent answered: the chat is no longer waiting in the queue.
	if err := g.moveMode(ctx, rec.ID, p.ChatID, handoff.ModeAgent, handoff.ModePending, handoff.ModeQueued); err != nil {
		return webhookResult{}, err
	}
	return webhookResult{Relayed: id, Type: string(handoff.TypeMessageAgent), Conversation: rec.ID}, nil
}

func (g *Gateway) relayChatClosed(ctx context.Context, d livechat.WebhookDelivery) (webhookResult, error) {
	p, err := d.ChatDeactivated()
	if err != nil {
		return webhookResult{}, badRequest("%v", err)
	}
	rec, ok, err := g.chatConversation(ctx, p.ChatID)
	if err != nil || !ok {
		return ignored("unknown chat"), err
	}
	if !rec.Mode.WithAgent() {
		// The user already went back to the bot (a cancel, or no agent
		// with --when-no-agents=bot) and was told so; a second "chat
		// ended" would only confuse.
		return ignored("the conversation is already back with the bot"), nil
	}
	closed := handoff.ChatClosed{ChatID: p.ChatID, ThreadID: p.ThreadID, ClosedBy: p.UserID, ReplyTo: rec.ReplyTo, Language: rec.Language}
	id := handoff.ChatClosedID(p.ChatID, p.ThreadID)
	if _, err := g.publishReverse(ctx, handoff.TypeChatClosed, rec.ID, closed, id); err != nil {
		return webhookResult{}, err
	}
	// The bot owns the conversation again: the gateway stops forwarding
	// turns, and the worker keeps later messages for the next handoff.
	if err := g.moveMode(ctx, rec.ID, p.ChatID, handoff.ModeClosed, handoff.ModePending, handoff.ModeQueued, handoff.ModeAgent); err != nil {
		return webhookResult{}, err
	}
	return webhookResult{Relayed: id, Type: string(handoff.TypeChatClosed), Conversation: rec.ID}, nil
}

func (g *Gateway) publishReverse(ctx context.Context, t handoff.EventType, conversation string, data any, id string) (publisher.Receipt, error) {
	ev, err := handoff.NewEvent(t, conversation, data)
	if err != nil {
		return publisher.Receipt{}, err
	}
	ev.ID = id
	ev.Source = "livechat"
	return g.timed(ctx, func(ctx context.Context) (publisher.Receipt, error) { return g.pub.Publish(ctx, ev) })
}

// moveMode sets the conversation's mode to `to` if it still has this chat
// and is in one of the `from` modes; anything else means a newer handoff or
// cancel has moved it on, and that wins.
func (g *Gateway) moveMode(ctx context.Context, id, chatID string, to handoff.Mode, from ...handoff.Mode) error {
	_, err := g.st.UpdateConversation(ctx, id, func(c *handoff.Conversation) error {
		if c.ChatID != chatID || !containsMode(from, c.Mode) {
			return store.ErrAbort
		}
		c.Mode = to
		return nil
	})
	if err != nil {
		return fmt.Errorf("set conversation %s: %w", to, err)
	}
	return nil
}

func containsMode(modes []handoff.Mode, m handoff.Mode) bool {
	for _, x := range modes {
		if x == m {
			return true
		}
	}
	return false
}
