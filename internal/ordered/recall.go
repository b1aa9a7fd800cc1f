package ordered

import (
	"context"
	"sort"
	"time"
)

// Recall: a conversation over the limit has most of its events waiting in
// the stream on a timed hand-back, and a time is only an estimate. One
// back late leaves its conversation with nothing to apply (measured: a
// hot conversation stalled for 46 % of its time, mostly for events handed
// back while the process was busier and slower than later), and erring
// short instead brings events back again and again before their turn.
// So a process also remembers the hand-backs it made for fairness and,
// when it applies an event of the conversation, sends a plain NAK on the
// reply subject of those that now fall within what it may hold: JetStream
// redelivers them at once, and the window is refilled as it drains.
//
// A NAK acts on whatever delivery of the message is pending, so one that
// reached the server after the hand-back's delay ran out could cut short
// the lease of a process that received the event meanwhile. A recall is
// therefore sent only while the hand-back's delay has at least
// recallMargin left (counted from when the hand-back was sent, so no later
// than the server's own deadline), on the connection the hand-back was
// confirmed on, and never across a consumer leader election, whose new
// leader may not know the hand-back (election.go); those events come back
// on their timed delay, as before.

const (
	// recallMargin is the least time a hand-back's delay must still run
	// for it to be recalled: far more than a NAK takes to reach the
	// server on a connected client.
	recallMargin = time.Second
	// recallTransit is how long a recalled event counts as on its way to
	// this process; with several processes it may go to another one.
	recallTransit = time.Second
)

// recallable is a fairness hand-back this process may recall.
type recallable struct {
	reply string
	// until is when its delay runs out, counted from when it was sent.
	until time.Time
	// delivered and markRev are the delivery handed back and the
	// revision of its untouched mark, if one was written.
	delivered, markRev uint64
	// recalled is when it was recalled (zero while it waits).
	recalled time.Time
	// due, when set, is when the conversation's pace said it would be
	// needed: the delay itself runs longer (see handBackPlan), and a
	// process that is not applying the conversation recalls it then.
	due time.Time
}

// recallList is one conversation's recallable hand-backs, by stream
// sequence, and the ones recalled and not delivered here yet.
type recallList struct {
	waiting map[uint64]recallable
	transit map[uint64]recallable
}

// handBackPlan turns the time until a handed-back event is needed, by the
// conversation's pace, into the delay asked of JetStream and the time
// after which the process recalls it if it is not applying the
// conversation itself (0: no such time). An estimate that errs long
// stalls the conversation and one that errs short costs a redelivery;
// with recall the delay can err long, by a quarter and the recall margin:
// the process applying the conversation recalls the event when it reaches
// it, and one that is not (with several processes the conversation's head
// moves between them) recalls it at the estimate, as the delay itself
// did before. Past what the longest delay allows, or too short to be
// recalled, the delay is the estimate.
func (c *Consumer) handBackPlan(need time.Duration) (delay, due time.Duration) {
	long := need + need/4 + recallMargin
	if need < recallMargin || long > c.maxFairDelay() {
		return need, 0
	}
	return long, need
}

// noteRecallable remembers a fairness hand-back confirmed by the consumer's
// leader, sent at sent with delay, unless the connection changed since
// the delivery; due is handBackPlan's.
func (c *Consumer) noteRecallable(it *item, sent time.Time, delay, due time.Duration) {
	if delay < recallMargin || it.msg.Reply() == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if it.conn != c.conn || it.conn != c.reconnects() || c.stopping || time.Now().Before(c.electionUntil) {
		return
	}
	l := c.recalls[it.subject]
	if l == nil {
		l = &recallList{waiting: map[uint64]recallable{}, transit: map[uint64]recallable{}}
		c.recalls[it.subject] = l
	}
	r := recallable{reply: it.msg.Reply(), until: sent.Add(delay), delivered: it.delivered, markRev: it.markPut}
	if due > 0 {
		r.due = sent.Add(due)
	}
	l.waiting[it.seq] = r
}

// deliveredRecallable forgets a recallable event delivered to this process
// again. When this is the delivery right after the one it handed back, the
// mark it wrote then vouches for it: its revision is kept on the item, so
// the claim before the attempt deletes it (only if unchanged) without
// reading it first, one request less per event of a backlog. Call with
// c.mu held.
func (c *Consumer) deliveredRecallable(it *item) {
	l := c.recalls[it.subject]
	if l == nil {
		return
	}
	r, ok := l.waiting[it.seq]
	if !ok {
		r, ok = l.transit[it.seq]
	}
	if ok && r.markRev != 0 && it.delivered == r.delivered+1 {
		it.markRev = r.markRev
	}
	delete(l.waiting, it.seq)
	delete(l.transit, it.seq)
	if len(l.waiting) == 0 && len(l.transit) == 0 {
		delete(c.recalls, it.subject)
	}
}

