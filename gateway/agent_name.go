package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/handoff-dev/handoff/store"
)

// DefaultAgentNameWait is how long an agent's message is held for the
// agent's name (Config.AgentNameWait).
const DefaultAgentNameWait = time.Second

// agentNameSkipTTL is how long, after one vain wait, an author's further
// messages in that chat go without waiting: an author who never joins
// (webhook not registered) must not cost every message a second.
const agentNameSkipTTL = time.Hour

// agentName returns the name of the agent who wrote a message. LiveChat's
// message webhook carries only the author's ID; the name arrives with
// incoming_chat or user_added_to_chat, which LiveChat delivers
// independently, often after the agent's first message. So a message
// whose author is not in the record yet is held for a moment while the
// record is read again, and goes without a name (the user reads "Agent")
// only when none arrives.
func (g *Gateway) agentName(ctx context.Context, convID, chatID, agentID string, known map[string]string) (string, error) {
	if name := known[agentID]; name != "" || agentID == "" || g.cfg.AgentNameWait <= 0 {
		return name, nil
	}
	skip := "gateway:agent-unnamed:" + chatID + ":" + agentID
	if _, err := g.st.Value(ctx, skip); err == nil {
		return "", nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	wait := g.cfg.AgentNameWait
	if dl, ok := ctx.Deadline(); ok {
		// Keep most of the budget to publish.
		wait = min(wait, time.Until(dl)/4)
	}
	t := time.NewTicker(unknownChatPoll)
	defer t.Stop()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-t.C:
		}
		rec, err := g.st.Conversation(ctx, convID)
		if err != nil {
			return "", err
		}
		if name := rec.Agents[agentID]; name != "" {
			return name, nil
		}
	}
	if err := g.st.SetValue(ctx, skip, "1", agentNameSkipTTL); err != nil {
		return "", err
	}
	g.log.Info("agent's name not known; the message goes without it", "chat", chatID, "held", wait)
	return "", nil
}
