package ordered

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Fairness: one conversation's backlog must not fill a process's in-flight
// slots, since its events can only be applied one at a time and the fetch
// loop stops when the slots are full. A process holds at most
// MaxHeldPerConversation events of a conversation, the OLDEST it has; the
// rest go back to the stream with a delay timed from when the conversation
// will need each: its rank behind the head, less what the process may
// hold, times the conversation's observed apply time; and the process
// recalls them when it gets there (recall.go). So a backlog costs a few
// redeliveries per event, not one per event and round, and the
// conversation keeps close to LiveChat's pace.
//
// Keeping the oldest matters: were the newest kept, fresh arrivals would
// fill the freed places while the older ones wait out their delay, fail
// the head-of-subject check and be deferred again and again.
//
// An event close to the head (rank below MaxHeldPerConversation) whose
// older event another process holds is kept and its head checked again
// shortly, instead of being handed back: with several processes a
// conversation's events land on any of them, and the one holding the head
// applies it while the next waits its turn elsewhere, without a round trip
// through the stream's redelivery.

// pace is what the process knows of one conversation's progress.
type pace struct {
	// apply is the EWMA of the time to apply one of its events; 0 until
	// one was applied here.
	apply time.Duration
	// head is the newest head-of-subject sequence seen.
	head uint64
	// density is the share of the stream's sequences between the head and
	// the subject's last message that belong to the subject: ranks are
	// estimated as (seq - head) × density. 0: not known yet.
	density float64
	shapeAt time.Time
	used    time.Time
	// acked is when this process last acknowledged one of its events.
	acked time.Time
	// refreshing is closed when a refresh of the shape ends.
	refreshing chan struct{}
}

const (
	// ewmaWeight is the weight of a new observation in the apply-time EWMA.
	ewmaWeight = 0.2
	// shapeTTL is how long a subject's head and density are reused.
	shapeTTL = time.Second
	// paceIdle is how long an idle conversation's pace is kept.
	paceIdle = 5 * time.Minute
	// minHeldPerConversation keeps one event being applied and the next
	// one waiting; with one alone, an older event inserted in front of an
	// event waiting its turn would have nowhere to go.
	minHeldPerConversation = 2
)

// paceOf returns subject's pace, creating it. Call with c.mu held.
func (c *Consumer) paceOf(subject string) *pace {
	p := c.paces[subject]
	if p == nil {
		p = &pace{}
		c.paces[subject] = p
	}
	p.used = time.Now()
	return p
}

// applyTime is the conversation's time per event: its own EWMA, else the
// process's apply time. Both err short rather than long: an event back
// early goes back once more, one back late stalls its conversation (a
// measure of the fleet's pace, slowed by such stalls, sent events later
// and later when tried). Call with c.mu held.
func (c *Consumer) applyTime(p *pace) time.Duration {
	if p != nil && p.apply > 0 {
		return p.apply
	}
	return c.applyAll
}

// observeApply feeds the apply time of one event to the process's
// estimate, the start of a conversation's. One sample moves it at most to
// twice its value: a slow call (a handoff opening a chat, a retry) must not
// send hand-backs late, since an event back late stalls its conversation
// while one back early only goes back once more.
func (c *Consumer) observeApply(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applyAll = ewma(c.applyAll, min(d, 2*c.applyAll))
}

// cycle measures the conversation's pace after the runner processed it:
// from one applied event to the next when the next was already queued,
// all of the runner's overhead included. Call with c.mu held.
func (c *Consumer) cycle(q *convQueue, it *item) {
	if !it.applied {
		q.lastApplied = time.Time{}
		return
	}
	now := time.Now()
	if !q.lastApplied.IsZero() {
		p := c.paceOf(it.subject)
		if p.apply == 0 {
			p.apply = c.applyAll
		}
		p.apply = ewma(p.apply, min(now.Sub(q.lastApplied), 2*p.apply))
	}
	q.lastApplied = time.Time{}
	if len(q.items) > 0 {
		q.lastApplied = now
	}
}

func ewma(old, v time.Duration) time.Duration {
	return time.Duration((1-ewmaWeight)*float64(old) + ewmaWeight*float64(v))
}

// sawHead records a head-of-subject check's answer.
func (c *Consumer) sawHead(subject string, head uint64) {
	c.mu.Lock()
	p := c.paceOf(subject)
	p.head = max(p.head, head)
	c.mu.Unlock()
}

