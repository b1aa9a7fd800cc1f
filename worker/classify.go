package worker

import (
	"errors"

	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/store"
)

// HeaderReplay is set on events re-published by `handoff dlq replay`: their
// earlier attempt may have reached LiveChat in part, so the worker looks
// before it sends.
const HeaderReplay = ordered.HeaderReplay

// errAlreadyApplied: the conversation record shows a newer or equal
// sequence, so another delivery of this event already did the work.
var errAlreadyApplied = ordered.ErrDuplicate

// classify is the inbound direction's Classifier: what LiveChat's and the
// store's errors mean for an event. The consumer's own wrappers and
// sentinels (ordered.Permanent, ordered.ErrLeaseLost, NATS failures) never
// reach it.
func classify(err error) ordered.Verdict {
	var after *afterCallsError
	v := ordered.Verdict{
		Uncertain:  livechat.IsUncertain(err) || errors.As(err, &after),
		RetryAfter: livechat.RetryAfter(err),
	}
	switch {
	case errors.Is(err, errBreakerOpen):
		v.Class, v.Reason = ordered.ClassOutage, "livechat_circuit_open"
		return v
	case errors.Is(err, store.ErrUnavailable):
		v.Class, v.Reason = ordered.ClassOutage, "store_unavailable"
		return v
	case errors.Is(err, store.ErrConflict):
		v.Class, v.Reason = ordered.ClassTransient, "store_conflict"
		return v
	}
	var le *livechat.Error
	if errors.As(err, &le) {
		if le.Retryable() || le.Type == livechat.ErrTypeAuthentication {
			v.Class, v.Reason = ordered.ClassTransient, "livechat_"+le.Type
			return v
		}
		v.Class, v.Reason = ordered.ClassPermanent, "livechat_"+le.Type
		return v
	}
	if livechat.IsRetryable(err) {
		v.Class, v.Reason = ordered.ClassTransient, "livechat_network"
		return v
	}
	// Anything else (timeouts, unknown errors) is the consumer's to name.
	return v
}
