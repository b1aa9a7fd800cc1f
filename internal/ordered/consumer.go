// Package ordered consumes a JetStream work-queue stream whose subjects are
// conversations, and hands each conversation's events to a Handler one at a
// time, in publish order, across any number of processes sharing one durable
// pull consumer.
//
// It owns the mechanism both directions need (inbound to LiveChat in
// package worker, outbound to the user's channel): the fetch loop and its
// in-flight slots, a queue per subject, the head-of-subject gate (an event
// is handled only when it is the oldest message still stored on its subject,
// checked with GetMsg), the lease on each held message (heartbeats and
// Delivery.CheckLease), retries with backoff, jitter and Retry-After,
// hand-back with a confirmed NAK during an outage, a confirmed DoubleAck
// (both retried through a leader election), dead letters to
// HANDOFF_DLQ with their reason, drain on shutdown, and the generic metrics.
// Handlers keep what is specific to their downstream: the calls, the
// idempotency fence, circuit breakers and a Classifier for their errors.
package ordered

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler applies one event. It returns nil when the event's effect is in
// place, or an error the consumer classifies: the wrappers Permanent,
// Outage and Skip, the sentinels ErrDuplicate and ErrLeaseLost, or anything
// else through Config.Classify.
type Handler interface {
	Handle(ctx context.Context, d *Delivery) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, d *Delivery) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, d *Delivery) error { return f(ctx, d) }

// Config tunes a Consumer. Zero durations and counts take the defaults of
// DefaultConfig; Stream, Durable and Subsystem are required.
type Config struct {
	// Stream is the work-queue stream read, e.g. HANDOFF_IN.
	Stream string
	// Durable is the durable pull consumer every process shares; it must
	// exist (stream.Setup creates it) with explicit acks and AckWait.
	Durable string
	// DLQPrefix is the subject prefix of dead letters in HANDOFF_DLQ; the
	// conversation's token follows it. Default stream.DLQPrefix.
	DLQPrefix string
	// Subsystem names the metrics: handoff_<Subsystem>_events_total, ...
	Subsystem string
	// MaxInFlight bounds the events one process holds at once: being
	// handled, or waiting behind an older event of the same conversation.
	MaxInFlight int
	// MaxHeldPerConversation bounds the events of one conversation one
	// process holds (at least 2); the newer ones go back to the stream,
	// timed to return when the conversation needs them, so one
	// conversation's backlog cannot take the slots of all the others
	// (see fair.go).
	MaxHeldPerConversation int
	// MaxAttempts is the retry budget of one event for transient failures
	// before it is dead-lettered. Outages do not spend it.
	MaxAttempts int
	// BackoffBase and BackoffMax bound the exponential backoff with jitter
	// between attempts; a Verdict's RetryAfter wins when longer.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// OrderDelay is how long an event waits before redelivery when an older
	// event of its conversation is held by another process.
	OrderDelay time.Duration
	// OutageDelay is how long an event waits before redelivery during an
	// outage.
	OutageDelay time.Duration
	// ShutdownTimeout bounds how long Run finishes in-flight events after
	// its context ends; what is left is handed back to the stream.
	ShutdownTimeout time.Duration
	// AckWait must match the consumer's; the consumer signals progress at
	// a third of it, and Delivery.CheckLease fails after half of it
	// without a successful heartbeat.
	AckWait time.Duration
	// StatsInterval is how often consumer info is read for metrics.
	StatsInterval time.Duration
	// Classify classifies the handler's errors the consumer does not know.
	Classify Classifier
}