// shape returns the subject's head and density, from the cache or asked of
// the stream (one caller asks; the others wait for its answer). A failed
// look-up gives density 1 and the oldest event this process holds as the
// head: ranks then err long, which costs the conversation time, never order.
func (c *Consumer) shape(ctx context.Context, subject string, oldestHeld uint64) (head uint64, density float64) {
	for {
		c.mu.Lock()
		p := c.paceOf(subject)
		if p.density > 0 && time.Since(p.shapeAt) < shapeTTL {
			head, density = p.head, p.density
			c.mu.Unlock()
			return head, density
		}
		if wait := p.refreshing; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return oldestHeld, 1
			}
		}
		done := make(chan struct{})
		p.refreshing = done
		c.mu.Unlock()

		h, d, err := c.askShape(ctx, subject)
		c.mu.Lock()
		p.refreshing = nil
		close(done)
		if err != nil {
			c.mu.Unlock()
			c.log.Debug("subject shape unknown", "subject", subject, "err", err)
			if oldestHeld == 0 {
				oldestHeld = p.head
			}
			return oldestHeld, 1
		}
		p.head = max(p.head, h)
		p.density, p.shapeAt = d, time.Now()
		head, density = p.head, p.density
		c.mu.Unlock()
		return head, density
	}
}

// askShape asks the stream for the subject's head, its message count and
// its last sequence: three requests, made at most once per shapeTTL per
// conversation over the limit.
func (c *Consumer) askShape(ctx context.Context, subject string) (head uint64, density float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	head, err = c.headOf(ctx, subject)
	if err != nil || head == 0 {
		return head, 1, err
	}
	last, err := c.str.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return head, 1, nil
		}
		return 0, 0, err
	}
	info, err := c.str.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, 0, err
	}
	count := info.State.Subjects[subject]
	span := last.Sequence - head + 1
	if last.Sequence < head || count == 0 {
		return head, 1, nil
	}
	return head, min(1, float64(count)/float64(span)), nil
}

// rank estimates how many events of subject come before seq in the stream.
func rank(seq, head uint64, density float64) int {
	if seq <= head {
		return 0
	}
	return int(float64(seq-head) * density)
}

// fairDelay is how long an event of rank r waits in the stream: until
// about when the events before it, less those a process may hold, are
// applied, so it returns while its conversation still has
// MaxHeldPerConversation - 2 events to apply before it (a margin of one,
// so it does not arrive just before the place it needs is free). At least
// the apply time, at most maxFairDelay: a longer wait would trust an old
// estimate too far (the event comes back, is ranked again and waits again).
func (c *Consumer) fairDelay(r int, apply time.Duration) time.Duration {
	ahead := r - c.cfg.MaxHeldPerConversation + 2
	d := time.Duration(max(ahead, 1)) * apply
	return min(max(d, apply, minFairDelay), c.maxFairDelay())
}

// minFairDelay keeps a hand-back from coming straight back when nothing
// was applied yet to learn the pace from.
const minFairDelay = 10 * time.Millisecond

// maxFairDelay bounds one hand-back: below the ack wait, so that an event
// handed back for a conversation's backlog is never out of sight longer
// than one lost by a crashed process would be.
func (c *Consumer) maxFairDelay() time.Duration { return c.cfg.AckWait * 2 / 3 }

// handBackExcess hands back, timed, the events dispatch took out of a
// conversation's queue because the process held enough of it.
func (c *Consumer) handBackExcess(ctx context.Context, subject string, excess []*item, oldestHeld uint64) {
	defer c.wg.Done()
	head, density := c.shape(ctx, subject, oldestHeld)
	c.mu.Lock()
	apply := c.applyTime(c.paces[subject])
	c.mu.Unlock()
	for _, it := range excess {
		delay, due := c.handBackPlan(c.fairDelay(rank(it.seq, head, density), apply))
		if sent, confirmed := c.handBackUntouched(ctx, it, delay); confirmed {
			c.noteRecallable(it, sent, delay, due)
		}
		c.m.fairHandBacks.Inc()
		c.done(it)
	}
}

// pollDelay is the next wait of an event waiting its turn: from half the
// apply time, doubling, to 4 × OrderDelay.
func (c *Consumer) pollDelay(prev, apply time.Duration) time.Duration {
	if prev == 0 {
		return min(max(apply/2, time.Millisecond), c.cfg.OrderDelay)
	}
	return min(2*prev, 4*c.cfg.OrderDelay)
}

// mayWaitTurn says whether an event whose older event is held elsewhere
// may stay here waiting for its turn: not while stopping, not past
// waitLimit in all, and not while the slots are scarce. A single process
// whose slots were all taken by waiting events could not fetch the older
// events they wait for.
func (c *Consumer) mayWaitTurn(it *item, waited time.Duration) bool {
	if waited >= 16*c.cfg.OrderDelay || !c.leaseHolds(it) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.stopping && len(c.held) < c.cfg.MaxInFlight-c.cfg.MaxInFlight/4
}

// waitTurn waits d, or less when an older event of the conversation joins
// this process's queue.
func (c *Consumer) waitTurn(ctx context.Context, subject string, d time.Duration) {
	c.mu.Lock()
	var wake chan struct{}
	if q := c.convs[subject]; q != nil {
		wake = q.wake
	}
	c.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-wake:
	case <-ctx.Done():
	}
}

