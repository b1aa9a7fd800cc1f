// Package worker applies the events of the inbound stream to LiveChat.
//
// Any number of worker processes share one durable pull consumer, run by
// package ordered: each conversation's events reach the worker's handler in
// publish order, one at a time (an event is handled only when it is the
// oldest message still stored on its conversation's subject), with retries,
// outage hand-back and dead letters. This package is the LiveChat handler on
// top: the conversation record's LastSeq fences late writers, the record
// remembers the applied event IDs so a copy of an event (stored again after
// a NATS restart, or under another Nats-Msg-Id) is not applied twice, and
// every LiveChat message carries the event ID as custom_id so an uncertain
// send is looked up before it is sent again. ARCHITECTURE.md walks through
// the cases.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/funnel"
	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Config tunes a worker. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// Group is the LiveChat group chats go to when an event names none.
	Group int
	// Continuous makes LiveChat create chats even when no agent is online,
	// so messages wait for one instead of failing with groups_offline.
	Continuous bool
	// MaxInFlight bounds the events one process holds at once: being
	// applied, or waiting behind an older event of the same conversation.
	MaxInFlight int
	// MaxHeldPerConversation bounds the events of one conversation a
	// process holds; the newer ones go back to the stream, timed to
	// return when the conversation needs them, so one conversation's
	// backlog cannot stall the others (ARCHITECTURE.md, "Why order holds").
	MaxHeldPerConversation int
	// MaxAttempts is the retry budget of one event for transient failures
	// before it is dead-lettered. Outages (LiveChat's circuit open, Redis
	// or NATS unreachable) do not spend it: events wait for them.
	MaxAttempts int
	// BackoffBase and BackoffMax bound the exponential backoff with jitter
	// between attempts; a Retry-After from LiveChat wins when longer.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// OrderDelay is how long an event waits before redelivery when an older
	// event of its conversation is held by another worker.
	OrderDelay time.Duration
	// OutageDelay is how long an event waits before redelivery during an
	// outage of LiveChat, Redis or NATS.
	OutageDelay time.Duration
	// PendingLimit bounds the user messages kept while no chat is open.
	PendingLimit int
	// IdempotencyWindow is how long an applied event ID is remembered in
	// its conversation's record (at most handoff.MaxAppliedEvents per
	// conversation): a copy of the event inside it is acknowledged without
	// any LiveChat call, whatever JetStream's duplicate window remembers.
	IdempotencyWindow time.Duration
	// ShutdownTimeout bounds how long Run finishes in-flight events after
	// its context ends; what is left is handed back to the stream.
	ShutdownTimeout time.Duration
	// AckWait must match the consumer's; the worker signals progress at a
	// third of it and stops LiveChat side effects of an event whose lease
	// it can no longer prove (half of it without a successful heartbeat).
	AckWait time.Duration
	// Stream is applied with stream.Setup at start.
	Stream stream.Config
	// Breaker tunes the circuit breaker in front of LiveChat.
	BreakerFailures int
	BreakerOpenFor  time.Duration
	// StatsInterval is how often consumer info is read for metrics.
	StatsInterval time.Duration
	// SweepInterval is how often the reconciliation sweep runs (on one
	// worker at a time; also right after start). See sweep.go.
	SweepInterval time.Duration
	// PickupTimeout is how long a chat may wait with no agent before the
	// sweep gives up on it; PickupAction says what happens then: "wait"
	// (the user is told and keeps waiting), "bot" (the chat is closed and
	// the bot has the user again) or "message" (the chat is closed and
	// stays in LiveChat's archive with its transcript, as a message an
	// agent follows up).
	PickupTimeout time.Duration
	PickupAction  string
	// QueuePollInterval is how often one worker reads the queue position
	// of every queued chat (LiveChat has no webhook for it) and tells
	// users whose position changed; 0 turns it off. See queue.go.
	QueuePollInterval time.Duration
}

