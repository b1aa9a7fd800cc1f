// Package worker applies the events of the inbound stream to LiveChat.
//
// Any number of worker processes share one durable pull consumer. Each
// conversation's events reach LiveChat in publish order and exactly once:
// a worker applies an event only when it is the oldest message still stored
// on its conversation's subject (the stream is a work queue, so applied
// events are gone), the conversation record's LastSeq fences late writers,
// the record remembers the applied event IDs so a copy of an event (stored
// again after a NATS restart, or under another Nats-Msg-Id) is not applied
// twice, and every LiveChat message carries the event ID as custom_id so an
// uncertain send is looked up before it is sent again. ARCHITECTURE.md walks
// through the cases.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

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
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	positive(&c.MaxInFlight, d.MaxInFlight)
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
	tokens  *tokens
	breaker *breaker // the Web API
	// accounts is the breaker of the accounts service (tokens).
	accounts *breaker
	in       jetstream.Stream
	// epoch is the inbound stream's creation time, stored with LastSeq.
	epoch int64

	mu       sync.Mutex
	convs    map[string]*convQueue
	held     map[uint64]*item
	stopping bool
	wg       sync.WaitGroup
}

// New returns a worker. lc must be built with the HTTP client from
// InstrumentHTTPClient (or any client) so LiveChat requests are measured;
// reg receives the worker's metrics.
func New(cfg Config, js jetstream.JetStream, lc *livechat.Client, st store.Store, reg prometheus.Registerer, log *slog.Logger) (*Worker, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:   cfg,
		js:    js,
		lc:    lc,
		st:    st,
		log:   log,
		m:     m,
		convs: map[string]*convQueue{},
		held:  map[uint64]*item{},
	}
	w.breaker = newBreaker("api", cfg.BreakerFailures, cfg.BreakerOpenFor, m)
	w.accounts = newBreaker("accounts", cfg.BreakerFailures, cfg.BreakerOpenFor, m)
	w.tokens = newTokens(lc, st, w.accounts, m, log)
	return w, nil
}

// item is one delivered message this process holds.
type item struct {
	msg       jetstream.Msg
	seq       uint64
	delivered uint64
	subject   string
	// release frees the item's in-flight slot; called once, by done.
	release func()
	// lease is when the worker last proved to NATS that it still holds the
	// message (delivery or a heartbeat on a connected client).
	mu    sync.Mutex
	lease time.Time
}

func (it *item) leaseAge() time.Duration {
	it.mu.Lock()
	defer it.mu.Unlock()
	return time.Since(it.lease)
}

func (it *item) renew() {
	it.mu.Lock()
	it.lease = time.Now()
	it.mu.Unlock()
}

// convQueue holds one conversation's messages in stream order.
type convQueue struct {
	items []*item
}

// insert files it in stream order. A redelivery of a message already
// queued replaces it (the newer delivery's ack reply is the live one) and the
// replaced item is returned so its slot can be freed.
func (q *convQueue) insert(it *item) (replaced *item) {
	i := sort.Search(len(q.items), func(i int) bool { return q.items[i].seq >= it.seq })
	if i < len(q.items) && q.items[i].seq == it.seq {
		replaced = q.items[i]
		q.items[i] = it
		return replaced
	}
	q.items = append(q.items, nil)
	copy(q.items[i+1:], q.items[i:])
	q.items[i] = it
	return nil
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
	w.in, err = w.js.Stream(ctx, stream.InStream)
	if err != nil {
		return fmt.Errorf("worker: open stream %s: %w", stream.InStream, err)
	}
	w.epoch = w.in.CachedInfo().Created.UnixNano()
	cons, err := w.js.Consumer(ctx, stream.InStream, stream.Consumer)
	if err != nil {
		return fmt.Errorf("worker: open consumer %s: %w", stream.Consumer, err)
	}
	// Prefetch no more than we can hold, so buffered messages do not sit
	// out their ack wait in the client (nats.go #1929).
	prefetch := min(w.cfg.MaxInFlight, 256)
	iter, err := cons.Messages(jetstream.PullMaxMessages(prefetch), jetstream.PullHeartbeat(5*time.Second))
	if err != nil {
		return fmt.Errorf("worker: consume: %w", err)
	}
	w.log.Info("worker started", "stream", stream.InStream, "consumer", stream.Consumer, "max_in_flight", w.cfg.MaxInFlight)

	// Work outlives ctx by ShutdownTimeout so a SIGTERM does not cut a
	// LiveChat call in half.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	bgCtx, stopBG := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); w.heartbeats(bgCtx) }()
	go func() { defer bg.Done(); w.consumerStats(bgCtx, cons) }()

	go func() {
		<-ctx.Done()
		// From now on queued and newly drained events are handed back at
		// once, so other workers take them without waiting for the ack
		// wait; Drain lets the buffered ones reach us to be handed back.
		w.mu.Lock()
		w.stopping = true
		w.mu.Unlock()
		iter.Drain()
	}()

	slots := make(chan struct{}, w.cfg.MaxInFlight)
	for {
		msg, err := iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			w.log.Warn("fetch failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		select {
		case slots <- struct{}{}:
			if ctx.Err() != nil {
				<-slots
				_ = msg.Nak()
				continue
			}
			w.dispatch(workCtx, msg, func() { <-slots })
		case <-ctx.Done():
			_ = msg.Nak()
		}
	}

	w.log.Info("worker stopping: finishing in-flight events", "deadline", w.cfg.ShutdownTimeout)
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.ShutdownTimeout):
		w.log.Warn("shutdown deadline passed: handing back in-flight events")
		cancelWork()
		<-done
	}
	stopBG()
	bg.Wait()
	w.log.Info("worker stopped")
	return nil
}

