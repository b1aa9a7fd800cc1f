package ordered

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// process takes one message from delivery to ack, NAK or dead letter. It
// returns true when the message must wait behind an older one this process
// also holds.
func (c *Consumer) process(ctx context.Context, it *item) (requeue bool) {
	start := time.Now()
	it.applied = false
	var applyStart time.Time
	ev, payload, err := decode(it.msg)
	typ := string(ev.Type)
	if typ == "" || !ev.Type.Known() {
		typ = "unknown"
	}
	if err != nil {
		c.deadLetter(ctx, it, ev, "malformed_event", err)
		c.m.observe(typ, "dead_lettered", start)
		return false
	}

	// Order: only the oldest message still stored on the subject may be
	// handled. Acked messages are gone (work queue), so this is the next
	// event of the conversation in publish order.
	var poll, waited time.Duration
	for {
		if it.conn != c.reconnects() {
			// Held through a reconnect: it may not act any more (mayAct).
			// Hand it back at once, while every holder heartbeats each
			// second after its own reconnect (see handBack), rather than
			// after a wait for its turn.
			c.log.Debug("held through a reconnect: handing back", "subject", it.subject, "seq", it.seq)
			c.handBack(ctx, it, jitter(c.cfg.OutageDelay))
			c.m.retried("lease_lost")
			c.m.observe(typ, "retried", start)
			return false
		}
		checked := time.Now()
		head, err := c.headOf(ctx, it.subject)
		// A head check that failed is most often a stream leader election
		// (a second or so): ask again while the lease holds rather than
		// hand the event back, since a hand-back cannot reach a leaderless
		// consumer either.
		for delay := confirmFirstDelay; err != nil && ctx.Err() == nil && c.leaseHolds(it); delay = min(2*delay, confirmMaxDelay) {
			c.log.Debug("head check failed; asking again", "subject", it.subject, "seq", it.seq, "err", err)
			c.m.retried("head_check_failed")
			sleepCtx(ctx, jitter(delay))
			checked = time.Now()
			head, err = c.headOf(ctx, it.subject)
		}
		switch {
		case err != nil:
			c.outages.report("nats_unavailable", err)
			c.handBack(ctx, it, jitter(c.cfg.OutageDelay))
			c.m.retried("nats_unavailable")
			c.m.observe(typ, "retried", start)
			return false
		case head == 0 || head > it.seq:
			// Our message is no longer stored: a redelivery of an event
			// that was handled and acknowledged.
			c.log.Debug("stale redelivery acknowledged", "subject", it.subject, "seq", it.seq, "head", head, "delivered", it.delivered)
			_ = it.msg.Ack()
			c.m.observe(typ, "duplicate", start)
			return false
		}
		c.sawHead(it.subject, head)
		if head == it.seq {
			applyStart = checked
			break
		}
		if c.holdsWaiting(it.subject, head) {
			c.log.Debug("waiting behind an older event held here", "subject", it.subject, "seq", it.seq, "head", head)
			return true
		}
		// Another process holds the older event (or it waits for
		// redelivery). Close to the head, wait here for our turn;
		// further back, go back to the stream until about when the
		// conversation gets there (fair.go).
		r := int(it.seq - head)
		if r >= c.cfg.MaxHeldPerConversation {
			h, density := c.shape(ctx, it.subject, head)
			r = rank(it.seq, max(h, head), density)
		}
		c.mu.Lock()
		apply := c.applyTime(c.paces[it.subject])
		c.mu.Unlock()
		if r < c.cfg.MaxHeldPerConversation && c.mayWaitTurn(it, waited) {
			poll = c.pollDelay(poll, apply)
			t := time.Now()
			c.waitTurn(ctx, it.subject, poll)
			waited += time.Since(t)
			continue
		}
		delay, due := c.orderDelay(it.delivered), time.Duration(0)
		if r >= c.cfg.MaxHeldPerConversation {
			delay, due = c.handBackPlan(c.fairDelay(r, apply))
		}
		c.log.Debug("deferred behind an older event held elsewhere", "subject", it.subject, "seq", it.seq, "head", head, "delivered", it.delivered, "rank", r, "delay", delay)
		sent, confirmed := c.handBackUntouched(ctx, it, delay)
		if confirmed && r >= c.cfg.MaxHeldPerConversation {
			c.noteRecallable(it, sent, delay, due)
		}
		c.m.observe(typ, "deferred", start)
		return false
	}

	key, err := stream.ConversationOf(it.subject)
	if err != nil {
		key = it.subject
	}
	d := &Delivery{
		Event:     ev,
		Payload:   payload,
		Key:       key,
		Subject:   it.subject,
		Pos:       Position{Epoch: c.epoch, Seq: it.seq},
		Delivered: it.delivered,
		Stored:    it.stored,
		Header:    it.msg.Headers(),
		it:        it,
		mayAct:    c.mayAct,
		uncertain: !c.claimUntouched(ctx, it) || it.msg.Headers().Get(HeaderReplay) != "",
	}
	for attempt := 1; ; attempt++ {
		d.Attempt = attempt
		err = c.handle(ctx, d, typ)
		var v Verdict
		if err != nil {
			v = c.verdict(err)
		}
		if err == nil || v.Class == ClassDuplicate || v.Class == ClassSkip {
			outcome := "applied"
			switch {
			case err == nil:
			case v.Class == ClassDuplicate:
				outcome = "duplicate"
			default:
				outcome = "skipped"
			}
			if aerr := c.ack(ctx, it); aerr != nil {
				// The ack may be lost; the redelivery will find the
				// handler's fence and be dropped as a duplicate.
				c.log.Warn("ack failed", "subject", it.subject, "seq", it.seq, "err", aerr)
			}
			c.log.Debug("event done", "subject", it.subject, "seq", it.seq, "event", ev.ID, "delivered", it.delivered, "attempt", attempt, "outcome", outcome)
			if outcome == "applied" {
				c.m.lag.Observe(time.Since(ev.Time).Seconds())
				c.outages.over()
				if attempt == 1 {
					c.observeApply(time.Since(applyStart))
					it.applied = waited == 0
				}
			}
			c.m.observe(typ, outcome, start)
			return false
		}
		if v.Uncertain {
			d.uncertain = true
		}
		switch {
		case v.Class == ClassPermanent:
			c.deadLetter(ctx, it, ev, v.Reason, err)
			c.m.observe(typ, "dead_lettered", start)
			return false
		case v.Class == ClassOutage || ctx.Err() != nil:
			c.log.Debug("outage: handing back", "subject", it.subject, "seq", it.seq, "event", ev.ID, "reason", v.Reason, "err", err)
			c.outages.report(v.Reason, err)
			c.handBack(ctx, it, jitter(c.cfg.OutageDelay))
			c.m.retried(v.Reason)
			c.m.observe(typ, "retried", start)
			return false
		case attempt >= c.cfg.MaxAttempts:
			reason := "retries_exhausted"
			if v.Reason == reasonPanic {
				reason = reasonPanic
			}
			c.deadLetter(ctx, it, ev, reason, fmt.Errorf("%d attempts, last: %w", attempt, err))
			c.m.observe(typ, "dead_lettered", start)
			return false
		}
		c.m.retried(v.Reason)
		delay := c.backoff(attempt, v.RetryAfter)
		c.log.Info("retrying", "reason", v.Reason, "attempt", attempt, "delay", delay, "conversation", ev.Subject, "event", ev.ID, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
	}
}

// reasonPanic labels a handler panic: a transient failure that spends the
// budget, so a poison event ends as a dead letter instead of crashing every
// process it is redelivered to.
const reasonPanic = "panic"

// panicError is a recovered handler panic.
type panicError struct{ value any }

func (p *panicError) Error() string { return fmt.Sprintf("handler panicked: %v", p.value) }

// handle runs the handler, turning a panic into a panicError. The stack is
// logged on the first attempt of a delivery only, so a poison event does
// not flood the log.
func (c *Consumer) handle(ctx context.Context, d *Delivery, typ string) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		err = &panicError{value: r}
		c.m.events.WithLabelValues(typ, reasonPanic).Inc()
		if d.Attempt == 1 {
			c.log.Error("handler panicked", "conversation", d.Key, "event", d.Event.ID, "seq", d.Pos.Seq, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			return
		}
		c.log.Error("handler panicked again", "conversation", d.Key, "event", d.Event.ID, "attempt", d.Attempt, "panic", fmt.Sprint(r))
	}()
	return c.h.Handle(ctx, d)
}

