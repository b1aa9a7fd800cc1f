package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/handoff-dev/handoff"
)

// DefaultUnknownChatWait is how long a LiveChat webhook for a chat the
// store does not know yet is held while a handoff is pending.
const DefaultUnknownChatWait = 2 * time.Second

// unknownChatPoll is how often the store is asked again while holding.
const unknownChatPoll = 50 * time.Millisecond

// errChatNotKnownYet is a webhook for a chat that may be one of ours whose
// start_chat answer the worker has not recorded yet.
var errChatNotKnownYet = &httpError{http.StatusServiceUnavailable, "chat_not_known_yet",
	"the chat is not known yet (a handoff is being opened); deliver again later"}

// chatConversation finds the conversation of a webhook's chat, closing the
// window between LiveChat creating a chat and the worker recording it: an
// agent can answer in that instant, and answering 200 then would lose the
// reply for good. When no handoff is pending the chat cannot be one being
// opened, so it is not ours (200, ignored). Otherwise the webhook is held
// for a moment while the store is asked again, and if the chat is still
// unknown the answer is 503, so LiveChat delivers it again; after
// LiveChat's last retry the worker's reconciliation sweep reads the chat
// and relays what no webhook did, with the same event IDs.
func (g *Gateway) chatConversation(ctx context.Context, chatID string) (handoff.Conversation, bool, error) {
	rec, ok, err := g.conversationOfChat(ctx, chatID)
	if err != nil || ok {
		return rec, ok, err
	}
	counts, err := g.st.CountByMode(ctx)
	if err != nil {
		return rec, false, err
	}
	if counts[handoff.ModePending] == 0 {
		return rec, false, nil
	}
	wait := g.cfg.UnknownChatWait
	if dl, ok := ctx.Deadline(); ok {
		// Keep time to publish once the chat turns up.
		wait = min(wait, time.Until(dl)/2)
	}
	t := time.NewTicker(unknownChatPoll)
	defer t.Stop()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return rec, false, ctx.Err()
		case <-t.C:
		}
		rec, ok, err = g.conversationOfChat(ctx, chatID)
		if err != nil || ok {
			return rec, ok, err
		}
	}
	g.log.Info("livechat webhook for a chat not known yet; LiveChat will deliver it again", "chat", chatID, "held", wait)
	return rec, false, errChatNotKnownYet
}
