package ordered

import (
	"context"
	"errors"
	"time"
)

// Class says what the consumer does with an event whose handler failed.
type Class int

const (
	// ClassTransient: retry in place with backoff, spending the event's
	// budget; past it the event is dead-lettered (retries_exhausted).
	ClassTransient Class = iota
	// ClassOutage: a dependency is down; hand the event back with a
	// delay, budget untouched, so an outage dead-letters nothing.
	ClassOutage
	// ClassPermanent: no retry can fix it; dead-letter now with the reason.
	ClassPermanent
	// ClassDuplicate: the event's effect is already there; acknowledge it.
	ClassDuplicate
	// ClassSkip: the event needs no delivery; acknowledge it.
	ClassSkip
)

// Verdict is what a Classifier decides about a handler's error.
type Verdict struct {
	Class Class
	// Reason labels the retries and dead-letter metrics and becomes the
	// dead letter's Handoff-Dlq-Reason; keep it a short fixed word.
	Reason string
	// RetryAfter is a lower bound on the delay before the next attempt
	// (a downstream's Retry-After).
	RetryAfter time.Duration
	// Uncertain: the failed attempt may have had its side effect, so the
	// next attempt must look before it acts again (Delivery.Uncertain).
	Uncertain bool
}

// Classifier maps a handler's error to a Verdict; each direction has its
// own (its downstream's error types). It is asked only about errors the
// consumer does not classify itself (the wrappers and sentinels below); a
// Verdict with an empty Reason means "not mine": the consumer retries it as
// transient with reason "timeout" or "unknown".
type Classifier func(error) Verdict

// ErrDuplicate: the handler found the event already applied (its fence
// shows it); the consumer acknowledges it as a duplicate.
var ErrDuplicate = errors.New("already applied")

// ErrLeaseLost: the consumer can no longer prove it holds the message, so
// another process may hold it now (Delivery.CheckLease). The event is
// handed back, budget untouched.
var ErrLeaseLost = errors.New("lease on the message lost")

// errNATS wraps failures to talk to JetStream itself.
var errNATS = errors.New("nats unavailable")

// classed is an error the handler has already classified.
type classed struct {
	class  Class
	reason string
	err    error
}

func (c *classed) Error() string {
	if c.err == nil {
		return c.reason
	}
	return c.reason + ": " + c.err.Error()
}

func (c *classed) Unwrap() error { return c.err }

// Permanent marks err as a failure no retry can fix: the event is
// dead-lettered at once with reason.
func Permanent(reason string, err error) error {
	return &classed{class: ClassPermanent, reason: reason, err: err}
}

// Outage marks err as a dependency being unavailable: the event goes back
// to the stream with a delay and keeps its retry budget.
func Outage(reason string, err error) error {
	return &classed{class: ClassOutage, reason: reason, err: err}
}

// Skip says the event needs no delivery (say, a stale status update): it is
// acknowledged and counted with outcome "skipped".
func Skip(reason string) error {
	return &classed{class: ClassSkip, reason: reason}
}

// verdict classifies a handler's error: the consumer's own wrappers and
// sentinels first, then the direction's Classifier, then a fallback.
func (c *Consumer) verdict(err error) Verdict {
	var ce *classed
	var pe *panicError
	switch {
	case errors.As(err, &pe):
		// It may have panicked after a side effect: look before acting.
		return Verdict{Class: ClassTransient, Reason: reasonPanic, Uncertain: true}
	case errors.As(err, &ce):
		return Verdict{Class: ce.class, Reason: ce.reason}
	case errors.Is(err, ErrDuplicate):
		return Verdict{Class: ClassDuplicate, Reason: "duplicate"}
	case errors.Is(err, ErrLeaseLost):
		return Verdict{Class: ClassOutage, Reason: "lease_lost"}
	case errors.Is(err, errNATS):
		return Verdict{Class: ClassOutage, Reason: "nats_unavailable"}
	}
	var v Verdict
	if c.cfg.Classify != nil {
		v = c.cfg.Classify(err)
	}
	if v.Reason == "" {
		v.Class = ClassTransient
		v.Reason = "unknown"
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			v.Reason = "timeout"
		}
	}
	return v
}