// handBackUntouched hands it back before any attempt. When no earlier
// delivery reached a handler either, it first marks so in the consumer's
// marks bucket (key <stream epoch>.<seq>, value the delivery count), so
// that whichever process gets the next delivery knows no attempt can have
// reached the downstream, and the event is not uncertain. Without this,
// every event of a backlog would be looked up downstream before it is
// applied (for LiveChat, two more calls per event, tripling a hot
// conversation's cost).
func (c *Consumer) handBackUntouched(ctx context.Context, it *item, delay time.Duration) (sent time.Time, confirmed bool) {
	if marks := c.marksKV(); marks != nil && c.resolveUntouched(ctx, it) {
		mctx, cancel := context.WithTimeout(ctx, markTimeout)
		rev, err := marks.Put(mctx, c.markKey(it.seq), []byte(strconv.FormatUint(it.delivered, 10)))
		cancel()
		it.markPut = rev
		if err != nil {
			c.log.Debug("untouched mark not written; the next delivery will be uncertain", "subject", it.subject, "seq", it.seq, "err", err)
		}
	}
	return c.handBack(ctx, it, delay)
}

// markTimeout bounds a marks bucket request: a mark missing only makes the
// next delivery uncertain.
const markTimeout = 500 * time.Millisecond

func (c *Consumer) markKey(seq uint64) string { return fmt.Sprintf("%d.%d", c.epoch, seq) }

// resolveUntouched says whether no delivery of it before this one reached a
// handler: it is the first, or the previous one was handed back untouched
// and marked so.
func (c *Consumer) resolveUntouched(ctx context.Context, it *item) bool {
	if it.delivered <= 1 {
		return true
	}
	if it.markRev != 0 {
		return true
	}
	marks := c.marksKV()
	if marks == nil {
		return false
	}
	mctx, cancel := context.WithTimeout(ctx, markTimeout)
	defer cancel()
	e, err := marks.Get(mctx, c.markKey(it.seq))
	if err != nil {
		return false
	}
	n, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil || n != it.delivered-1 {
		return false
	}
	it.markRev = e.Revision()
	return true
}

// claimUntouched is resolveUntouched before an attempt: the mark that
// vouches for the delivery is deleted first (only if unchanged), so no
// later delivery can lean on it once this attempt may have acted, even
// when a failover makes the server count a delivery again.
func (c *Consumer) claimUntouched(ctx context.Context, it *item) bool {
	if !c.resolveUntouched(ctx, it) {
		return false
	}
	if it.delivered <= 1 {
		return true
	}
	mctx, cancel := context.WithTimeout(ctx, markTimeout)
	defer cancel()
	return c.marksKV().Delete(mctx, c.markKey(it.seq), jetstream.LastRevision(it.markRev)) == nil
}

// openMarks opens (creating or updating) the bucket of untouched marks of
// this consumer: in memory, as replicated as the stream, each mark kept
// long enough for the longest hand-back. It runs beside the consumer and
// tries again until it succeeds: creating a bucket needs the cluster's
// meta leader, and a worker must not wait for one to start consuming.
// Until then, events handed back are uncertain in other processes.
func (c *Consumer) openMarks(ctx context.Context) {
	cfg := jetstream.KeyValueConfig{
		Bucket:      MarksBucket(c.cfg.Durable),
		Description: "events of " + c.cfg.Stream + " handed back by " + c.cfg.Durable + " before any attempt (internal/ordered fairness)",
		TTL:         2*c.maxFairDelay() + c.cfg.AckWait,
		Storage:     jetstream.MemoryStorage,
		Replicas:    max(c.str.CachedInfo().Config.Replicas, 1),
	}
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := c.js.CreateOrUpdateKeyValue(octx, cfg)
		cancel()
		if err == nil {
			c.marks.Store(&kv)
			return
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("marks bucket unavailable, trying again: until then events handed back for fairness are uncertain in other processes", "bucket", cfg.Bucket, "err", err)
		sleepCtx(ctx, wait)
	}
}

// marksKV is the marks bucket, or nil while it is not open.
func (c *Consumer) marksKV() jetstream.KeyValue {
	if kv := c.marks.Load(); kv != nil {
		return *kv
	}
	return nil
}

// MarksBucket names the key-value bucket of a durable consumer's untouched
// marks.
func MarksBucket(durable string) string {
	b := []byte("handoff_untouched_" + durable)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// prunePaces forgets conversations idle for paceIdle.
func (c *Consumer) prunePaces() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s, p := range c.paces {
		if time.Since(p.used) > paceIdle && p.refreshing == nil {
			delete(c.paces, s)
		}
	}
}