// DefaultConfig returns the defaults documented in README.md.
func DefaultConfig() Config {
	sc := stream.DefaultConfig()
	return Config{
		Continuous:        true,
		MaxInFlight:       1024,
		MaxAttempts:       12,
		BackoffBase:       100 * time.Millisecond,
		BackoffMax:        10 * time.Second,
		OrderDelay:        100 * time.Millisecond,
		OutageDelay:       2 * time.Second,
		PendingLimit:      50,
		IdempotencyWindow: 24 * time.Hour,
		ShutdownTimeout:   20 * time.Second,
		AckWait:           sc.AckWait,
		Stream:            sc,
		BreakerFailures:   20,
		BreakerOpenFor:    5 * time.Second,
		StatsInterval:     5 * time.Second,
		SweepInterval:     30 * time.Second,
		PickupTimeout:     3 * time.Minute,
		PickupAction:      PickupWait,
		QueuePollInterval: 30 * time.Second,

		// The ordered consumer's default.
		MaxHeldPerConversation: ordered.DefaultConfig().MaxHeldPerConversation,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	positive(&c.MaxInFlight, d.MaxInFlight)
	positive(&c.MaxHeldPerConversation, d.MaxHeldPerConversation)
	positive(&c.MaxAttempts, d.MaxAttempts)
	positive(&c.BackoffBase, d.BackoffBase)
	positive(&c.BackoffMax, d.BackoffMax)
	positive(&c.OrderDelay, d.OrderDelay)
	positive(&c.OutageDelay, d.OutageDelay)
	positive(&c.PendingLimit, d.PendingLimit)
	positive(&c.IdempotencyWindow, d.IdempotencyWindow)
	positive(&c.ShutdownTimeout, d.ShutdownTimeout)
	positive(&c.BreakerFailures, d.BreakerFailures)
	positive(&c.BreakerOpenFor, d.BreakerOpenFor)
	positive(&c.StatsInterval, d.StatsInterval)
	positive(&c.SweepInterval, d.SweepInterval)
	positive(&c.PickupTimeout, d.PickupTimeout)
	if c.PickupAction == "" {
		c.PickupAction = d.PickupAction
	}
	if c.Stream.AckWait <= 0 {
		c.Stream = d.Stream
	}
	c.AckWait = c.Stream.AckWait
	return c
}

// positive replaces a zero or negative setting with its default.
func positive[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Worker consumes the inbound stream. Create it with New and call Run.
type Worker struct {
	cfg     Config
	js      jetstream.JetStream
	lc      *livechat.Client
	st      store.Store
	log     *slog.Logger
	m       *metrics
	funnel  *funnel.Metrics
	tokens  *tokens
	breaker *breaker // the Web API
	// accounts is the breaker of the accounts service (tokens).
	accounts *breaker
	consumer *ordered.Consumer
}

// New returns a worker. lc must be built with the HTTP client from
// InstrumentHTTPClient (or any client) so LiveChat requests are measured;
// reg receives the worker's metrics.
func New(cfg Config, js jetstream.JetStream, lc *livechat.Client, st store.Store, reg prometheus.Registerer, log *slog.Logger) (*Worker, error) {
	cfg = cfg.withDefaults()
	switch cfg.PickupAction {
	case PickupWait, PickupBot, PickupMessage:
	default:
		// A misspelt action must not silently act like another.
		return nil, fmt.Errorf("worker: pickup action must be %q, %q or %q, got %q", PickupWait, PickupBot, PickupMessage, cfg.PickupAction)
	}
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	fm, err := funnel.New(reg)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w := &Worker{
		cfg:    cfg,
		js:     js,
		lc:     lc,
		st:     st,
		log:    log,
		m:      m,
		funnel: fm,
	}
	w.breaker = newBreaker("api", cfg.BreakerFailures, cfg.BreakerOpenFor, m)
	w.accounts = newBreaker("accounts", cfg.BreakerFailures, cfg.BreakerOpenFor, m)
	w.tokens = newTokens(lc, st, w.accounts, m, log)
	w.consumer, err = ordered.New(cfg.consumerConfig(), js, ordered.HandlerFunc(w.handle), reg, log)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	return w, nil
}

// consumerConfig is the ordered consumer of the inbound stream, with the
// worker's metric names (handoff_worker_*).
func (c Config) consumerConfig() ordered.Config {
	return ordered.Config{
		Stream:                 stream.InStream,
		Durable:                stream.Consumer,
		DLQPrefix:              stream.DLQPrefix,
		Subsystem:              "worker",
		MaxInFlight:            c.MaxInFlight,
		MaxAttempts:            c.MaxAttempts,
		MaxHeldPerConversation: c.MaxHeldPerConversation,
		BackoffBase:            c.BackoffBase,
		BackoffMax:             c.BackoffMax,
		OrderDelay:             c.OrderDelay,
		OutageDelay:            c.OutageDelay,
		ShutdownTimeout:        c.ShutdownTimeout,
		AckWait:                c.AckWait,
		StatsInterval:          c.StatsInterval,
		Classify:               classify,
	}
}

// Run sets up the streams, then consumes until ctx ends; then it stops
// fetching, finishes in-flight events within ShutdownTimeout, hands back
// the rest and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := stream.Setup(setupCtx, w.js, w.cfg.Stream)
	cancel()
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	statsCtx, stopStats := context.WithCancel(ctx)
	var stats sync.WaitGroup
	stats.Add(3)
	go func() { defer stats.Done(); w.conversationStats(statsCtx) }()
	go func() { defer stats.Done(); w.sweeper(statsCtx) }()
	go func() { defer stats.Done(); w.queuePoller(statsCtx) }()
	defer func() { stopStats(); stats.Wait() }()
	if err := w.consumer.Run(ctx); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	return nil
}

// handle applies one inbound event to LiveChat. A failed attempt that had
// already made a LiveChat call (the first part of a split message, or the
// send before a failed record write) is marked so the next attempt looks up
// custom_ids before it sends: the error alone (a 429, a CAS conflict) says
// nothing about what went through before it.
func (w *Worker) handle(ctx context.Context, d *ordered.Delivery) error {
	if testHookHandle != nil {
		testHookHandle(d)
	}
	var a attemptCalls
	if d.Attempt >= w.cfg.MaxAttempts {
		a.last = d.Attempt
	}
	err := w.apply(context.WithValue(ctx, attemptKey{}, &a), d, d.Event, d.Payload, d.Uncertain())
	if err != nil && a.made.Load() {
		w.rememberTouched(ctx, d)
		return &afterCallsError{err: err}
	}
	return err
}

// rememberTouched records in the conversation that an attempt at d's event
// called LiveChat and ended without recording its outcome, so that the
// next attempt looks its messages up before sending them even when it
// comes as a first delivery: nats-server writes a consumer's state about
// ten times a second, and one killed abruptly (kill -9, OOM) delivers the
// events of its last moments again with a delivery count of 1. The
// attempt may have ended because the context did (shutdown), so the write
// gets its own short deadline. A failed write leaves the question to
// JetStream's delivery count, as before.
func (w *Worker) rememberTouched(ctx context.Context, d *ordered.Delivery) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	id := d.Event.ID
	_, err := w.st.UpdateConversation(ctx, d.Event.Subject, func(c *handoff.Conversation) error {
		if slices.Contains(c.Touched, id) || c.Applied.Has(id) {
			return errAbort
		}
		c.Touched = append(slices.Clone(c.Touched), id)
		if n := len(c.Touched) - handoff.MaxTouchedEvents; n > 0 {
			c.Touched = c.Touched[n:]
		}
		return nil
	})
	if err != nil {
		// During a store outage every failed attempt ends here; the
		// outage itself is logged once by the consumer.
		level := slog.LevelWarn
		if errors.Is(err, store.ErrUnavailable) {
			level = slog.LevelDebug
		}
		w.log.Log(ctx, level, "could not record an attempt that called LiveChat; the next one relies on the delivery count", "conversation", d.Event.Subject, "event", id, "err", err)
	}
}

