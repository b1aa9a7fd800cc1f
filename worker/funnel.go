package worker

import (
	"context"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/funnel"
	"github.com/handoff-dev/handoff/internal/ordered"
)

// The worker's part of the handoff funnel (package funnel): it begins a
// handoff's funnel when it takes a handoff.requested with no chat live
// (requested), marks the chat started in the commit of that event, and
// ends the funnel on a cancel and on a pickup timeout. Each is counted
// only after the record write that marks it succeeded.

// funnelStep is what one record write reached, counted once the write
// succeeded.
type funnelStep struct {
	f         *handoff.Funnel
	stage     handoff.FunnelStage
	since     time.Duration
	abandoned string
}

func (s funnelStep) count(m *funnel.Metrics) {
	if s.f != nil {
		m.Ended(s.f, s.stage, s.since, s.abandoned)
	}
}

// eventTime is when an event happened, by its publisher's clock, but never
// later than now: a clock ahead must not make durations negative.
func eventTime(ev handoff.Event) time.Time {
	now := time.Now()
	if ev.Time.IsZero() || ev.Time.After(now) {
		return now
	}
	return ev.Time
}

// beginFunnel records that the handoff ev was requested, before any
// LiveChat call, so a handoff that never gets a chat (dead-lettered, or
// asked again first) is still counted as requested. A handoff still open
// in the record from before (its chat ended while no event said so to the
// outbound side, or it never got a chat) is ended in the same write. It
// returns the record as written (or as found, when the handoff was begun
// already by an earlier attempt).
func (w *Worker) beginFunnel(ctx context.Context, it *ordered.Delivery, ev handoff.Event, rec handoff.Conversation, p *handoff.HandoffRequested) (handoff.Conversation, error) {
	var begun *handoff.Funnel
	var old funnelStep
	applied := false
	at := eventTime(ev)
	saved, err := w.st.UpdateConversationFrom(ctx, rec, func(c *handoff.Conversation) error {
		begun, old, applied = nil, funnelStep{}, false
		if w.appliedBefore(*c, it.Pos) || c.Applied.Has(ev.ID) {
			applied = true
			return errAbort
		}
		if c.Funnel != nil && c.Funnel.Handoff == ev.ID {
			return errAbort
		}
		if c.Funnel != nil && !c.Funnel.Ended() {
			f := *c.Funnel
			reason := handoff.AbandonClosedWithoutReply
			if !f.Reached(handoff.StageChatStarted) {
				reason = handoff.AbandonNotOpened
			}
			stage, d, ab := f.End(at, reason)
			old = funnelStep{f: &f, stage: stage, since: d, abandoned: ab}
		}
		channel := p.ReplyTo.Channel
		if channel == "" {
			channel = c.ReplyTo.Channel
		}
		begun = &handoff.Funnel{Handoff: ev.ID, Channel: funnel.ChannelLabel(channel), Group: funnel.GroupLabel(p.Group),
			Requested: at.UnixMilli()}
		c.Funnel = begun
		return nil
	})
	if err != nil {
		return rec, err
	}
	if applied {
		return rec, errAlreadyApplied
	}
	old.count(w.funnel)
	if begun != nil {
		w.funnel.Reached(begun, handoff.StageRequested, 0)
	}
	return saved, nil
}

// abandonFunnel ends the conversation's handoff as abandoned for reason,
// if it is the handoff of chatID and still open.
func (w *Worker) abandonFunnel(ctx context.Context, id, chatID, reason string) error {
	var ended funnelStep
	_, err := w.st.UpdateConversation(ctx, id, func(c *handoff.Conversation) error {
		ended = funnelStep{}
		if c.Funnel == nil || c.ChatID != chatID || c.Funnel.Reached(handoff.StageFirstAgentReply) {
			return errAbort
		}
		f := *c.Funnel
		stage, d, ab := f.End(time.Now(), reason)
		if stage == "" && ab == "" {
			return errAbort
		}
		c.Funnel, ended = &f, funnelStep{f: &f, stage: stage, since: d, abandoned: ab}
		return nil
	})
	if err != nil {
		return err
	}
	ended.count(w.funnel)
	return nil
}

// reachFunnel records that the conversation's handoff on chatID reached
// stage, now: the sweep's repair of an agent join no webhook reported.
func (w *Worker) reachFunnel(ctx context.Context, id, chatID string, stage handoff.FunnelStage) error {
	var reached funnelStep
	_, err := w.st.UpdateConversation(ctx, id, func(c *handoff.Conversation) error {
		reached = funnelStep{}
		if c.Funnel == nil || c.ChatID != chatID {
			return errAbort
		}
		f := *c.Funnel
		d, ok := f.Reach(stage, time.Now())
		if !ok {
			return errAbort
		}
		c.Funnel, reached = &f, funnelStep{f: &f, stage: stage, since: d}
		return nil
	})
	if err != nil {
		return err
	}
	reached.count(w.funnel)
	return nil
}
