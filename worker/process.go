package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/store"
	"github.com/nats-io/nats.go/jetstream"
)

// Header set on events re-published by `handoff dlq replay`: their earlier
// attempt may have reached LiveChat in part, so the worker looks before it
// sends.
const HeaderReplay = "Handoff-Replay"

// errAlreadyApplied: the conversation record shows a newer or equal
// sequence, so another delivery of this event already did the work.
var errAlreadyApplied = errors.New("already applied")

// errLeaseLost: the worker can no longer prove it still holds the message,
// so another worker may hold it now; stop before a LiveChat side effect.
var errLeaseLost = errors.New("lease on the message lost")

// permanentError marks a failure no retry can fix; the event is
// dead-lettered with its reason.
type permanentError struct {
	reason string
	err    error
}

func (p *permanentError) Error() string { return p.reason + ": " + p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

func permanent(reason string, err error) error { return &permanentError{reason: reason, err: err} }

// class says what to do with a failed attempt.
type class int

const (
	classTransient class = iota // retry here with backoff, spending the budget
	classOutage                 // hand back with a delay, budget untouched
	classPermanent              // dead-letter now
)

func classify(err error) (class, string) {
	var pe *permanentError
	switch {
	case errors.As(err, &pe):
		return classPermanent, pe.reason
	case errors.Is(err, errBreakerOpen):
		return classOutage, "livechat_circuit_open"
	case errors.Is(err, store.ErrUnavailable):
		return classOutage, "store_unavailable"
	case errors.Is(err, errLeaseLost):
		return classOutage, "lease_lost"
	case errors.Is(err, errNATS):
		return classOutage, "nats_unavailable"
	case errors.Is(err, store.ErrConflict):
		return classTransient, "store_conflict"
	}
	var le *livechat.Error
	if errors.As(err, &le) {
		if le.Retryable() || le.Type == livechat.ErrTypeAuthentication {
			return classTransient, "livechat_" + le.Type
		}
		return classPermanent, "livechat_" + le.Type
	}
	if livechat.IsRetryable(err) {
		return classTransient, "livechat_network"
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return classTransient, "timeout"
	}
	return classTransient, "unknown"
}

// errNATS wraps failures to talk to JetStream itself.
var errNATS = errors.New("nats unavailable")

// process takes one message from delivery to ack, NAK or dead letter. It
// returns true when the message must wait behind an older one this process
// also holds.
func (w *Worker) process(ctx context.Context, it *item) (requeue bool) {
	start := time.Now()
	ev, payload, err := decode(it.msg)
	typ := string(ev.Type)
	if typ == "" || !ev.Type.Known() {
		typ = "unknown"
	}
	if err != nil {
		w.deadLetter(ctx, it, ev, "malformed_event", err)
		w.m.observe(typ, "dead_lettered", start)
		return false
	}

	// Order: only the oldest message still stored on the subject may be
	// applied. Acked messages are gone (work queue), so this is the next
	// event of the conversation in publish order.
	head, err := w.headOf(ctx, it.subject)
	switch {
	case err != nil:
		w.log.Warn("cannot read the conversation's head; handing back", "subject", it.subject, "seq", it.seq, "err", err)
		_ = it.msg.NakWithDelay(w.jitter(w.cfg.OutageDelay))
		w.m.retried("nats_unavailable")
		w.m.observe(typ, "retried", start)
		return false
	case head == 0 || head > it.seq:
		// Our message is no longer stored: a redelivery of an event that
		// was applied and acknowledged.
		_ = it.msg.Ack()
		w.m.observe(typ, "duplicate", start)
		return false
	case head < it.seq:
		if w.holdsWaiting(it.subject, head) {
			return true
		}
		// Another worker holds the older event (or it waits for
		// redelivery); come back shortly.
		_ = it.msg.NakWithDelay(w.orderDelay(it.delivered))
		w.m.observe(typ, "deferred", start)
		return false
	}

	uncertain := it.delivered > 1 || it.msg.Headers().Get(HeaderReplay) != ""
	for attempt := 1; ; attempt++ {
		err = w.apply(ctx, it, ev, payload, uncertain)
		if err == nil || errors.Is(err, errAlreadyApplied) {
			outcome := "applied"
			if err != nil {
				outcome = "duplicate"
			}
			if aerr := w.ack(ctx, it); aerr != nil {
				// The ack may be lost; the redelivery will find LastSeq
				// and be dropped as a duplicate.
				w.log.Warn("ack failed", "subject", it.subject, "seq", it.seq, "err", aerr)
			}
			if outcome == "applied" {
				w.m.lag.Observe(time.Since(ev.Time).Seconds())
			}
			w.m.observe(typ, outcome, start)
			return false
		}
		if livechat.IsUncertain(err) {
			uncertain = true
		}
		cls, reason := classify(err)
		switch {
		case cls == classPermanent:
			w.deadLetter(ctx, it, ev, reason, err)
			w.m.observe(typ, "dead_lettered", start)
			return false
		case cls == classOutage || ctx.Err() != nil:
			w.log.Warn("outage: handing the event back", "reason", reason, "conversation", ev.Subject, "event", ev.ID, "err", err)
			_ = it.msg.NakWithDelay(w.jitter(w.cfg.OutageDelay))
			w.m.retried(reason)
			w.m.observe(typ, "retried", start)
			return false
		case attempt >= w.cfg.MaxAttempts:
			w.deadLetter(ctx, it, ev, "retries_exhausted", fmt.Errorf("%d attempts, last: %w", attempt, err))
			w.m.observe(typ, "dead_lettered", start)
			return false
		}
		w.m.retried(reason)
		delay := w.backoff(attempt, livechat.RetryAfter(err))
		w.log.Info("retrying", "reason", reason, "attempt", attempt, "delay", delay, "conversation", ev.Subject, "event", ev.ID, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
}

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
func (w *Worker) headOf(ctx context.Context, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := w.in.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
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
func (w *Worker) ack(ctx context.Context, it *item) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return it.msg.DoubleAck(ctx)
}

// checkLease fails when the worker has not proved it holds the message for
// half the ack wait: past that, JetStream may give it to another worker.
func (w *Worker) checkLease(it *item) error {
	if it.leaseAge() > w.cfg.AckWait/2 {
		return errLeaseLost
	}
	return nil
}

func (w *Worker) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := w.cfg.BackoffBase << min(attempt-1, 16)
	d = min(d, w.cfg.BackoffMax)
	d = d/2 + rand.N(d/2+1) // jitter: spread retries of many conversations
	return max(d, retryAfter)
}

func (w *Worker) orderDelay(delivered uint64) time.Duration {
	d := w.cfg.OrderDelay << min(max(delivered, 1)-1, 4)
	return w.jitter(min(d, 2*time.Second))
}

func (w *Worker) jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
