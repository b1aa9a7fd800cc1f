package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The reconciliation sweep repairs what LiveChat's webhooks did not
// deliver. LiveChat retries a webhook only about three times within a
// minute, so a gateway down longer loses agent replies and chat ends for
// good; the sweep reads every live conversation's chat from LiveChat
// (Agent Chat API, batched) and publishes what is missing on HANDOFF_OUT
// with the same event IDs the webhook relay derives, so JetStream and the
// outbound consumer keep one copy of anything relayed twice.
//
// One worker sweeps at a time: the sweeper takes the store lock "sweep"
// with a time-to-live of one interval and does not release it, so the
// other workers' ticks inside the interval find it taken.

// sweepLockName is the store lock that makes one worker the sweeper.
const sweepLockName = "sweep"

// sweepPageSize is list_chats' largest page: the fewer calls the better.
const sweepPageSize = 100

// sweepReaders is how many chats' threads are read at once.
const sweepReaders = 4

// sweepCursorTTL keeps a chat's sweep cursor well beyond a chat's life.
const sweepCursorTTL = 48 * time.Hour

// sweepMaxRetries bounds how often one LiveChat call is retried inside a
// sweep (429s, 5xx); the next sweep starts over anyway.
const sweepMaxRetries = 5

// SweepStats is what one sweep did.
type SweepStats struct {
	// Conversations is how many live conversations (queued or agent, with
	// a chat) the sweep covered.
	Conversations int
	// Calls counts LiveChat calls by action ("list_chats", "get_chat").
	Calls map[string]int
	// Relayed is how many agent messages the sweep published that no
	// webhook had (JetStream had not stored their IDs yet).
	Relayed int
	// Closed is how many missed chat ends were repaired; Joined how many
	// conversations moved from queued to agent.
	Closed, Joined int
	Duration       time.Duration
}

// sweeper sweeps right after start and then every interval, when it holds
// the sweep lease.
func (w *Worker) sweeper(ctx context.Context) {
	w.whileLeased(ctx, sweepLockName, 0, w.cfg.SweepInterval, func() {
		st, err := w.sweep(ctx)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("sweep failed", "err", err, "conversations", st.Conversations, "calls", st.Calls)
		} else if err == nil {
			w.log.Info("sweep done", "conversations", st.Conversations, "calls", st.Calls, "relayed", st.Relayed,
				"closed", st.Closed, "joined", st.Joined, "duration", st.Duration)
		}
	})
}

// whileLeased runs fn after first and then every interval, each time only
// if this worker takes the store lock name: one worker in the fleet runs
// it per interval. The lease is not released: it expires after one
// interval, so no other worker runs fn again before then.
func (w *Worker) whileLeased(ctx context.Context, name string, first, interval time.Duration, fn func()) {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, ok, err := w.st.Lock(ctx, name, interval)
		switch {
		case err != nil:
			w.log.Warn("take the lease", "lease", name, "err", err)
		case ok:
			fn()
		}
		t.Reset(interval)
	}
}

// SweepOnce runs one reconciliation sweep outside Run, without the lease:
// for measuring a sweep, or a one-off repair.
func SweepOnce(ctx context.Context, cfg Config, js jetstream.JetStream, lc *livechat.Client, st store.Store) (SweepStats, error) {
	w, err := New(cfg, js, lc, st, prometheus.NewRegistry(), nil)
	if err != nil {
		return SweepStats{}, err
	}
	return w.sweep(ctx)
}

// sweepRun is one sweep's state.
type sweepRun struct {
	w     *Worker
	tok   string
	pub   *publisher.Publisher
	mu    sync.Mutex
	stats SweepStats
}