// decode reads the envelope and its payload; an event that fails either
// can never be handled.
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
func (c *Consumer) headOf(ctx context.Context, subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	m, err := c.str.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: get head of %s: %w", errNATS, subject, err)
	}
	return m.Sequence, nil
}

// Delays between attempts to confirm an ack or a hand-back, and the bound
// on one attempt. A JetStream leader election takes about a second when a
// server stops (4 to 9 s when it vanishes); the lease bounds the total.
const (
	confirmFirstDelay = 50 * time.Millisecond
	confirmMaxDelay   = time.Second
	confirmTimeout    = 2 * time.Second
)

// ack waits for the server to confirm, so that when the next event of the
// conversation checks the head, this one is gone. An ack that gets no
// answer ("no responders" while the consumer elects a leader) is sent again
// until the new leader answers or the lease can no longer be proven: a lost
// ack of an applied event would keep it at the head of its conversation,
// and the conversation stalled, for the whole ack wait.
func (c *Consumer) ack(ctx context.Context, it *item) error {
	it.acked = true
	return c.confirm(ctx, it, "ack", func(ctx context.Context) error { return it.msg.DoubleAck(ctx) })
}

// handBack gives the message back to JetStream for redelivery after delay,
// confirmed like ack: a NAK is fire-and-forget in nats.go, and one lost in
// a leader election leaves the message pending, held by nobody, for the
// ack wait. The server answers a NAK sent as a request.
//
// It returns when the confirmed NAK was sent, and whether it was confirmed.
func (c *Consumer) handBack(ctx context.Context, it *item, delay time.Duration) (sent time.Time, confirmed bool) {
	it.markHandedBack()
	// JetStream applies a NAK to whichever delivery of the message is
	// pending, not to the one it was sent for. A delivery that may have
	// been superseded must not cut the newer one short, or a third
	// process would apply the event beside its holder (worker
	// TestFaultsKilledWorkers found messages twice in LiveChat: a
	// fairness hand-back of 608 ms, sent for a delivery held through a
	// nats-server restart, met the restarted server's redelivery).
	if !c.leaseHolds(it) {
		// Past the lease the ack wait may have run out and the message
		// gone to another process. Left alone, the delivery that is
		// pending runs its course and the ack wait redelivers what
		// nobody holds.
		c.log.Debug("hand-back not sent: the lease ran out, the delivery may no longer be ours", "subject", it.subject, "seq", it.seq, "delivered", it.delivered, "lease_age", it.leaseAge())
		c.m.staleHandBacks.Inc()
		return
	}
	if !c.js.Conn().IsConnected() || it.conn != c.reconnects() {
		// Delivered before a reconnect: the server we were on may have
		// restarted and redelivered it (a restarted server does within
		// about a second), or a new consumer leader may have. Every
		// holder heartbeats each electionBeat after its reconnect
		// (dispatch), and a heartbeat restarts the ack wait, so a delay
		// longer than that can never cut a holder short; it only brings
		// back what nobody holds.
		delay = max(delay, resendMinDelay)
	}
	if it.msg.Reply() == "" {
		_ = it.msg.NakWithDelay(delay)
		return time.Time{}, false
	}
	body := []byte(fmt.Sprintf(`-NAK {"delay": %d}`, delay.Nanoseconds()))
	nc := c.js.Conn()
	err := c.confirm(ctx, it, "nak", func(ctx context.Context) error {
		sent = time.Now()
		if c.loseHandBack != nil && c.loseHandBack(it.seq) {
			return nil
		}
		_, err := nc.RequestWithContext(ctx, it.msg.Reply(), body)
		if c.loseNakAnswer != nil && err == nil && c.loseNakAnswer(it.seq) {
			err = context.DeadlineExceeded
		}
		if err != nil && !errors.Is(err, nats.ErrNoResponders) {
			// The NAK may have been applied and its answer lost (a slow
			// server): the message may already be redelivered, to us or
			// another process, and JetStream applies a NAK to whatever
			// delivery of the message is pending. Sent again, it would
			// cut that delivery's lease short and a third one would
			// apply the event beside it. Only "no responders" says the
			// NAK reached nobody; otherwise the ack wait redelivers.
			return fmt.Errorf("%w: %w", errNotResent, err)
		}
		return err
	})
	if err != nil {
		c.log.Debug("hand-back not confirmed; the ack wait will redeliver", "subject", it.subject, "seq", it.seq, "err", err)
		if errors.Is(err, errNotResent) {
			// Perhaps applied by a leader that is stopping: an election
			// sends it again, as a confirmed one (election.go), when
			// holders heartbeat every second and the resent delay is
			// longer.
			c.released.add(it.seq, it.msg.Reply(), sent, delay)
		}
		return sent, false
	}
	// Confirmed is not yet replicated: kept to send again if the leader
	// changes (election.go). The time it was sent, not answered, is what
	// places it before an election: an old leader's answer can arrive
	// after the advisory of its successor.
	c.released.add(it.seq, it.msg.Reply(), sent, delay)
	c.log.Debug("handed back", "subject", it.subject, "seq", it.seq, "delivered", it.delivered, "delay", delay)
	return sent, true
}

