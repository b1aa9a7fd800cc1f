package gateway

import (
	"context"
	"fmt"
	"strings"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
)

// What the user is told about who has the conversation comes from
// LiveChat's webhooks: incoming_chat (a chat opened; its thread carries
// queue while nobody took it), user_added_to_chat (an agent joined),
// chat_transferred, and routing system messages in incoming_event
// (routing.archived_offline: no agent could be found). Each becomes a
// status event on HANDOFF_OUT, with an ID derived from what LiveChat sent,
// so LiveChat's retries are stored once.

// What to do when LiveChat finds no agent (--when-no-agents).
const (
	// WhenNoAgentsWait tells the user and keeps the conversation with
	// LiveChat: the next message waits for an agent.
	WhenNoAgentsWait = "wait"
	// WhenNoAgentsBot tells the user and gives the conversation back to
	// the bot; the chat is ended for the agents' side.
	WhenNoAgentsBot = "bot"
)

func (g *Gateway) relayIncomingChat(ctx context.Context, d livechat.WebhookDelivery) (webhookResult, error) {
	p, err := d.IncomingChat()
	if err != nil {
		return webhookResult{}, badRequest("%v", err)
	}
	rec, ok, err := g.chatConversation(ctx, p.Chat.ID)
	if err != nil || !ok {
		return ignored("unknown chat"), err
	}
	var agents []livechat.User
	for _, u := range p.Chat.Users {
		if u.Type == "agent" {
			agents = append(agents, u)
		}
	}
	if err := g.rememberAgents(ctx, rec, p.Chat.ID, agents...); err != nil {
		return webhookResult{}, err
	}
	q := p.Chat.Thread.Queue
	if q == nil {
		return ignored("the chat is not queued"), nil
	}
	if rec.Mode == handoff.ModeAgent {
		// The webhook describes the chat as LiveChat created it; it may
		// come late (held until the worker recorded the chat, or
		// retried) when an agent has already taken it or written: "you
		// are in the queue" after the agent's words would mislead.
		return ignored("an agent already has the chat"), nil
	}
	return g.relayQueued(ctx, rec, p.Chat.ID, p.Chat.Thread.ID, *q)
}

// relayQueued publishes chat.queued; one event per thread and position,
// so a repeated webhook or poll with the same position is stored once.
func (g *Gateway) relayQueued(ctx context.Context, rec handoff.Conversation, chatID, threadID string, q livechat.Queue) (webhookResult, error) {
	data := handoff.ChatQueued{ChatID: chatID, Position: max(q.Position, 0), WaitSeconds: max(q.WaitTime, 0),
		ReplyTo: rec.ReplyTo, Language: rec.Language}
	id := handoff.ChatQueuedID(chatID, threadID, data.Position)
	if _, err := g.publishReverse(ctx, handoff.TypeChatQueued, rec.ID, data, id); err != nil {
		return webhookResult{}, err
	}
	return webhookResult{Relayed: id, Type: string(handoff.TypeChatQueued), Conversation: rec.ID}, nil
}

func (g *Gateway) relayUserAdded(ctx context.Context, d livechat.WebhookDelivery) (webhookResult, error) {
	p, err := d.UserAdded()
	if err != nil {
		return webhookResult{}, badRequest("%v", err)
	}
	if p.UserType != "agent" {
		return ignored("not an agent"), nil
	}
	rec, ok, err := g.chatConversation(ctx, p.ChatID)
	if err != nil || !ok {
		return ignored("unknown chat"), err
	}
	data := handoff.AgentJoined{ChatID: p.ChatID, AgentID: p.User.ID, AgentName: p.User.Name, ReplyTo: rec.ReplyTo, Language: rec.Language}
	id := deriveID("livechat", "agent_joined", p.ChatID, p.ThreadID, p.User.ID)
	if _, err := g.publishReverse(ctx, handoff.TypeAgentJoined, rec.ID, data, id); err != nil {
		return webhookResult{}, err
	}
	// The name is kept for the agent's messages (LiveChat's message
	// webhook carries only the author's ID), and an agent owns the chat.
	_, err = g.st.UpdateConversation(ctx, rec.ID, func(c *handoff.Conversation) error {
		if c.ChatID != p.ChatID {
			return store.ErrAbort
		}
		changed := c.SetAgent(p.User.ID, p.User.Name)
		if c.Mode == handoff.ModePending || c.Mode == handoff.ModeQueued {
			c.Mode, changed = handoff.ModeAgent, true
		}
		if !changed {
			return store.ErrAbort
		}
		return nil
	})
	if err != nil {
		return webhookResult{}, fmt.Errorf("record the agent: %w", err)
	}
	return webhookResult{Relayed: id, Type: string(handoff.TypeAgentJoined), Conversation: rec.ID}, nil
}

