package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
)

// The queue poll tells a waiting user their place in LiveChat's queue as
// it changes. LiveChat sends the position with incoming_chat (the
// gateway relays it) but has no webhook for later changes: they are
// pushed only on a customer's RTM websocket, one connection per customer
// (https://platform.text.com/docs/messaging/customer-chat-api). Holding a
// websocket per queued user does not scale across a fleet, so one worker
// at a time reads each queued chat with the customer API's get_chat
// (thread.queue: position, wait_time, queued_at) every QueuePollInterval,
// and publishes chat.queued only when the position differs from the one
// last told, with the ID the gateway derives for the same thread and
// position, so a position told by both reaches the user once.

// queuePollLockName is the store lock that makes one worker the poller.
const queuePollLockName = "queue-poll"

// queuePositionTTL keeps the last told position well beyond a queue's
// life.
const queuePositionTTL = 48 * time.Hour

// queuePoller polls every QueuePollInterval while it holds the lease.
func (w *Worker) queuePoller(ctx context.Context) {
	if w.cfg.QueuePollInterval <= 0 {
		return
	}
	w.whileLeased(ctx, queuePollLockName, w.cfg.QueuePollInterval, w.cfg.QueuePollInterval, func() {
		st, err := w.pollQueues(ctx)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("queue poll failed", "err", err, "conversations", st.Conversations, "calls", st.Calls)
		} else if err == nil && st.Conversations > 0 {
			w.log.Debug("queue poll done", "conversations", st.Conversations, "calls", st.Calls, "told", st.Relayed, "duration", st.Duration)
		}
	})
}

// pollQueues reads every queued chat's position once. The reads are
// spread over half the interval and at most sweepReaders run at once, so
// a long queue costs LiveChat a steady trickle of calls, not a burst;
// 429s wait out Retry-After (sweepRun.call). SweepStats.Relayed counts
// the chat.queued events published.
func (w *Worker) pollQueues(ctx context.Context) (SweepStats, error) {
	start := time.Now()
	r := &sweepRun{w: w, pub: publisher.New(w.js), stats: SweepStats{Calls: map[string]int{}}}
	queued, err := w.chatsIn(ctx, handoff.ModeQueued)
	if err != nil {
		return r.stats, err
	}
	r.stats.Conversations = len(queued)
	if len(queued) == 0 {
		return r.stats, nil
	}
	pace := min(w.cfg.QueuePollInterval/2/time.Duration(len(queued)), time.Second)
	jobs := make(chan handoff.Conversation)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for range min(sweepReaders, len(queued)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rec := range jobs {
				if err := r.pollQueue(ctx, rec); err != nil {
					errOnce.Do(func() { firstErr = err })
					w.log.Warn("queue poll", "conversation", rec.ID, "chat", rec.ChatID, "err", err)
				}
			}
		}()
	}
	for _, rec := range queued {
		if rec.CustomerID == "" {
			continue
		}
		select {
		case jobs <- rec:
		case <-ctx.Done():
		}
		if sleepCtx(ctx, pace) != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Duration = time.Since(start)
	return r.stats, firstErr
}

// pollQueue reads one chat's queue position and tells the user when it
// changed.
func (r *sweepRun) pollQueue(ctx context.Context, rec handoff.Conversation) error {
	w := r.w
	var chat livechat.Chat
	err := r.call(ctx, "customer_get_chat", func(ctx context.Context) error {
		tok, err := w.tokens.customer(ctx, rec.CustomerID)
		if err != nil {
			return err
		}
		chat, err = w.lc.GetChat(ctx, tok, rec.ChatID, "")
		if livechat.IsType(err, livechat.ErrTypeAuthentication) {
			w.tokens.invalidateCustomer(rec.CustomerID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("queue poll: get_chat: %w", err)
	}
	t := chat.Thread
	if !t.Active || t.Queue == nil || t.Queue.Position <= 0 {
		// Taken or ended: the webhooks and the sweep tell that.
		return nil
	}
	key := "queue.position." + rec.ChatID
	told := t.ID + ":" + strconv.Itoa(t.Queue.Position)
	cur, err := w.st.Value(ctx, key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if cur == told {
		return nil
	}
	data := handoff.ChatQueued{ChatID: rec.ChatID, Position: t.Queue.Position, WaitSeconds: max(t.Queue.WaitTime, 0),
		ReplyTo: rec.ReplyTo, Language: rec.Language}
	rcpt, err := r.publish(ctx, handoff.TypeChatQueued, rec.ID, data, handoff.ChatQueuedID(rec.ChatID, t.ID, t.Queue.Position))
	if err != nil {
		return err
	}
	if !rcpt.Duplicate {
		r.add(func(s *SweepStats) { s.Relayed++ })
	}
	return w.st.SetValue(ctx, key, told, queuePositionTTL)
}