// sweep reconciles every live conversation once.
func (w *Worker) sweep(ctx context.Context) (SweepStats, error) {
	start := time.Now()
	r := &sweepRun{w: w, pub: publisher.New(w.js), stats: SweepStats{Calls: map[string]int{}}}
	err := r.run(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Duration = time.Since(start)
	w.m.sweepDuration.Observe(r.stats.Duration.Seconds())
	return r.stats, err
}

func (r *sweepRun) run(ctx context.Context) error {
	w := r.w
	live, err := w.liveChats(ctx)
	if err != nil {
		return err
	}
	r.stats.Conversations = len(live)
	if len(live) == 0 {
		return nil
	}
	if r.tok, err = w.tokens.agentToken(ctx); err != nil {
		return fmt.Errorf("sweep: agent token: %w", err)
	}

	jobs := make(chan sweepJob)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for range sweepReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := r.reconcile(ctx, j.rec, j.sum); err != nil {
					errOnce.Do(func() { firstErr = err })
					w.log.Warn("sweep: reconcile", "conversation", j.rec.ID, "chat", j.rec.ChatID, "err", err)
				}
			}
		}()
	}

	// Page through the license's chats, 100 at a time, until every live
	// chat was seen. The pages are spread over half the interval so a
	// large sweep does not burst into LiveChat's rate limits.
	pages := (len(live) + sweepPageSize - 1) / sweepPageSize
	pace := min(w.cfg.SweepInterval/2/time.Duration(pages), time.Second)
	seen := make(map[string]bool, len(live))
	req := livechat.AgentListChatsRequest{Limit: sweepPageSize}
	var listErr error
	for len(seen) < len(live) && ctx.Err() == nil {
		var page livechat.AgentChatsPage
		listErr = r.call(ctx, "list_chats", func(ctx context.Context) (err error) {
			page, err = w.lc.AgentListChats(ctx, r.tok, req)
			return err
		})
		if listErr != nil {
			break
		}
		for _, sum := range page.Chats {
			if rec, ok := live[sum.ID]; ok && !seen[sum.ID] {
				seen[sum.ID] = true
				jobs <- sweepJob{rec: rec, sum: sum}
			}
		}
		if page.NextPageID == "" {
			break
		}
		req = livechat.AgentListChatsRequest{PageID: page.NextPageID}
		if err := sleepCtx(ctx, pace); err != nil {
			break
		}
	}
	// A live chat list_chats never showed (archived, or beyond the pages)
	// is read on its own.
	if listErr == nil {
		for chatID, rec := range live {
			if seen[chatID] || ctx.Err() != nil {
				continue
			}
			var chat livechat.Chat
			err := r.call(ctx, "get_chat", func(ctx context.Context) (err error) {
				chat, err = w.lc.AgentGetChat(ctx, r.tok, chatID, "")
				return err
			})
			if livechat.IsType(err, livechat.ErrTypeNotFound) {
				continue
			}
			if err != nil {
				listErr = err
				break
			}
			jobs <- sweepJob{rec: rec, sum: summaryOf(chat), chat: &chat}
		}
	}
	close(jobs)
	wg.Wait()
	if listErr != nil {
		return fmt.Errorf("sweep: %w", listErr)
	}
	return firstErr
}

type sweepJob struct {
	rec  handoff.Conversation
	sum  livechat.AgentChatSummary
	chat *livechat.Chat // already read, when list_chats did not show it
}

// liveChats returns the conversations with a live chat, by chat ID.
func (w *Worker) liveChats(ctx context.Context) (map[string]handoff.Conversation, error) {
	return w.chatsIn(ctx, handoff.ModeQueued, handoff.ModeAgent)
}

// chatsIn returns the conversations in modes (queued or agent) that have
// a chat, by chat ID.
func (w *Worker) chatsIn(ctx context.Context, modes ...handoff.Mode) (map[string]handoff.Conversation, error) {
	var ids []string
	for _, m := range modes {
		got, err := w.st.ConversationsInMode(ctx, m)
		if err != nil {
			return nil, fmt.Errorf("sweep: %w", err)
		}
		ids = append(ids, got...)
	}
	out := make(map[string]handoff.Conversation, len(ids))
	var mu sync.Mutex
	var firstErr error
	idx := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range idx {
				rec, err := w.st.Conversation(ctx, id)
				mu.Lock()
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = err
					}
				case rec.ChatID != "" && slices.Contains(modes, rec.Mode):
					out[rec.ChatID] = rec
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		idx <- id
	}
	close(idx)
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("sweep: read conversations: %w", firstErr)
	}
	return out, nil
}

// summaryOf makes a list_chats entry out of a get_chat answer.
func summaryOf(c livechat.Chat) livechat.AgentChatSummary {
	t := c.Thread
	return livechat.AgentChatSummary{ID: c.ID, Users: c.Users,
		LastThreadSummary: &livechat.ThreadSummary{ID: t.ID, Active: t.Active, CreatedAt: t.CreatedAt, Queue: t.Queue, UserIDs: threadUsers(c)}}
}

func threadUsers(c livechat.Chat) []string {
	var ids []string
	for _, u := range c.Users {
		if u.Present || u.Type == "customer" {
			ids = append(ids, u.ID)
		}
	}
	return ids
}

// call runs one LiveChat call of the sweep, counting it and waiting out
// 429s (Retry-After when given) and other retryable failures.
func (r *sweepRun) call(ctx context.Context, action string, fn func(context.Context) error) error {
	var err error
	for attempt := 0; attempt <= sweepMaxRetries; attempt++ {
		r.count(action)
		if err = fn(ctx); err == nil || !livechat.IsRetryable(err) {
			return err
		}
		wait := livechat.RetryAfter(err)
		if wait <= 0 {
			wait = r.w.cfg.BackoffBase << attempt
		}
		if err := sleepCtx(ctx, min(wait, r.w.cfg.SweepInterval)); err != nil {
			return err
		}
	}
	return err
}

