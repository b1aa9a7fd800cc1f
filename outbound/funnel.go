package outbound

import (
	"context"
	"fmt"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/store"
)

// funnelStep records the handoff funnel stage a reverse event shows
// (package funnel): chat.queued, agent.joined, the first message.agent of
// the handoff, its end by chat.closed, or LiveChat finding no agent. The
// stage is marked in the conversation record by a compare-and-swap and
// counted only when that write succeeded, so a redelivery, a copy from the
// sweep or a second process counts nothing. It runs before the delivery
// (a crash after delivering and before the delivered-ID record must not
// skip it on redelivery; a repeat is a no-op).
//
// An event is the handoff's only when it names the record's chat (and, for
// a close, its thread) and is not older than the request: LiveChat keeps
// one chat per customer, so a late event of the previous handoff names the
// same chat. A close names its thread; the others are told apart by time.
// clockSkew is how far the gateway's clock (a reverse event's time) may be
// behind the clock that stamped the request before an event counts as an
// earlier handoff's: hosts of one deployment agree within milliseconds,
// and a stale event of the handoff before comes seconds earlier.
const clockSkew = 2 * time.Second

func (h *Handler) funnelStep(ctx context.Context, conv string, d *ordered.Delivery) error {
	var (
		chatID, threadID string
		stage            handoff.FunnelStage
		end              string // the abandonment reason, for events that end the handoff
	)
	switch p := d.Payload.(type) {
	case *handoff.ChatQueued:
		chatID, stage = p.ChatID, handoff.StageQueued
	case *handoff.AgentJoined:
		chatID, stage = p.ChatID, handoff.StageAgentJoined
	case *handoff.AgentMessage:
		chatID, stage = p.ChatID, handoff.StageFirstAgentReply
	case *handoff.ChatClosed:
		chatID, threadID, end = p.ChatID, p.ThreadID, handoff.AbandonClosedWithoutReply
	case *handoff.AgentsUnavailable:
		if p.Reason == handoff.ReasonPickupTimeout || p.Reason == handoff.ReasonPickupMessageLeft {
			// The sweep's: it ended the handoff itself when it closed the
			// chat, and with --pickup-action wait the user still waits.
			return nil
		}
		chatID, end = p.ChatID, handoff.AbandonNoAgents
	default:
		return nil
	}
	at := time.Now()
	if t := d.Event.Time; !t.IsZero() && t.Before(at) {
		at = t
	}
	type counted struct {
		f         *handoff.Funnel
		stages    []handoff.FunnelStage
		since     []time.Duration
		abandoned string
	}
	var got counted
	_, err := h.st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
		got = counted{}
		old := c.Funnel
		if old == nil || old.Ended() || chatID == "" || c.ChatID != chatID || at.Add(clockSkew).UnixMilli() < old.Requested ||
			(threadID != "" && c.ThreadID != "" && threadID != c.ThreadID) {
			return store.ErrAbort
		}
		f := *old
		if end != "" {
			s, since, ab := f.End(at, end)
			if s != "" {
				got.stages, got.since = append(got.stages, s), append(got.since, since)
			}
			got.abandoned = ab
		} else {
			if stage == handoff.StageFirstAgentReply {
				// An agent who writes has joined, whether or not the
				// join's webhook came (first).
				if since, ok := f.Reach(handoff.StageAgentJoined, at); ok {
					got.stages, got.since = append(got.stages, handoff.StageAgentJoined), append(got.since, since)
				}
			}
			if since, ok := f.Reach(stage, at); ok {
				got.stages, got.since = append(got.stages, stage), append(got.since, since)
			}
		}
		if len(got.stages) == 0 && got.abandoned == "" {
			return store.ErrAbort
		}
		c.Funnel, got.f = &f, &f
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbound: record the funnel stage: %w", err)
	}
	for i, s := range got.stages {
		h.m.funnel.Reached(got.f, s, got.since[i])
	}
	if got.abandoned != "" {
		h.m.funnel.Abandoned(got.f, got.abandoned)
	}
	return nil
}