// DefaultConfig returns the defaults of the inbound worker, documented in
// README.md.
func DefaultConfig() Config {
	return Config{
		DLQPrefix:   stream.DLQPrefix,
		MaxInFlight: 1024,
		MaxAttempts: 12,
		// Eight keep a conversation busy through a few slow calls while
		// its next events come back from the stream.
		MaxHeldPerConversation: 8,
		BackoffBase:            100 * time.Millisecond,
		BackoffMax:             10 * time.Second,
		OrderDelay:             100 * time.Millisecond,
		OutageDelay:            2 * time.Second,
		ShutdownTimeout:        20 * time.Second,
		AckWait:                stream.DefaultConfig().AckWait,
		StatsInterval:          5 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.DLQPrefix == "" {
		c.DLQPrefix = d.DLQPrefix
	}
	positive(&c.MaxInFlight, d.MaxInFlight)
	positive(&c.MaxHeldPerConversation, d.MaxHeldPerConversation)
	c.MaxHeldPerConversation = max(c.MaxHeldPerConversation, minHeldPerConversation)
	positive(&c.MaxAttempts, d.MaxAttempts)
	positive(&c.BackoffBase, d.BackoffBase)
	positive(&c.BackoffMax, d.BackoffMax)
	positive(&c.OrderDelay, d.OrderDelay)
	positive(&c.OutageDelay, d.OutageDelay)
	positive(&c.ShutdownTimeout, d.ShutdownTimeout)
	positive(&c.AckWait, d.AckWait)
	positive(&c.StatsInterval, d.StatsInterval)
	return c
}

// positive replaces a zero or negative setting with its default.
func positive[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Consumer runs a Handler over a stream. Create it with New and call Run
// once.
type Consumer struct {
	cfg Config
	js  jetstream.JetStream
	h   Handler
	log *slog.Logger
	m   *metrics
	str jetstream.Stream
	// epoch is the stream's creation time: sequences restart when the
	// stream is recreated, so a position is (epoch, sequence).
	epoch int64

	outages *outageLog

	mu       sync.Mutex
	convs    map[string]*convQueue
	held     map[uint64]*item
	stopping bool
	wg       sync.WaitGroup

	// released, elected, beatNow and electionUntil (under mu) resend
	// hand-backs a new consumer leader may not know (election.go).
	released      releases
	elected       chan time.Time
	beatNow       chan struct{}
	electionUntil time.Time
	leader        string
	// conn is the connection's reconnect count at the last delivery.
	conn uint64
	// loseHandBack, set by tests, drops a hand-back as a leader that
	// stops with it queued does: answered, and forgotten.
	loseHandBack func(seq uint64) bool
	// loseNakAnswer, set by tests, loses the answer to an applied NAK,
	// as a server too slow to answer within the timeout does.
	loseNakAnswer func(seq uint64) bool
	// paces are the conversations' apply times and shapes (fair.go);
	// applyAll is the apply-time EWMA over all of them, the estimate for
	// a conversation not applied here yet.
	paces    map[string]*pace
	applyAll time.Duration
	// recalls are the fairness hand-backs this process may call back
	// when their conversation reaches them (recall.go).
	recalls map[string]*recallList
	// marks is the bucket telling other processes about those hand-backs
	// (nil when it could not be opened).
	marks atomic.Pointer[jetstream.KeyValue]
}

// New returns a consumer of cfg.Stream that hands events to h; reg receives
// the metrics under cfg.Subsystem.
func New(cfg Config, js jetstream.JetStream, h Handler, reg prometheus.Registerer, log *slog.Logger) (*Consumer, error) {
	if cfg.Stream == "" || cfg.Durable == "" || cfg.Subsystem == "" {
		return nil, errors.New("ordered: Stream, Durable and Subsystem are required")
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg, cfg.Subsystem, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("ordered: metrics: %w", err)
	}
	return &Consumer{
		outages: newOutageLog(log),
		cfg:     cfg,
		js:      js,
		h:       h,
		log:     log,
		m:       m,
		convs:   map[string]*convQueue{},
		held:    map[uint64]*item{},
		elected: make(chan time.Time, 1),
		beatNow: make(chan struct{}, 1),
		paces:   map[string]*pace{},
		recalls: map[string]*recallList{},
		// Until an event was applied here, guess short: an event back
		// too early is ranked and handed back again, one too late would
		// stall its conversation.
		applyAll: cfg.OrderDelay / 4,
	}, nil
}

// Run consumes until ctx ends; then it stops fetching, finishes in-flight
// events within ShutdownTimeout, hands back the rest and returns nil.
func (c *Consumer) Run(ctx context.Context) error {
	var err error
	c.str, err = c.js.Stream(ctx, c.cfg.Stream)
	if err != nil {
		return fmt.Errorf("ordered: open stream %s: %w", c.cfg.Stream, err)
	}
	c.epoch = c.str.CachedInfo().Created.UnixNano()
	cons, err := c.js.Consumer(ctx, c.cfg.Stream, c.cfg.Durable)
	if err != nil {
		return fmt.Errorf("ordered: open consumer %s: %w", c.cfg.Durable, err)
	}
	// Prefetch no more than we can hold, so buffered messages do not sit
	// out their ack wait in the client (nats.go #1929). The server sends an
	// idle heartbeat every second on a waiting pull: when the consumer's
	// leader is lost with our pull requests, two missed heartbeats make
	// the client pull again from the new leader, within 2 s instead of 10.
	prefetch := min(c.cfg.MaxInFlight, 256)
	iter, err := cons.Messages(jetstream.PullMaxMessages(prefetch), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return fmt.Errorf("ordered: consume %s: %w", c.cfg.Durable, err)
	}
	stopWatch, err := c.watchElections()
	if err != nil {
		iter.Stop()
		return err
	}
	defer stopWatch()
	c.mu.Lock()
	c.conn = c.reconnects()
	if info := cons.CachedInfo(); info != nil && info.Cluster != nil {
		c.leader = info.Cluster.Leader
	}
	c.mu.Unlock()
	c.log.Info("consumer started", "stream", c.cfg.Stream, "consumer", c.cfg.Durable, "max_in_flight", c.cfg.MaxInFlight)

	// Work outlives ctx by ShutdownTimeout so a SIGTERM does not cut a
	// downstream call in half.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	bgCtx, stopBG := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Add(5)
	go func() { defer bg.Done(); c.openMarks(bgCtx) }()
	go func() { defer bg.Done(); c.recallDue(bgCtx) }()
	go func() { defer bg.Done(); c.heartbeats(bgCtx) }()
	go func() { defer bg.Done(); c.consumerStats(bgCtx, cons) }()
	go func() { defer bg.Done(); c.afterElections(bgCtx) }()

	go func() {
		<-ctx.Done()
		// From now on queued and newly drained events are handed back at
		// once, so other processes take them without waiting for the ack
		// wait; Drain lets the buffered ones reach us to be handed back.
		c.mu.Lock()
		c.stopping = true
		c.mu.Unlock()
		iter.Drain()
	}()

	slots := make(chan struct{}, c.cfg.MaxInFlight)
	for {
		msg, err := iter.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			c.log.Warn("fetch failed", "stream", c.cfg.Stream, "err", err)
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
			c.dispatch(workCtx, msg, func() { <-slots })
		case <-ctx.Done():
			_ = msg.Nak()
		}
	}

	c.log.Info("consumer stopping: finishing in-flight events", "stream", c.cfg.Stream, "deadline", c.cfg.ShutdownTimeout)
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.cfg.ShutdownTimeout):
		c.log.Warn("shutdown deadline passed: handing back in-flight events", "stream", c.cfg.Stream)
		cancelWork()
		<-done
	}
	stopBG()
	bg.Wait()
	c.log.Info("consumer stopped", "stream", c.cfg.Stream)
	return nil
}