func (r *sweepRun) count(action string) {
	r.mu.Lock()
	r.stats.Calls[action]++
	r.mu.Unlock()
	r.w.m.sweepCalls.WithLabelValues(action).Inc()
}

func (r *sweepRun) add(f func(*SweepStats)) {
	r.mu.Lock()
	f(&r.stats)
	r.mu.Unlock()
}

// relayable are the event types the webhook relay turns into
// message.agent.
func relayable(ev livechat.Event, customerID string) bool {
	vis := ev.Visibility
	if vis == "" {
		vis = ev.Recipients
	}
	return ev.AuthorID != customerID && vis == "all" && livechat.AgentText(ev) != ""
}

// reconcile repairs one conversation from its chat's latest thread:
// missed agent messages, a missed agent join, a missed end.
func (r *sweepRun) reconcile(ctx context.Context, rec handoff.Conversation, sum livechat.AgentChatSummary) error {
	t := sum.LastThreadSummary
	if t == nil {
		return nil
	}
	w := r.w
	// The newest relayable event of the thread, from the summary: when the
	// sweep already went through it, nothing new needs reading.
	var newest livechat.Event
	for _, le := range sum.LastEventPerType {
		if le.ThreadID == t.ID && relayable(le.Event, rec.CustomerID) && (newest.ID == "" || eventAfter(le.Event, newest)) {
			newest = le.Event
		}
	}
	agentWrote := false
	if newest.ID != "" {
		cursorKey := "sweep.cursor." + rec.ChatID
		cur, err := w.st.Value(ctx, cursorKey)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if cur != newest.ID {
			var chat livechat.Chat
			err := r.call(ctx, "get_chat", func(ctx context.Context) (err error) {
				chat, err = w.lc.AgentGetChat(ctx, r.tok, rec.ChatID, t.ID)
				return err
			})
			if err != nil {
				return err
			}
			for _, ev := range chat.Thread.Events {
				if !relayable(ev, rec.CustomerID) {
					continue
				}
				agentWrote = true
				if err := r.publishMessage(ctx, rec, ev, agentName(chat.Users, ev.AuthorID)); err != nil {
					return err
				}
			}
			if err := w.st.SetValue(ctx, cursorKey, newest.ID, sweepCursorTTL); err != nil {
				return err
			}
		} else {
			agentWrote = true
		}
	}
	joined := agentWrote
	for _, id := range t.UserIDs {
		if id != rec.CustomerID {
			joined = true
		}
	}
	if t.Active && joined && rec.Mode == handoff.ModeQueued {
		moved, err := w.moveMode(ctx, rec.ID, rec.ChatID, handoff.ModeAgent, handoff.ModePending, handoff.ModeQueued)
		if err != nil {
			return err
		}
		if moved {
			r.add(func(s *SweepStats) { s.Joined++ })
		}
		if err := w.reachFunnel(ctx, rec.ID, rec.ChatID, handoff.StageAgentJoined); err != nil {
			return err
		}
	}
	if t.Active && !joined && rec.Mode == handoff.ModeQueued && !t.CreatedAt.IsZero() && time.Since(t.CreatedAt) >= w.cfg.PickupTimeout {
		return r.pickupTimeout(ctx, rec, t)
	}
	if !t.Active {
		closed := handoff.ChatClosed{ChatID: rec.ChatID, ThreadID: t.ID, ReplyTo: rec.ReplyTo, Language: rec.Language}
		if _, err := r.publish(ctx, handoff.TypeChatClosed, rec.ID, closed, handoff.ChatClosedID(rec.ChatID, t.ID)); err != nil {
			return err
		}
		moved, err := w.moveMode(ctx, rec.ID, rec.ChatID, handoff.ModeClosed, handoff.ModePending, handoff.ModeQueued, handoff.ModeAgent)
		if err != nil {
			return err
		}
		if moved {
			r.add(func(s *SweepStats) { s.Closed++ })
			w.log.Info("sweep: repaired a missed chat end", "conversation", rec.ID, "chat", rec.ChatID, "thread", t.ID)
		}
	}
	return nil
}

// Pickup actions (Config.PickupAction).
const (
	PickupWait    = "wait"
	PickupBot     = "bot"
	PickupMessage = "message"
)