// dueRecalls takes the reply subjects of the conversation's hand-backs to
// recall now that acked was acknowledged: the oldest, as many as the
// process may still hold of the conversation, and only those whose rank
// behind the next head is within that limit. Call with c.mu held, after
// q lost acked.
func (c *Consumer) dueRecalls(subject string, q *convQueue, acked uint64) []recallable {
	l := c.recalls[subject]
	if l == nil || c.stopping {
		return nil
	}
	now := time.Now()
	if now.Before(c.electionUntil) {
		return nil
	}
	for s, r := range l.transit {
		if now.Sub(r.recalled) > recallTransit {
			delete(l.transit, s)
		}
	}
	room := c.cfg.MaxHeldPerConversation - len(q.items) - len(l.transit)
	if q.cur != nil {
		room--
	}
	var replies []recallable
	if room > 0 {
		seqs := make([]uint64, 0, len(l.waiting))
		for s, r := range l.waiting {
			if r.until.Sub(now) < recallMargin {
				delete(l.waiting, s)
				continue
			}
			seqs = append(seqs, s)
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		density := 1.0
		if p := c.paces[subject]; p != nil && p.density > 0 {
			density = p.density
		}
		for _, s := range seqs {
			if len(replies) == room || rank(s, acked+1, density) >= c.cfg.MaxHeldPerConversation {
				break
			}
			r := l.waiting[s]
			replies = append(replies, r)
			delete(l.waiting, s)
			r.recalled = now
			l.transit[s] = r
		}
	}
	if len(l.waiting) == 0 && len(l.transit) == 0 {
		delete(c.recalls, subject)
	}
	return replies
}

// recall sends the NAKs that bring recalled events back at once, on the
// connection the hand-backs were confirmed on only. The margin and the
// election window are checked again right before each NAK, not only when
// it was chosen: a process starved of CPU between the two (CI machines
// run at a load of 20 on two cores) must not send a recall whose delay
// may have run out meanwhile, since it would reach whichever delivery of
// the event is pending.
func (c *Consumer) recall(rs []recallable, conn uint64) {
	nc := c.js.Conn()
	for _, r := range rs {
		c.mu.Lock()
		late := time.Until(r.until) < recallMargin || time.Now().Before(c.electionUntil) || c.stopping
		c.mu.Unlock()
		if late || !nc.IsConnected() || nc.Stats().Reconnects != conn {
			continue // its delay brings it back
		}
		if err := nc.Publish(r.reply, []byte("-NAK")); err != nil {
			c.log.Debug("recall not sent; the hand-back's delay will bring it", "err", err)
			return
		}
		c.m.fairRecalls.Inc()
	}
}

// recallTick is how often recallDue looks for hand-backs due.
const recallTick = 50 * time.Millisecond

// recallDue recalls, every recallTick, the hand-backs whose estimate is due
// (recallable.due) of the conversations this process is not applying.
func (c *Consumer) recallDue(ctx context.Context) {
	t := time.NewTicker(recallTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		if len(c.recalls) == 0 {
			c.mu.Unlock()
			continue
		}
		replies := c.dueByTime(time.Now())
		conn := c.conn
		c.mu.Unlock()
		if len(replies) > 0 {
			c.recall(replies, conn)
		}
	}
}

// dueByTime takes the reply subjects of the hand-backs due at now of the
// conversations not applied here lately. Call with c.mu held.
func (c *Consumer) dueByTime(now time.Time) []recallable {
	if c.stopping || now.Before(c.electionUntil) {
		return nil
	}
	var replies []recallable
	for subject, l := range c.recalls {
		if c.applying(subject, now) {
			continue
		}
		for s, r := range l.waiting {
			if r.due.IsZero() || r.due.After(now) {
				continue
			}
			delete(l.waiting, s)
			if r.until.Sub(now) >= recallMargin {
				replies = append(replies, r)
				r.recalled = now
				l.transit[s] = r
			}
		}
		if len(l.waiting) == 0 && len(l.transit) == 0 {
			delete(c.recalls, subject)
		}
	}
	return replies
}

// applying says whether this process applied an event of subject within
// the last few of its apply times: then its own applies recall the
// conversation's hand-backs as it reaches them. Call with c.mu held.
func (c *Consumer) applying(subject string, now time.Time) bool {
	p := c.paces[subject]
	if p == nil || p.acked.IsZero() {
		return false
	}
	window := min(max(4*c.applyTime(p), 200*time.Millisecond), time.Second)
	return now.Sub(p.acked) < window
}

// forgetRecalls drops every recallable hand-back: after a consumer leader
// election or a reconnect, the server's view of them is not known. Call
// with c.mu held.
func (c *Consumer) forgetRecalls() { clear(c.recalls) }

// pruneRecalls forgets hand-backs whose delay ran out. Call with c.mu held.
func (c *Consumer) pruneRecalls() {
	now := time.Now()
	for subject, l := range c.recalls {
		for s, r := range l.waiting {
			if r.until.Before(now) {
				delete(l.waiting, s)
			}
		}
		for s, r := range l.transit {
			if now.Sub(r.recalled) > recallTransit {
				delete(l.transit, s)
			}
		}
		if len(l.waiting) == 0 && len(l.transit) == 0 {
			delete(c.recalls, subject)
		}
	}
}