// item is one delivered message this process holds.
type item struct {
	msg       jetstream.Msg
	seq       uint64
	delivered uint64
	stored    time.Time
	subject   string
	// release frees the item's in-flight slot; called once, by done.
	release func()
	// lease is when the process last proved to NATS that it still holds
	// the message (delivery or a heartbeat on a connected client).
	mu    sync.Mutex
	lease time.Time
	// conn is the connection's reconnect count at delivery. A lease does
	// not survive a reconnect: a restarted server, or a new consumer
	// leader, rebuilds its pending list from stored delivery times that
	// our InProgress heartbeats never updated, and redelivers held
	// messages about a second after it comes back, to any process.
	conn uint64
	// handedBack: a NAK was sent, so no heartbeat may follow it. An
	// InProgress that reaches the server after the NAK restarts the ack
	// wait, and the event would come back only after 30 s.
	handedBack bool
	// markRev is the revision of the mark saying the previous delivery
	// was handed back before any attempt (fair.go); 0 when none was read.
	markRev uint64
	// markPut is the revision of the mark this process wrote when it
	// handed this delivery back (0: none): the next delivery, if it comes
	// back here, knows its mark without reading it (recall.go).
	markPut uint64
	// applied: its last processing applied it at once, without waiting
	// for an older event held elsewhere (its time is the conversation's
	// pace).
	applied bool
	// acked: an ack was sent for it, so its conversation moved past it.
	acked bool
}