// dispatch queues msg behind the conversation's older messages and starts
// the conversation's runner if it is idle. It never blocks.
func (w *Worker) dispatch(ctx context.Context, msg jetstream.Msg, release func()) {
	md, err := msg.Metadata()
	if err != nil {
		w.log.Error("message without metadata: terminating", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		release()
		return
	}
	it := &item{msg: msg, seq: md.Sequence.Stream, delivered: md.NumDelivered, subject: msg.Subject(),
		release: release, lease: time.Now()}
	w.mu.Lock()
	w.held[it.seq] = it
	q, running := w.convs[it.subject]
	if !running {
		q = &convQueue{}
		w.convs[it.subject] = q
	}
	replaced := q.insert(it)
	w.m.inFlight.Set(float64(len(w.held)))
	w.mu.Unlock()
	if replaced != nil {
		w.done(replaced)
	}
	if !running {
		w.wg.Add(1)
		go w.runConversation(ctx, it.subject, q)
	}
}

// done forgets a finished item and frees its slot.
func (w *Worker) done(it *item) {
	w.mu.Lock()
	if w.held[it.seq] == it {
		delete(w.held, it.seq)
	}
	release := it.release
	it.release = nil
	w.m.inFlight.Set(float64(len(w.held)))
	w.mu.Unlock()
	if release != nil {
		release()
	}
}

// runConversation applies a conversation's queued messages one at a time,
// in stream order, and exits when the queue is empty.
func (w *Worker) runConversation(ctx context.Context, subject string, q *convQueue) {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		if len(q.items) == 0 {
			delete(w.convs, subject)
			w.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items = q.items[1:]
		stopping := w.stopping
		w.mu.Unlock()
		if stopping {
			// Hand it back untouched: another worker (or this one after a
			// restart) takes it in order.
			_ = it.msg.Nak()
			w.done(it)
			continue
		}
		if requeue := w.process(ctx, it); requeue {
			w.mu.Lock()
			if replaced := q.insert(it); replaced != nil && replaced != it {
				w.mu.Unlock()
				w.done(replaced)
				continue
			}
			w.mu.Unlock()
			continue
		}
		w.done(it)
	}
}

// holdsWaiting reports whether this process holds seq of subject, queued.
func (w *Worker) holdsWaiting(subject string, seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	q, ok := w.convs[subject]
	if !ok {
		return false
	}
	for _, it := range q.items {
		if it.seq == seq {
			return true
		}
	}
	return false
}

// heartbeats tells NATS every third of the ack wait that the held messages
// are still being worked on, so they are not redelivered elsewhere.
func (w *Worker) heartbeats(ctx context.Context) {
	t := time.NewTicker(w.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		items := make([]*item, 0, len(w.held))
		for _, it := range w.held {
			items = append(items, it)
		}
		w.mu.Unlock()
		connected := w.js.Conn().IsConnected()
		for _, it := range items {
			if err := it.msg.InProgress(); err == nil && connected {
				it.renew()
			}
		}
	}
}

// consumerStats reads the consumer's pending and redelivered counts (for
// the metrics and queue-lag autoscaling) and the conversations per mode.
func (w *Worker) consumerStats(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(w.cfg.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		if err == nil {
			w.m.consumerPending.Set(float64(info.NumPending))
			w.m.consumerAckPending.Set(float64(info.NumAckPending))
			w.m.consumerRedelivered.Set(float64(info.NumRedelivered))
		}
		ictx, cancel = context.WithTimeout(ctx, 2*time.Second)
		counts, err := w.st.CountByMode(ictx)
		cancel()
		if err == nil {
			for mode, n := range counts {
				w.m.conversations.WithLabelValues(string(mode)).Set(float64(n))
			}
		}
	}
}
