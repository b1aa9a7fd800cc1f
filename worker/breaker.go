package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/handoff-dev/handoff/livechat"
	"github.com/sony/gobreaker/v2"
)

// errBreakerOpen: LiveChat failed too often lately; events wait in the
// stream instead of hammering it.
var errBreakerOpen = errors.New("livechat circuit open")

// breaker is a circuit breaker in front of LiveChat (sony/gobreaker: a
// small, well-kept implementation of exactly the closed/open/half-open
// machine we need). Only failures that mean "LiveChat is in trouble" count:
// 5xx, timeouts and network errors. A 4xx answer, a 429 or an expired token
// is LiveChat working as designed.
//
// There is one per LiveChat host (the Web API and the accounts service),
// since one can be down while the other answers.
type breaker struct {
	cb *gobreaker.CircuitBreaker[struct{}]
}

func newBreaker(host string, failures int, openFor time.Duration, m *metrics) *breaker {
	state := m.breakerState.WithLabelValues(host)
	state.Set(0)
	st := gobreaker.Settings{
		Name:        host,
		MaxRequests: 5,
		Timeout:     openFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(failures) },
		IsSuccessful: func(err error) bool {
			return err == nil || !troubled(err)
		},
		OnStateChange: func(_ string, _, to gobreaker.State) {
			state.Set(float64(to))
		},
	}
	return &breaker{cb: gobreaker.NewCircuitBreaker[struct{}](st)}
}

func troubled(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var le *livechat.Error
	if errors.As(err, &le) {
		return le.Status >= 500 || le.Type == livechat.ErrTypeInternal || le.Type == livechat.ErrTypeServiceUnavailable || le.Type == livechat.ErrTypeRequestTimeout
	}
	return livechat.IsRetryable(err)
}

// do runs fn unless the circuit is open. A failure that leaves the
// circuit open or half-open (the one that trips it, or a failed probe) is
// reported as errBreakerOpen too: it is the outage's, not the event's, so
// it must not spend the event's retry budget (the wrapped LiveChat error
// still says whether the call may have been applied).
//
// On an event's last attempt its budget allows (lastAttempt(ctx)), a
// troubled failure is the outage's as well when LiveChat answered nothing
// well since the event's first attempt (at least that many failures in a
// row, counted across all events): with few conversations an outage spends an event's budget
// before the circuit has seen enough failures to open, and the event must
// wait for LiveChat, not be dead-lettered. A failure of this event alone,
// while others' calls succeed, still spends its budget.
func (b *breaker) do(ctx context.Context, fn func(context.Context) error) error {
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, fn(ctx) })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return fmt.Errorf("%w: %w", errBreakerOpen, err)
	}
	if err != nil && troubled(err) {
		if b.cb.State() != gobreaker.StateClosed {
			return fmt.Errorf("%w: %w", errBreakerOpen, err)
		}
		if last := lastAttempt(ctx); last > 0 && b.cb.Counts().ConsecutiveFailures >= uint32(last) {
			return fmt.Errorf("%w: %d failures in a row, none answered since: %w", errBreakerOpen, last, err)
		}
	}
	return err
}