func (g *Gateway) relayTransferred(ctx context.Context, d livechat.WebhookDelivery) (webhookResult, error) {
	p, err := d.ChatTransferred()
	if err != nil {
		return webhookResult{}, badRequest("%v", err)
	}
	rec, ok, err := g.chatConversation(ctx, p.ChatID)
	if err != nil || !ok {
		return ignored("unknown chat"), err
	}
	data := handoff.ChatTransferred{ChatID: p.ChatID, Reason: p.Reason, ReplyTo: rec.ReplyTo, Language: rec.Language}
	if len(p.GroupIDs) > 0 && p.GroupIDs[0] >= 0 {
		grp := p.GroupIDs[0]
		data.Group = &grp
	}
	if len(p.AgentIDs) > 0 {
		data.AgentID = p.AgentIDs[0]
		data.AgentName = rec.Agents[data.AgentID]
	}
	target := fmt.Sprint(p.GroupIDs, p.AgentIDs)
	id := deriveID("livechat", "transferred", p.ChatID, p.ThreadID, target, p.RequesterID)
	if _, err := g.publishReverse(ctx, handoff.TypeChatTransferred, rec.ID, data, id); err != nil {
		return webhookResult{}, err
	}
	if p.Queue != nil {
		// Transferred to a group: it waits in that group's queue.
		if err := g.moveMode(ctx, rec.ID, p.ChatID, handoff.ModeQueued, handoff.ModeAgent, handoff.ModePending); err != nil {
			return webhookResult{}, err
		}
		if _, err := g.relayQueued(ctx, rec, p.ChatID, p.ThreadID+"/"+target, *p.Queue); err != nil {
			return webhookResult{}, err
		}
	}
	return webhookResult{Relayed: id, Type: string(handoff.TypeChatTransferred), Conversation: rec.ID}, nil
}

// relaySystemMessage turns LiveChat's routing notices into status; a
// system message is never relayed as an agent's words.
func (g *Gateway) relaySystemMessage(ctx context.Context, rec handoff.Conversation, p livechat.IncomingEventPayload) (webhookResult, error) {
	kind := p.Event.SystemMessageType
	switch {
	case kind == "routing.archived_offline" || strings.HasPrefix(kind, "routing.archived_offline"):
		return g.relayNoAgents(ctx, rec, p.ChatID, p.ThreadID, kind)
	case strings.HasPrefix(kind, "routing.unassigned"):
		return g.relayQueued(ctx, rec, p.ChatID, p.ThreadID, livechat.Queue{})
	}
	return ignored("system message " + kind + " is not status for the user"), nil
}

// relayNoAgents publishes agents.unavailable and, with --when-no-agents=bot,
// gives the conversation back to the bot and asks the worker to end the
// chat (handoff.cancelled), so no agent later picks up a chat whose user
// has left.
func (g *Gateway) relayNoAgents(ctx context.Context, rec handoff.Conversation, chatID, threadID, reason string) (webhookResult, error) {
	back := g.cfg.WhenNoAgents == WhenNoAgentsBot
	data := handoff.AgentsUnavailable{ChatID: chatID, Reason: reason, Back: back, ReplyTo: rec.ReplyTo, Language: rec.Language}
	id := deriveID("livechat", "no_agents", chatID, threadID)
	if back {
		// Back to the bot first: a status event saying so must not arrive
		// while the user's turns still go to LiveChat.
		if err := g.moveMode(ctx, rec.ID, chatID, handoff.ModeBot, handoff.ModePending, handoff.ModeQueued, handoff.ModeAgent); err != nil {
			return webhookResult{}, err
		}
	}
	if _, err := g.publishReverse(ctx, handoff.TypeAgentsUnavailable, rec.ID, data, id); err != nil {
		return webhookResult{}, err
	}
	if back {
		cancelID := deriveID("livechat", "no_agents_cancel", chatID, threadID)
		_, err := g.timed(ctx, func(ctx context.Context) (publisher.Receipt, error) {
			return g.pub.CancelHandoff(ctx, rec.ID, handoff.HandoffCancelled{Reason: handoff.CancelReasonNoAgents}, publisher.WithID(cancelID))
		})
		if err != nil {
			return webhookResult{}, err
		}
	}
	return webhookResult{Relayed: id, Type: string(handoff.TypeAgentsUnavailable), Conversation: rec.ID}, nil
}

// rememberAgents keeps agents' names in the record for their messages.
func (g *Gateway) rememberAgents(ctx context.Context, rec handoff.Conversation, chatID string, agents ...livechat.User) error {
	changed := false
	probe := rec
	probe.Agents = maps2(rec.Agents)
	for _, a := range agents {
		changed = probe.SetAgent(a.ID, a.Name) || changed
	}
	if !changed {
		return nil
	}
	_, err := g.st.UpdateConversation(ctx, rec.ID, func(c *handoff.Conversation) error {
		if c.ChatID != chatID {
			return store.ErrAbort
		}
		ch := false
		for _, a := range agents {
			ch = c.SetAgent(a.ID, a.Name) || ch
		}
		if !ch {
			return store.ErrAbort
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record agent names: %w", err)
	}
	return nil
}

func maps2(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