// errNotResent marks a send whose outcome is unknown and that must not be
// sent again.
var errNotResent = errors.New("outcome unknown, not sent again")

// confirm runs send until it succeeds, the lease on the message can no
// longer be proven, or ctx ends, counting each retry.
func (c *Consumer) confirm(ctx context.Context, it *item, kind string, send func(context.Context) error) error {
	delay := confirmFirstDelay
	for {
		sctx, cancel := context.WithTimeout(ctx, confirmTimeout)
		err := send(sctx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return nil
		}
		if ctx.Err() != nil || !c.leaseHolds(it) || errors.Is(err, errNotResent) {
			return err
		}
		c.log.Debug("not confirmed; sending again", "kind", kind, "subject", it.subject, "seq", it.seq, "lease_age", it.leaseAge(), "err", err)
		c.m.ackRetries.WithLabelValues(kind).Inc()
		sleepCtx(ctx, jitter(delay))
		delay = min(2*delay, confirmMaxDelay)
	}
}

// leaseHolds says whether the process can still prove it holds the
// message: within half the ack wait of the delivery or of the last
// heartbeat that reached a connected client. Past that, JetStream may
// redeliver it.
func (c *Consumer) leaseHolds(it *item) bool { return it.leaseAge() <= c.cfg.AckWait/2 }

// reconnects counts the connection's reconnects, the epoch of every lease
// taken on it.
func (c *Consumer) reconnects() uint64 { return c.js.Conn().Stats().Reconnects }

// mayAct says whether a side effect may start for it: the lease holds, and
// the connection it was delivered on has not been lost since. Acks and
// hand-backs of an event whose effect happened are still sent (leaseHolds),
// since they only tell the server what is true.
func (c *Consumer) mayAct(it *item) bool {
	nc := c.js.Conn()
	return c.leaseHolds(it) && nc.IsConnected() && nc.Stats().Reconnects == it.conn
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (c *Consumer) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := c.cfg.BackoffBase << min(attempt-1, 16)
	d = min(d, c.cfg.BackoffMax)
	d = d/2 + rand.N(d/2+1) // jitter: spread retries of many conversations
	return max(d, retryAfter)
}

func (c *Consumer) orderDelay(delivered uint64) time.Duration {
	d := c.cfg.OrderDelay << min(max(delivered, 1)-1, 4)
	return jitter(min(d, 2*time.Second))
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