// attemptCalls records whether an attempt has made a LiveChat call, and
// carries the attempt's number when it is the last the budget allows.
type attemptCalls struct {
	made atomic.Bool
	last int
}

// lastAttempt is the number of the event's attempt running in ctx when it
// is the last its retry budget allows, else 0.
func lastAttempt(ctx context.Context) int {
	if a, ok := ctx.Value(attemptKey{}).(*attemptCalls); ok {
		return a.last
	}
	return 0
}

type attemptKey struct{}

// afterCallsError is a failure of an attempt that had already called
// LiveChat; the classifier makes the next attempt uncertain.
type afterCallsError struct{ err error }

func (e *afterCallsError) Error() string { return e.err.Error() }
func (e *afterCallsError) Unwrap() error { return e.err }

// testHookHandle, when set by a test, runs before each attempt: it is how
// the tests make the apply path panic. Always nil in the binary.
var testHookHandle func(*ordered.Delivery)

// conversationStats reads the conversations per mode from the store: a
// fleet-wide figure, so it is the worker's and not the consumer's.
func (w *Worker) conversationStats(ctx context.Context) {
	t := time.NewTicker(w.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		counts, err := w.st.CountByMode(ictx)
		cancel()
		if err == nil {
			for mode, n := range counts {
				w.m.conversations.WithLabelValues(string(mode)).Set(float64(n))
			}
		}
	}
}
