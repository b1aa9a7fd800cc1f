package ordered

import (
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
}

// recallList is one conversation's recallable hand-backs, by stream
// sequence, and the ones recalled and not delivered here yet.
type recallList struct {
	waiting map[uint64]recallable
	transit map[uint64]time.Time
}

// noteRecallable remembers a fairness hand-back confirmed by the consumer's
// leader, sent at sent with delay, unless the connection changed since
// the delivery.
func (c *Consumer) noteRecallable(it *item, sent time.Time, delay time.Duration) {
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
		l = &recallList{waiting: map[uint64]recallable{}, transit: map[uint64]time.Time{}}
		c.recalls[it.subject] = l
	}
	l.waiting[it.seq] = recallable{reply: it.msg.Reply(), until: sent.Add(delay)}
}

// deliveredRecallable forgets a recallable event delivered to this process. Call with
// c.mu held.
func (c *Consumer) deliveredRecallable(subject string, seq uint64) {
	l := c.recalls[subject]
	if l == nil {
		return
	}
	delete(l.waiting, seq)
	delete(l.transit, seq)
	if len(l.waiting) == 0 && len(l.transit) == 0 {
		delete(c.recalls, subject)
	}
}

// dueRecalls takes the reply subjects of the conversation's hand-backs to
// recall now that acked was acknowledged: the oldest, as many as the
// process may still hold of the conversation, and only those whose rank
// behind the next head is within that limit. Call with c.mu held, after
// q lost acked.
func (c *Consumer) dueRecalls(subject string, q *convQueue, acked uint64) []string {
	l := c.recalls[subject]
	if l == nil || c.stopping {
		return nil
	}
	now := time.Now()
	if now.Before(c.electionUntil) {
		return nil
	}
	for s, at := range l.transit {
		if now.Sub(at) > recallTransit {
			delete(l.transit, s)
		}
	}
	room := c.cfg.MaxHeldPerConversation - len(q.items) - len(l.transit)
	if q.cur != nil {
		room--
	}
	var replies []string
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
			replies = append(replies, l.waiting[s].reply)
			delete(l.waiting, s)
			l.transit[s] = now
		}
	}
	if len(l.waiting) == 0 && len(l.transit) == 0 {
		delete(c.recalls, subject)
	}
	return replies
}

// recall sends the NAKs that bring recalled events back at once, on the
// connection the hand-backs were confirmed on only.
func (c *Consumer) recall(replies []string, conn uint64) {
	nc := c.js.Conn()
	if !nc.IsConnected() || nc.Stats().Reconnects != conn {
		return
	}
	for _, reply := range replies {
		if err := nc.Publish(reply, []byte("-NAK")); err != nil {
			c.log.Debug("recall not sent; the hand-back's delay will bring it", "err", err)
			return
		}
		c.m.fairRecalls.Inc()
	}
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
		for s, at := range l.transit {
			if now.Sub(at) > recallTransit {
				delete(l.transit, s)
			}
		}
		if len(l.waiting) == 0 && len(l.transit) == 0 {
			delete(c.recalls, subject)
		}
	}
}
