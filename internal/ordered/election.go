package ordered

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// The consumer's leader answers a hand-back (a NAK with a delay) as soon as
// it has queued the change for its replicas, not once they have it. A
// leader that stops or steps down with the change still queued loses it:
// the new leader still counts the message as delivered to us, redelivers
// it only when the ack wait (30 s) has passed since that delivery, and its
// conversation waits that long. TestFailoverNATSLeader met it in about
// half its runs: a stop during a backlog left 20 to 170 handed-back events
// ack-pending and held by nobody for 30 s.
//
// So the consumer remembers its recent hand-backs and, when the consumer
// elects a leader, sends them again. A hand-back sent again can meet a
// later delivery of the same message to another process (when the first
// one was not lost): its delay would then cut that process's lease short.
// Therefore every process, when it learns of an election (its advisory, a
// new leader's name in consumer info, or the first delivery after a
// reconnect, since the advisory is lost while disconnected), heartbeats
// what it holds every electionBeat for electionBeats, and a hand-back is sent
// again with at least resendMinDelay, longer than a heartbeat interval: a
// holder's heartbeat, which restarts the ack wait, always reaches the
// leader before the resent delay runs out.
const (
	// releaseMemory is how long a hand-back is remembered: longer than a
	// leader election (up to 9 s when a server vanishes) plus the
	// consumer's queue of changes.
	releaseMemory = 15 * time.Second
	// resendMinDelay is the least delay of a hand-back sent again.
	resendMinDelay = 2 * time.Second
	// electionBeat is the heartbeat interval for electionBeats after an
	// election.
	electionBeat  = time.Second
	electionBeats = 20 * time.Second
)

// release is a hand-back the leader confirmed.
type release struct {
	reply string
	// at is when it was sent.
	at time.Time
	// until is when the message was due back.
	until time.Time
}

// releases are the recent hand-backs of this process, by stream sequence.
type releases struct {
	mu sync.Mutex
	m  map[uint64]release
}

func (r *releases) add(seq uint64, reply string, sent time.Time, delay time.Duration) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[uint64]release{}
	}
	r.m[seq] = release{reply: reply, at: sent, until: sent.Add(delay)}
	// Prune as we go: a backlog hands back hundreds a second.
	if len(r.m)%256 == 0 {
		for s, rel := range r.m {
			if now.Sub(rel.at) > releaseMemory {
				delete(r.m, s)
			}
		}
	}
}

// forget drops seq: it was delivered to this process again.
func (r *releases) forget(seq uint64) {
	r.mu.Lock()
	delete(r.m, seq)
	r.mu.Unlock()
}

// takeBefore removes and returns the hand-backs confirmed before t and
// within releaseMemory of it.
func (r *releases) takeBefore(t time.Time) map[uint64]release {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[uint64]release{}
	for s, rel := range r.m {
		if rel.at.Before(t) {
			if t.Sub(rel.at) <= releaseMemory {
				out[s] = rel
			}
			delete(r.m, s)
		}
	}
	return out
}

// leaderElectedSubject is the advisory JetStream publishes in the account
// when the consumer has elected a leader.
func leaderElectedSubject(stream, consumer string) string {
	return fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.%s.%s", stream, consumer)
}

// watchElections signals c.elected on the consumer's leader-elected
// advisory. The advisory is core NATS, lost while we are disconnected;
// consumerStats also compares the leader's name, at its interval.
func (c *Consumer) watchElections() (stop func(), err error) {
	sub, err := c.js.Conn().Subscribe(leaderElectedSubject(c.cfg.Stream, c.cfg.Durable), func(m *nats.Msg) {
		var adv struct {
			Leader string `json:"leader"`
		}
		_ = json.Unmarshal(m.Data, &adv)
		c.leaderIs(adv.Leader)
	})
	if err != nil {
		return nil, fmt.Errorf("ordered: subscribe to leader elections: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// leaderIs notes the consumer's leader, named by an advisory or by
// consumer info, and an election when it is a new one (or unnamed: an
// advisory we cannot read). It does not block the caller.
func (c *Consumer) leaderIs(name string) {
	c.mu.Lock()
	changed := name == "" || name != c.leader
	if name != "" {
		c.leader = name
	}
	c.mu.Unlock()
	if !changed {
		return
	}
	select {
	case c.elected <- time.Now():
	default:
	}
}

// afterElections runs the two steps above for every election: heartbeats
// each electionBeat for a while (heartbeats reads electionUntil), and the
// hand-backs confirmed before the election sent again.
func (c *Consumer) afterElections(ctx context.Context) {
	for {
		var at time.Time
		select {
		case <-ctx.Done():
			return
		case at = <-c.elected:
		}
		c.mu.Lock()
		c.beatAfterElection()
		c.mu.Unlock()
		c.resendReleases(ctx, c.released.takeBefore(at))
	}
}

// beatAfterElection heartbeats the held messages now and every
// electionBeat for electionBeats. c.mu is held.
func (c *Consumer) beatAfterElection() {
	c.electionUntil = time.Now().Add(electionBeats)
	c.forgetRecalls()
	select {
	case c.beatNow <- struct{}{}:
	default:
	}
}

// resendReleases sends the hand-backs again, each due when it was due
// before, and no sooner than resendMinDelay. One the leader does not
// answer within a few seconds is left to the ack wait.
func (c *Consumer) resendReleases(ctx context.Context, rels map[uint64]release) {
	if len(rels) == 0 {
		return
	}
	nc := c.js.Conn()
	start := time.Now()
	var sent atomic.Int64
	// A few at a time: a backlog hands back hundreds a second, and each
	// waits for the new leader's answer.
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for seq, rel := range rels {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			delay := max(time.Until(rel.until), resendMinDelay)
			body := fmt.Appendf(nil, `-NAK {"delay": %d}`, delay.Nanoseconds())
			deadline := time.Now().Add(5 * time.Second)
			for d := confirmFirstDelay; ctx.Err() == nil; d = min(2*d, confirmMaxDelay) {
				rctx, cancel := context.WithTimeout(ctx, confirmTimeout)
				_, err := nc.RequestWithContext(rctx, rel.reply, body)
				cancel()
				if err == nil {
					sent.Add(1)
					break
				}
				if time.Now().After(deadline) {
					c.log.Debug("hand-back not sent again; the ack wait will redeliver", "seq", seq, "err", err)
					break
				}
				sleepCtx(ctx, jitter(d))
			}
			c.m.ackRetries.WithLabelValues("nak").Inc()
		}()
	}
	wg.Wait()
	c.log.Info("consumer leader elected: hand-backs sent again", "stream", c.cfg.Stream, "consumer", c.cfg.Durable,
		"sent", sent.Load(), "of", len(rels), "took", time.Since(start).Round(time.Millisecond))
}
