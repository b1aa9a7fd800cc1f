package outbound

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// breaker guards one destination (sony/gobreaker, as the inbound worker
// uses for LiveChat). Only failures that mean "the destination is down"
// count: 5xx, timeouts and network errors. When it opens, deliveries fail
// with Class Outage, so the consumer hands events back without spending
// their budget: an endpoint outage of an hour does not dead-letter a quiet
// conversation's one message.
type breaker struct {
	cb *gobreaker.CircuitBreaker[struct{}]
}

// BreakerConfig tunes a destination's circuit breaker.
type BreakerConfig struct {
	// Failures is how many consecutive failed deliveries open the circuit.
	Failures int
	// OpenFor is how long it stays open before one probe is let through.
	OpenFor time.Duration
}

func newBreaker(destination string, c BreakerConfig, state prometheus.Gauge) *breaker {
	if c.Failures <= 0 {
		c.Failures = 10
	}
	if c.OpenFor <= 0 {
		c.OpenFor = 5 * time.Second
	}
	state.Set(0)
	st := gobreaker.Settings{
		Name:        destination,
		MaxRequests: 1,
		Timeout:     c.OpenFor,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= uint32(c.Failures) },
		IsSuccessful: func(err error) bool {
			e, ok := AsError(err)
			return err == nil || !ok || !e.down
		},
		OnStateChange: func(_ string, _, to gobreaker.State) { state.Set(float64(to)) },
	}
	return &breaker{cb: gobreaker.NewCircuitBreaker[struct{}](st)}
}

// do runs fn unless the circuit is open.
func (b *breaker) do(ctx context.Context, destination string, fn func(context.Context) error) error {
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, fn(ctx) })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return failure(Outage, destination+"_circuit_open", fmt.Errorf("%s is failing; waiting before trying again: %w", destination, err))
	}
	return err
}