func (it *item) leaseAge() time.Duration {
	it.mu.Lock()
	defer it.mu.Unlock()
	return time.Since(it.lease)
}

// beat sends a heartbeat for it unless it was handed back, and renews the
// lease when the heartbeat left on a connected client. A delivery held
// through a reconnect is heartbeated too: it may not act any more
// (mayAct), but its lease is what lets it be handed back (handBack); a
// heartbeat that reaches another process's newer delivery only restarts
// that one's ack wait. it.mu orders it with markHandedBack: a heartbeat is
// either sent before the NAK, or not.
func (it *item) beat(connected bool) {
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.handedBack {
		return
	}
	if err := it.msg.InProgress(); err == nil && connected {
		it.lease = time.Now()
	}
}

// markHandedBack stops heartbeats for it; call it before sending the NAK.
func (it *item) markHandedBack() {
	it.mu.Lock()
	it.handedBack = true
	it.mu.Unlock()
}

// convQueue holds one conversation's messages in stream order.
type convQueue struct {
	items []*item
	// cur is the message its runner has taken out of items, if any.
	cur *item
	// wake tells a runner waiting for cur's turn that an older message
	// joined the queue.
	wake chan struct{}
	// lastApplied is when the runner last applied a message with the
	// next one already queued, zero otherwise: the start of a cycle.
	lastApplied time.Time
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

// dispatch queues msg behind the conversation's older messages and starts
// the conversation's runner if it is idle. It never blocks.
func (c *Consumer) dispatch(ctx context.Context, msg jetstream.Msg, release func()) {
	md, err := msg.Metadata()
	if err != nil {
		c.log.Error("message without metadata: terminating", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		release()
		return
	}
	it := &item{msg: msg, seq: md.Sequence.Stream, delivered: md.NumDelivered, stored: md.Timestamp, subject: msg.Subject(),
		release: release, lease: time.Now(), conn: c.reconnects()}
	// Ours again: a hand-back sent after an election would cut this
	// delivery short.
	c.released.forget(it.seq)
	c.log.Debug("delivered", "subject", it.subject, "seq", it.seq, "delivered", it.delivered, "consumer_seq", md.Sequence.Consumer)
	c.mu.Lock()
	if it.conn != c.conn {
		// The first delivery since a reconnect: the server we were on may
		// have led the consumer, and the election's advisory came while
		// we were away. Guard what we hold as after an election.
		c.conn = it.conn
		c.beatAfterElection()
	}
	c.held[it.seq] = it
	c.deliveredRecallable(it)
	q, running := c.convs[it.subject]
	if !running {
		q = &convQueue{wake: make(chan struct{}, 1)}
		c.convs[it.subject] = q
	}
	replaced := q.insert(it)
	if q.cur != nil && it.seq < q.cur.seq {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	// Keep the oldest: past the limit, the newest queued go back.
	var excess []*item
	held := len(q.items)
	if q.cur != nil {
		held++
	}
	for ; held > c.cfg.MaxHeldPerConversation && len(q.items) > 0; held-- {
		excess = append(excess, q.items[len(q.items)-1])
		q.items = q.items[:len(q.items)-1]
	}
	var oldest uint64
	if len(excess) > 0 {
		oldest = q.items[0].seq
		if q.cur != nil {
			oldest = min(oldest, q.cur.seq)
		}
	}
	c.m.inFlight.Set(float64(len(c.held)))
	c.mu.Unlock()
	if replaced != nil {
		c.done(replaced)
	}
	if len(excess) > 0 {
		c.wg.Add(1)
		go c.handBackExcess(ctx, it.subject, excess, oldest)
	}
	if !running {
		c.wg.Add(1)
		go c.runConversation(ctx, it.subject, q)
	}
}

// done forgets a finished item and frees its slot.
func (c *Consumer) done(it *item) {
	c.mu.Lock()
	if c.held[it.seq] == it {
		delete(c.held, it.seq)
	}
	release := it.release
	it.release = nil
	c.m.inFlight.Set(float64(len(c.held)))
	c.mu.Unlock()
	if release != nil {
		release()
	}
}

// runConversation handles a conversation's queued messages one at a time,
// in stream order, and exits when the queue is empty.
func (c *Consumer) runConversation(ctx context.Context, subject string, q *convQueue) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(q.items) == 0 {
			delete(c.convs, subject)
			c.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items = q.items[1:]
		q.cur = it
		stopping := c.stopping
		c.mu.Unlock()
		if stopping {
			// Hand it back untouched: another process (or this one after
			// a restart) takes it in order.
			it.markHandedBack()
			_ = it.msg.Nak()
			c.mu.Lock()
			q.cur = nil
			c.mu.Unlock()
			c.done(it)
			continue
		}
		requeue := c.process(ctx, it)
		c.mu.Lock()
		q.cur = nil
		c.cycle(q, it)
		if !requeue {
			var recalls []recallable
			if it.acked {
				c.paceOf(subject).acked = time.Now()
				recalls = c.dueRecalls(subject, q, it.seq)
			}
			conn := c.conn
			c.mu.Unlock()
			c.done(it)
			if len(recalls) > 0 {
				c.recall(recalls, conn)
			}
			continue
		}
		replaced := q.insert(it)
		c.mu.Unlock()
		if replaced != nil && replaced != it {
			c.done(replaced)
		}
	}
}

// holdsWaiting reports whether this process holds seq of subject, queued.
func (c *Consumer) holdsWaiting(subject string, seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, ok := c.convs[subject]
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
// are still being worked on, so they are not redelivered elsewhere; every
// electionBeat for a while after a consumer leader election (election.go).
func (c *Consumer) heartbeats(ctx context.Context) {
	t := time.NewTimer(c.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.beatNow:
			t.Stop()
		}
		c.prunePaces()
		c.mu.Lock()
		c.pruneRecalls()
		items := make([]*item, 0, len(c.held))
		for _, it := range c.held {
			items = append(items, it)
		}
		next := c.cfg.AckWait / 3
		if time.Now().Before(c.electionUntil) {
			next = min(next, electionBeat)
		}
		c.mu.Unlock()
		t.Reset(next)
		connected := c.js.Conn().IsConnected()
		for _, it := range items {
			it.beat(connected)
		}
	}
}

// consumerStats reads the consumer's pending and redelivered counts, for
// the metrics and queue-lag autoscaling.
func (c *Consumer) consumerStats(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(c.cfg.StatsInterval)
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
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			// For elections whose advisory we missed.
			c.leaderIs(info.Cluster.Leader)
		}
		if err == nil {
			c.m.consumerPending.Set(float64(info.NumPending))
			c.m.consumerAckPending.Set(float64(info.NumAckPending))
			c.m.consumerRedelivered.Set(float64(info.NumRedelivered))
		}
	}
}