// pickupTimeout acts once per thread on a chat no agent picked up in
// time: the user is told (agents.unavailable, reason pickup_timeout,
// worded per language by the texts the delivery uses) and, unless the
// action is "wait", the chat is closed and the conversation goes back to
// the bot; with "message" the closed chat and its transcript stay in
// LiveChat's archive for an agent to follow up.
func (r *sweepRun) pickupTimeout(ctx context.Context, rec handoff.Conversation, t *livechat.ThreadSummary) error {
	w := r.w
	first, err := w.st.Remember(ctx, "pickup."+rec.ChatID+"."+t.ID, 48*time.Hour)
	if err != nil || !first {
		return err
	}
	back := w.cfg.PickupAction != PickupWait
	if back {
		// Abandoned before the chat is closed: the chat.closed the close
		// causes then finds the handoff ended and counts nothing.
		if err := w.abandonFunnel(ctx, rec.ID, rec.ChatID, handoff.AbandonPickupTimeout); err != nil {
			_ = w.st.Forget(ctx, "pickup."+rec.ChatID+"."+t.ID)
			return err
		}
		err := r.call(ctx, "deactivate_chat", func(ctx context.Context) error {
			return w.lc.AgentDeactivateChat(ctx, r.tok, rec.ChatID)
		})
		if err != nil && !livechat.IsChatInactive(err) {
			_ = w.st.Forget(ctx, "pickup."+rec.ChatID+"."+t.ID)
			return err
		}
	}
	reason := handoff.ReasonPickupTimeout
	if w.cfg.PickupAction == PickupMessage {
		reason = handoff.ReasonPickupMessageLeft
	}
	ev := handoff.AgentsUnavailable{ChatID: rec.ChatID, Reason: reason, Back: back, ReplyTo: rec.ReplyTo, Language: rec.Language}
	if _, err := r.publish(ctx, handoff.TypeAgentsUnavailable, rec.ID, ev, handoff.DerivedID("livechat", "pickup_timeout", rec.ChatID, t.ID)); err != nil {
		return err
	}
	if back {
		if _, err := w.moveMode(ctx, rec.ID, rec.ChatID, handoff.ModeClosed, handoff.ModePending, handoff.ModeQueued); err != nil {
			return err
		}
	}
	w.log.Info("sweep: pickup timeout", "conversation", rec.ID, "chat", rec.ChatID, "action", w.cfg.PickupAction)
	return nil
}

// eventAfter orders events of one thread: LiveChat's event IDs are
// "<thread>_<n>", so within a thread the number orders them.
func eventAfter(a, b livechat.Event) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return seqOf(a.ID) > seqOf(b.ID)
}

func seqOf(id string) int {
	i := strings.LastIndexByte(id, '_')
	n := 0
	for _, c := range id[i+1:] {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func agentName(users []livechat.User, id string) string {
	for _, u := range users {
		if u.ID == id {
			return u.Name
		}
	}
	return ""
}

func (r *sweepRun) publishMessage(ctx context.Context, rec handoff.Conversation, ev livechat.Event, name string) error {
	msg := handoff.AgentMessage{Text: livechat.AgentText(ev), AgentID: ev.AuthorID, AgentName: name, ChatID: rec.ChatID,
		LiveChatEventID: ev.ID, ReplyTo: rec.ReplyTo, Language: rec.Language}
	rcpt, err := r.publish(ctx, handoff.TypeMessageAgent, rec.ID, msg, handoff.AgentMessageID(rec.ChatID, ev.ID))
	if err != nil {
		return err
	}
	if !rcpt.Duplicate {
		r.add(func(s *SweepStats) { s.Relayed++ })
		r.w.m.sweepRelayed.Inc()
	}
	return nil
}

func (r *sweepRun) publish(ctx context.Context, t handoff.EventType, conversation string, data any, id string) (publisher.Receipt, error) {
	ev, err := handoff.NewEvent(t, conversation, data)
	if err != nil {
		return publisher.Receipt{}, err
	}
	ev.ID, ev.Source = id, "livechat"
	rcpt, err := r.pub.Publish(ctx, ev)
	if err != nil {
		return rcpt, fmt.Errorf("sweep: publish %s: %w", t, err)
	}
	return rcpt, nil
}

// moveMode sets the conversation's mode to `to` if it still has this chat
// and is in one of the `from` modes (a newer handoff or cancel wins), and
// reports whether it did.
func (w *Worker) moveMode(ctx context.Context, id, chatID string, to handoff.Mode, from ...handoff.Mode) (bool, error) {
	moved := false
	_, err := w.st.UpdateConversation(ctx, id, func(c *handoff.Conversation) error {
		moved = false
		if c.ChatID != chatID {
			return store.ErrAbort
		}
		for _, m := range from {
			if c.Mode == m {
				c.Mode, moved = to, true
				return nil
			}
		}
		return store.ErrAbort
	})
	if err != nil && !errors.Is(err, store.ErrAbort) {
		return false, fmt.Errorf("sweep: set conversation %s: %w", to, err)
	}
	return moved, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
