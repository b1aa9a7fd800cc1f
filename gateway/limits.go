package gateway

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/prometheus/client_golang/prometheus"
)

// Limits bound what one caller, and all callers together, can make the
// gateway do. Every handoff opens a LiveChat chat and may wait for an
// agent, and every forwarded message is one more event in a conversation's
// ordered queue: a public web bot lets any end user choose session IDs and
// type as fast as a script can. Rates are per second; 0 turns a limit off.
// The defaults are far above what a contact center's traffic looks like
// (a busy one hands off a few conversations a second) and far below what
// a script can send.
type Limits struct {
	// HandoffRate and HandoffBurst limit handoff requests per source: one
	// REST API key, Dialogflow (all agents share its credentials), or
	// Google Chat.
	HandoffRate  int
	HandoffBurst int
	// HandoffRateTotal and HandoffBurstTotal limit them over every source.
	HandoffRateTotal  int
	HandoffBurstTotal int
	// MaxPending caps the conversations waiting for an agent (pending or
	// queued) at once; a handoff beyond it gets the no-agents answer.
	MaxPending int
	// MessageRate and MessageBurst limit the user's messages forwarded to
	// the agent, per conversation: 5 a second with a burst of 20 is more
	// than a person types, less than a script loops.
	MessageRate  int
	MessageBurst int
}

// DefaultLimits returns the documented defaults.
func DefaultLimits() Limits {
	return Limits{
		HandoffRate: 10, HandoffBurst: 100,
		HandoffRateTotal: 50, HandoffBurstTotal: 500,
		MaxPending:  5000,
		MessageRate: 5, MessageBurst: 20,
	}
}

func (l Limits) validate() error {
	for name, v := range map[string]int{
		"handoff rate": l.HandoffRate, "handoff burst": l.HandoffBurst,
		"total handoff rate": l.HandoffRateTotal, "total handoff burst": l.HandoffBurstTotal,
		"max pending": l.MaxPending, "message rate": l.MessageRate, "message burst": l.MessageBurst,
	} {
		if v < 0 {
			return fmt.Errorf("%s must not be negative (0 turns it off)", name)
		}
	}
	return nil
}

// Limit names: the limit label of handoff_gateway_limited_total.
const (
	limitHandoffSource = "handoff_source"
	limitHandoffTotal  = "handoff_total"
	limitPending       = "pending"
	limitMessage       = "message"
)

var limitNames = []string{limitHandoffSource, limitHandoffTotal, limitPending, limitMessage}

// limitError is a request refused by a limit. REST answers it 429 with
// Retry-After (503 for the pending cap: the service, not the caller, is
// full); Dialogflow and Chat answer the user with a text.
type limitError struct {
	limit      string
	retryAfter time.Duration
}

func (e *limitError) Error() string {
	return fmt.Sprintf("limit %s reached, retry after %s", e.limit, e.retryAfter)
}

// pendingTTL is how long a count of waiting conversations is reused: the
// cap is a safety bound, not an exact quota, and counting costs a store
// round trip.
const pendingTTL = time.Second

// limits holds the buckets and the cached pending count.
type limits struct {
	cfg     Limits
	source  *limiter
	total   *limiter
	message *limiter
	refused *prometheus.CounterVec
	mu      sync.Mutex
	pending int64
	countAt time.Time
}

func newLimits(cfg Limits, now func() time.Time) *limits {
	return &limits{
		cfg:     cfg,
		source:  newLimiter(float64(cfg.HandoffRate), cfg.HandoffBurst, now),
		total:   newLimiter(float64(cfg.HandoffRateTotal), cfg.HandoffBurstTotal, now),
		message: newLimiter(float64(cfg.MessageRate), cfg.MessageBurst, now),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_gateway_limited_total",
			Help: "Requests refused by a limit: handoff_source and handoff_total (handoff rate), pending (conversations waiting for an agent), message (a conversation's message rate).",
		}, []string{"limit"}),
	}
}

func (l *limits) refuse(limit string, retryAfter time.Duration) error {
	l.refused.WithLabelValues(limit).Inc()
	return &limitError{limit: limit, retryAfter: retryAfter}
}

// admitMessage spends one of the conversation's message tokens.
func (l *limits) admitMessage(conversation string) error {
	if ok, wait := l.message.take(conversation); !ok {
		return l.refuse(limitMessage, wait)
	}
	return nil
}

// admitHandoff spends one handoff token of the source and one of the
// total, and checks the pending cap. A source over its rate does not spend
// the total's tokens, so one noisy credential cannot starve the others.
func (l *limits) admitHandoff(ctx context.Context, source string, count func(context.Context) (map[handoff.Mode]int64, error)) error {
	if ok, wait := l.source.take(source); !ok {
		return l.refuse(limitHandoffSource, wait)
	}
	if ok, wait := l.total.take(""); !ok {
		return l.refuse(limitHandoffTotal, wait)
	}
	if l.cfg.MaxPending <= 0 {
		return nil
	}
	n, err := l.pendingCount(ctx, count)
	if err != nil {
		return err
	}
	if n >= int64(l.cfg.MaxPending) {
		return l.refuse(limitPending, 30*time.Second)
	}
	l.counted()
	return nil
}

// counted adds an admitted handoff to the cached count, so a burst within
// one cache period cannot overshoot the cap.
func (l *limits) counted() {
	l.mu.Lock()
	l.pending++
	l.mu.Unlock()
}

func (l *limits) pendingCount(ctx context.Context, count func(context.Context) (map[handoff.Mode]int64, error)) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.countAt) < pendingTTL {
		return l.pending, nil
	}
	byMode, err := count(ctx)
	if err != nil {
		return 0, fmt.Errorf("count waiting conversations: %w", err)
	}
	l.pending, l.countAt = byMode[handoff.ModePending]+byMode[handoff.ModeQueued], time.Now()
	return l.pending, nil
}
