package ordered

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// process takes one message from delivery to ack, NAK or dead letter. It
// returns true when the message must wait behind an older one this process
// also holds.
func (c *Consumer) process(ctx context.Context, it *item) (requeue bool) {
	start := time.Now()
	ev, payload, err := decode(it.msg)
	typ := string(ev.Type)
	if typ == "" || !ev.Type.Known() {
		typ = "unknown"
	}
	if err != nil {
		c.deadLetter(ctx, it, ev, "malformed_event", err)
		c.m.observe(typ, "dead_lettered", start)
		return false
	}

	// Order: only the oldest message still stored on the subject may be
	// handled. Acked messages are gone (work queue), so this is the next
	// event of the conversation in publish order.
	head, err := c.headOf(ctx, it.subject)
	switch {
	case err != nil:
		c.log.Warn("cannot read the conversation's head; handing back", "subject", it.subject, "seq", it.seq, "err", err)
		_ = it.msg.NakWithDelay(jitter(c.cfg.OutageDelay))
		c.m.retried("nats_unavailable")
		c.m.observe(typ, "retried", start)
		return false
	case head == 0 || head > it.seq:
		// Our message is no longer stored: a redelivery of an event that
		// was handled and acknowledged.
		_ = it.msg.Ack()
		c.m.observe(typ, "duplicate", start)
		return false
	case head < it.seq:
		if c.holdsWaiting(it.subject, head) {
			return true
		}
		// Another process holds the older event (or it waits for
		// redelivery); come back shortly.
		_ = it.msg.NakWithDelay(c.orderDelay(it.delivered))
		c.m.observe(typ, "deferred", start)
		return false
	}

	key, err := stream.ConversationOf(it.subject)
	if err != nil {
		key = it.subject
	}
	d := &Delivery{
		Event:     ev,
		Payload:   payload,
		Key:       key,
		Subject:   it.subject,
		Pos:       Position{Epoch: c.epoch, Seq: it.seq},
		Delivered: it.delivered,
		Stored:    it.stored,
		Header:    it.msg.Headers(),
		it:        it,
		ackWait:   c.cfg.AckWait,
		uncertain: it.delivered > 1 || it.msg.Headers().Get(HeaderReplay) != "",
	}
	for attempt := 1; ; attempt++ {
		d.Attempt = attempt
		err = c.h.Handle(ctx, d)
		var v Verdict
		if err != nil {
			v = c.verdict(err)
		}
		if err == nil || v.Class == ClassDuplicate || v.Class == ClassSkip {
			outcome := "applied"
			switch {
			case err == nil:
			case v.Class == ClassDuplicate:
				outcome = "duplicate"
			default:
				outcome = "skipped"
			}
			if aerr := c.ack(ctx, it); aerr != nil {
				// The ack may be lost; the redelivery will find the
				// handler's fence and be dropped as a duplicate.
				c.log.Warn("ack failed", "subject", it.subject, "seq", it.seq, "err", aerr)
			}
			if outcome == "applied" {
				c.m.lag.Observe(time.Since(ev.Time).Seconds())
			}
			c.m.observe(typ, outcome, start)
			return false
		}
		if v.Uncertain {
			d.uncertain = true
		}
		switch {
		case v.Class == ClassPermanent:
			c.deadLetter(ctx, it, ev, v.Reason, err)
			c.m.observe(typ, "dead_lettered", start)
			return false
		case v.Class == ClassOutage || ctx.Err() != nil:
			c.log.Warn("outage: handing the event back", "reason", v.Reason, "conversation", ev.Subject, "event", ev.ID, "err", err)
			_ = it.msg.NakWithDelay(jitter(c.cfg.OutageDelay))
			c.m.retried(v.Reason)
			c.m.observe(typ, "retried", start)
			return false
		case attempt >= c.cfg.MaxAttempts:
			c.deadLetter(ctx, it, ev, "retries_exhausted", fmt.Errorf("%d attempts, last: %w", attempt, err))
			c.m.observe(typ, "dead_lettered", start)
			return false
		}
		c.m.retried(v.Reason)
		delay := c.backoff(attempt, v.RetryAfter)
		c.log.Info("retrying", "reason", v.Reason, "attempt", attempt, "delay", delay, "conversation", ev.Subject, "event", ev.ID, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
}

// decode reads the envelope and its payload; an event that fails either
// can never be handled.
func decode(msg jetstream.Msg) (handoff.Event, any, error) {
	ev, err := handoff.UnmarshalEvent(msg.Data())
	if err != nil {
		return ev, nil, err
	}
	payload, err := ev.Payload()
	return ev, payload, err
}

// headOf returns the sequence of the oldest message stored on subject, or 0
// when there is none.
func (c *Consumer) headOf(ctx context.Context, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := c.str.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: get head of %s: %w", errNATS, subject, err)
	}
	return m.Sequence, nil
}

// ack waits for the server to confirm, so that when the next event of the
// conversation checks the head, this one is gone.
func (c *Consumer) ack(ctx context.Context, it *item) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return it.msg.DoubleAck(ctx)
}

func (c *Consumer) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := c.cfg.BackoffBase << min(attempt-1, 16)
	d = min(d, c.cfg.BackoffMax)
	d = d/2 + rand.N(d/2+1) // jitter: spread retries of many conversations
	return max(d, retryAfter)
}

func (c *Consumer) orderDelay(delivered uint64) time.Duration {
	d := c.cfg.OrderDelay << min(max(delivered, 1)-1, 4)
	return jitter(min(d, 2*time.Second))
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
