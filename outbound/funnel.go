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
// It decides from the record Handle read for the event, so the usual case,
// an event that moves nothing (every agent message but the handoff's
// first), costs no store call of its own. Only a step that moves the funnel
// is written, fenced by that record's Version: if someone wrote since, the
// store reads the record again and the step is decided again on it.
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

// funnelEvent is what a reverse event can do to the funnel.
type funnelEvent struct {
	chatID, threadID string
	stage            handoff.FunnelStage
	end              string // the abandonment reason, for events that end the handoff
	at               time.Time
}

// funnelCounted is what one record write reached, counted once the write
// succeeded.
type funnelCounted struct {
	f         *handoff.Funnel
	stages    []handoff.FunnelStage
	since     []time.Duration
	abandoned string
}

// funnelEventOf returns what the event can do to the funnel, and false for
// events that never move it (their handling needs no record for it).
func funnelEventOf(d *ordered.Delivery) (funnelEvent, bool) {
	var s funnelEvent
	switch p := d.Payload.(type) {
	case *handoff.ChatQueued:
		s.chatID, s.stage = p.ChatID, handoff.StageQueued
	case *handoff.AgentJoined:
		s.chatID, s.stage = p.ChatID, handoff.StageAgentJoined
	case *handoff.AgentMessage:
		s.chatID, s.stage = p.ChatID, handoff.StageFirstAgentReply
	case *handoff.ChatClosed:
		s.chatID, s.threadID, s.end = p.ChatID, p.ThreadID, handoff.AbandonClosedWithoutReply
	case *handoff.AgentsUnavailable:
		if p.Reason == handoff.ReasonPickupTimeout || p.Reason == handoff.ReasonPickupMessageLeft {
			// The sweep's: it ended the handoff itself when it closed the
			// chat, and with --pickup-action wait the user still waits.
			return s, false
		}
		s.chatID, s.end = p.ChatID, handoff.AbandonNoAgents
	default:
		return s, false
	}
	s.at = time.Now()
	if t := d.Event.Time; !t.IsZero() && t.Before(s.at) {
		s.at = t
	}
	return s, true
}

// apply moves c's funnel as the event shows and returns what it reached,
// or store.ErrAbort when the event is not this handoff's or reaches
// nothing new. It is a pure function of c and replaces c.Funnel rather
// than writing through it, so it can be tried on a shallow copy.
func (s funnelEvent) apply(c *handoff.Conversation) (funnelCounted, error) {
	var got funnelCounted
	old := c.Funnel
	if old == nil || old.Ended() || s.chatID == "" || c.ChatID != s.chatID || s.at.Add(clockSkew).UnixMilli() < old.Requested ||
		(s.threadID != "" && c.ThreadID != "" && s.threadID != c.ThreadID) {
		return got, store.ErrAbort
	}
	f := *old
	if s.end != "" {
		st, since, ab := f.End(s.at, s.end)
		if st != "" {
			got.stages, got.since = append(got.stages, st), append(got.since, since)
		}
		got.abandoned = ab
	} else {
		if s.stage == handoff.StageFirstAgentReply {
			// An agent who writes has joined, whether or not the
			// join's webhook came (first).
			if since, ok := f.Reach(handoff.StageAgentJoined, s.at); ok {
				got.stages, got.since = append(got.stages, handoff.StageAgentJoined), append(got.since, since)
			}
		}
		if since, ok := f.Reach(s.stage, s.at); ok {
			got.stages, got.since = append(got.stages, s.stage), append(got.since, since)
		}
	}
	if len(got.stages) == 0 && got.abandoned == "" {
		return funnelCounted{}, store.ErrAbort
	}
	c.Funnel, got.f = &f, &f
	return got, nil
}

// funnelStep applies s to rec, the record as read for this event, and
// returns the record as it now stands (rec itself when nothing was
// written).
func (h *Handler) funnelStep(ctx context.Context, rec handoff.Conversation, s funnelEvent) (handoff.Conversation, error) {
	trial := rec
	if _, err := s.apply(&trial); err != nil {
		return rec, nil // nothing to record, as of rec
	}
	var got funnelCounted
	rec, err := h.st.UpdateConversationFrom(ctx, rec, func(c *handoff.Conversation) error {
		var err error
		got, err = s.apply(c)
		return err
	})
	if err != nil {
		return rec, fmt.Errorf("outbound: record the funnel stage: %w", err)
	}
	for i, st := range got.stages {
		h.m.funnel.Reached(got.f, st, got.since[i])
	}
	if got.abandoned != "" {
		h.m.funnel.Abandoned(got.f, got.abandoned)
	}
	return rec, nil
}
