// Package outbound delivers the reverse path: every event on HANDOFF_OUT
// (an agent's message, a status change, a closed chat) reaches the user's
// surface. It is a handler on internal/ordered, the same mechanism the
// inbound worker uses, so each conversation's events arrive in order, a
// retry never sends twice, and an event that cannot be delivered becomes a
// dead letter with its reason.
//
// Each event is first appended to the feed stream (HANDOFF_FEED), read by
// the gateway's SSE and pull endpoints, and then handed to the channel of
// the conversation's reply_to: Google Chat (the Chat API, as the app) or a
// signed callback (Standard Webhooks) for REST and Dialogflow bots.
package outbound

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/handoff-dev/handoff"
)

// Channel delivers one rendered event to one surface. Deliver must be safe
// to call again with the same Outgoing after any failure, including one
// whose outcome is unknown: it sends with idempotency keys derived from
// Outgoing.Key, so the user sees the event once.
type Channel interface {
	Deliver(ctx context.Context, m Outgoing) error
	// Name labels metrics and logs ("google_chat", "callback").
	Name() string
}

// Outgoing is one event on its way to a surface.
type Outgoing struct {
	// Key is the event ID: the idempotency key of every send.
	Key     string
	To      handoff.ReplyTo
	Event   handoff.Event
	Payload any // the decoded data (*handoff.AgentMessage, ...)
	// Language picks the texts of status events ("" is English).
	Language string
	// Uncertain is set when an earlier attempt may have reached the
	// surface (a redelivery, a replay, or a lost answer).
	Uncertain bool
}

// Class says what a failed delivery needs.
type Class int

// The classes of a failed delivery.
const (
	// Transient: retry with backoff (throttling, 5xx, network).
	Transient Class = iota
	// Outage: the destination is down as a whole (its circuit is open):
	// hand the event back without spending its budget.
	Outage
	// Permanent: no retry can succeed (403/404 from Chat, 410 or another
	// refusal from a callback receiver): dead-letter now.
	Permanent
)

// Error is a failed delivery with what the consumer needs to decide.
type Error struct {
	Class  Class
	Reason string // metrics label and dead-letter reason, e.g. "callback_5xx"
	// RetryAfter is the destination's own wait (a Retry-After header).
	RetryAfter time.Duration
	// Uncertain: the request may have been acted on (the answer was
	// lost), so the next attempt must not assume it was not.
	Uncertain bool
	Err       error
	// down marks failures that say the destination itself is in trouble
	// (5xx, timeouts, network errors); only they count for its breaker.
	down bool
}

func (e *Error) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// AsError returns the *Error inside err, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func failure(c Class, reason string, err error) *Error {
	return &Error{Class: c, Reason: reason, Err: err}
}

// retryAfter reads a Retry-After header: seconds or an HTTP date. Waits
// longer than limit are cut to it, so a hostile or broken endpoint cannot
// park a conversation for a year.
func retryAfter(h http.Header, now time.Time, limit time.Duration) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(limit, max(d, 0))
}

// statusReason names an HTTP status for metrics without creating a label
// value per status code: 4xx/5xx keep their code only for the few that
// mean something different.
func statusReason(prefix string, code int) string {
	switch code {
	case 400, 401, 403, 404, 408, 409, 410, 413, 422, 429, 500, 502, 503, 504:
		return fmt.Sprintf("%s_%d", prefix, code)
	}
	return fmt.Sprintf("%s_%dxx", prefix, code/100)
}
