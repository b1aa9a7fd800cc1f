package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/store/natskv"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// env is a whole deployment for a test: real NATS, real Redis, the
// LiveChat simulator, and workers started on demand.
type env struct {
	t     testing.TB
	nats  *testenv.NATS
	redis *testenv.Redis
	sim   *livechatsim.Sim
	simTS *httptest.Server
	js    jetstream.JetStream
	pub   *publisher.Publisher
	st    store.Store
	// onPublish, when set, sees every event publishConversations stored.
	onPublish func(handoff.Event)
	// backend is the store the env's workers use: "redis" (a prefix of
	// the test's own) or "nats" (the bucket "handoff" on the test's NATS).
	backend string
	// logs keeps the newest lines the in-process workers logged (at
	// debug level), printed about the stuck events when waitDrained
	// times out.
	logs    *testenv.LogRing
	workers int
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOn(t, testenv.StartNATS(t))
}

// newEnvStore is newEnv with the workers' store on backend ("redis" or
// "nats").
func newEnvStore(t testing.TB, backend string) *env {
	t.Helper()
	e := newEnv(t)
	e.backend = backend
	e.st = e.newStore()
	return e
}

// newEnvOn is newEnv on a given NATS server, e.g. one from
// testenv.StartNATSProcess that the test can kill.
func newEnvOn(t testing.TB, n *testenv.NATS) *env {
	t.Helper()
	e := &env{t: t, nats: n, redis: testenv.StartRedis(t), logs: testenv.NewLogRing(300_000)}
	e.sim = livechatsim.New(livechatsim.Options{Logger: quietLog()})
	t.Cleanup(e.sim.Close)
	e.simTS = httptest.NewServer(e.sim)
	t.Cleanup(e.simTS.Close)
	_, e.js = e.nats.Connect()
	if _, err := stream.Setup(context.Background(), e.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	e.pub = publisher.New(e.js, publisher.WithSource("test-bot"))
	e.st = e.newStore()
	return e
}

func quietLog() *slog.Logger {
	if os.Getenv("HANDOFF_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (e *env) newStore() store.Store {
	if e.backend == "nats" {
		return e.defaultStore("nats")
	}
	s, err := store.OpenRedis(e.redis.URL(), store.WithPrefix(e.redis.Prefix()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = s.Close() })
	return s
}

// defaultStore opens the store that worker processes started with
// --store backend and no prefix or bucket of their own write to.
func (e *env) defaultStore(backend string) store.Store {
	var (
		s   store.Store
		err error
	)
	switch backend {
	case "redis":
		s, err = store.OpenRedis(e.redis.URL())
	case "nats":
		nc, cerr := nats.Connect(e.nats.URL(), nats.MaxReconnects(-1))
		if cerr != nil {
			e.t.Fatal(cerr)
		}
		s, err = natskv.Open(context.Background(), nc)
	default:
		e.t.Fatalf("unknown store backend %q", backend)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = s.Close() })
	return s
}

func (e *env) liveChat(reg prometheus.Registerer) *livechat.Client {
	hc := livechat.DefaultHTTPClient()
	if reg != nil {
		lm, err := worker.NewLiveChatMetrics(reg)
		if err != nil {
			e.t.Fatal(err)
		}
		hc.Transport = lm.Transport(hc.Transport)
	}
	return livechat.New(livechat.Config{
		APIURL:       e.simTS.URL,
		AccountsURL:  e.simTS.URL,
		ClientID:     "handoff-test",
		ClientSecret: "secret",
		RefreshToken: "refresh",
		HTTPClient:   hc,
		Logger:       quietLog(),
	})
}

// startWorker runs a worker until the test ends (or stop is called) and
// returns its registry.
func (e *env) startWorker(cfg worker.Config) (reg *prometheus.Registry, stop func()) {
	e.t.Helper()
	reg = prometheus.NewRegistry()
	_, js := e.nats.Connect()
	e.workers++
	w, err := worker.New(cfg, js, e.liveChat(reg), e.newStore(), reg, e.logs.Logger(fmt.Sprintf("worker%d", e.workers)))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("worker.Run: %v", err)
				}
			case <-time.After(60 * time.Second):
				e.t.Errorf("worker did not stop within 60s")
			}
		})
	}
	e.t.Cleanup(stop)
	return reg, stop
}

func testConfig() worker.Config {
	c := worker.DefaultConfig()
	c.BackoffBase = 5 * time.Millisecond
	c.BackoffMax = 200 * time.Millisecond
	c.OrderDelay = 20 * time.Millisecond
	c.OutageDelay = 200 * time.Millisecond
	c.BreakerOpenFor = 500 * time.Millisecond
	c.StatsInterval = 200 * time.Millisecond
	c.MaxAttempts = 30
	return c
}

func (e *env) publish(typ handoff.EventType, conv string, data any, opts ...publisher.EventOption) handoff.Event {
	e.t.Helper()
	ev, err := handoff.NewEvent(typ, conv, data)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, o := range opts {
		o(&ev)
	}
	if _, err := e.pub.Publish(context.Background(), ev); err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// waitDrained waits until the inbound stream is empty (every event applied
// or dead-lettered), failing the test after limit.
func (e *env) waitDrained(limit time.Duration) {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), stream.InStream)
	if err != nil {
		e.t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(limit)
	for {
		info, err := s.Info(context.Background())
		if err == nil && info.State.Msgs == 0 {
			e.t.Logf("inbound stream drained in %v", time.Since(start).Round(100*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			var n uint64
			if info != nil {
				n = info.State.Msgs
			}
			e.reportStuck()
			e.t.Fatalf("inbound stream still holds %d events after %v", n, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inboundLastSeq is the inbound stream's last sequence: how many messages
// it ever stored.
func (e *env) inboundLastSeq() uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), stream.InStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.LastSeq
}

// inboundLen is the number of events still in the inbound stream.
func (e *env) inboundLen() uint64 {
	s, err := e.js.Stream(context.Background(), stream.InStream)
	if err != nil {
		return 0
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// chatOf returns the simulator's chat of a conversation.
func (e *env) chatOf(conv string) livechatsim.ChatView {
	e.t.Helper()
	rec, err := e.st.Conversation(context.Background(), conv)
	if err != nil {
		e.t.Fatal(err)
	}
	if rec.ChatID == "" {
		e.t.Fatalf("conversation %q has no chat (mode %s)", conv, rec.Mode)
	}
	for _, c := range e.sim.Chats() {
		if c.ID == rec.ChatID {
			return c
		}
	}
	e.t.Fatalf("chat %s of %q not in the simulator", rec.ChatID, conv)
	return livechatsim.ChatView{}
}

// customerTexts lists the texts the customer sent in a chat, in order.
func customerTexts(c livechatsim.ChatView) []string {
	var out []string
	for _, ev := range c.Events {
		if ev.Type == "message" && ev.AuthorID == c.Customer.ID {
			out = append(out, ev.Text)
		}
	}
	return out
}

// checkExactlyOnceInOrder verifies, for every conversation, that the
// simulator holds each expected custom_id exactly once, in publish order,
// and that each conversation has one chat.
func (e *env) checkExactlyOnceInOrder(want map[string][]string) {
	e.t.Helper()
	chatsByCustomer := map[string]int{}
	byID := map[string]livechatsim.ChatView{}
	for _, c := range e.sim.Chats() {
		chatsByCustomer[c.Customer.ID]++
		byID[c.ID] = c
	}
	convs := make([]string, 0, len(want))
	for c := range want {
		convs = append(convs, c)
	}
	sort.Strings(convs)
	problems := 0
	var suspects []string // event IDs a problem names, for the worker logs
	report := func(format string, args ...any) {
		problems++
		if problems <= 20 {
			e.t.Errorf(format, args...)
		}
	}
	for _, conv := range convs {
		rec, err := e.st.Conversation(context.Background(), conv)
		if err != nil {
			e.t.Fatal(err)
		}
		chat, ok := byID[rec.ChatID]
		if !ok {
			report("%s: no chat in the simulator (record %+v)", conv, rec)
			continue
		}
		if n := chatsByCustomer[chat.Customer.ID]; n != 1 {
			report("%s: customer %s has %d chats", conv, chat.Customer.ID, n)
		}
		seen := map[string]int{}
		var order []string
		for _, ev := range chat.Events {
			if ev.CustomID == "" {
				continue
			}
			seen[ev.CustomID]++
			order = append(order, ev.CustomID)
		}
		for id, n := range seen {
			if n > 1 {
				report("%s: custom_id %s present %d times", conv, id, n)
				suspects = append(suspects, id)
			}
		}
		pos := 0
		for _, id := range want[conv] {
			if seen[id] == 0 {
				report("%s: custom_id %s missing", conv, id)
				suspects = append(suspects, id)
				continue
			}
			for pos < len(order) && order[pos] != id {
				pos++
			}
			if pos == len(order) {
				report("%s: custom_id %s out of order; chat order %s", conv, id, strings.Join(order, ","))
				break
			}
		}
	}
	if problems > 20 {
		e.t.Errorf("... and %d more problems", problems-20)
	}
	e.logEventHistory(suspects)
}

// logEventHistory logs what the in-process workers logged about the
// deliveries of the events named (custom_ids: event IDs, with a part
// suffix), at most five of them.
func (e *env) logEventHistory(customIDs []string) {
	e.t.Helper()
	for i, id := range customIDs {
		if i == 5 {
			break
		}
		ev, _, _ := strings.Cut(strings.SplitN(id, "#", 2)[0], "/")
		// Lines naming the event carry its subject and sequence; every
		// line about that delivery has them.
		var needles []string
		for _, l := range e.logs.Lines(20, "event="+ev) {
			subj, seq := logField(l, "subject"), logField(l, "seq")
			if subj != "" && seq != "" {
				needles = append(needles, fmt.Sprintf("subject=%s seq=%s ", subj, seq))
			}
		}
		needles = append(needles, "event="+ev)
		lines := e.logs.Lines(150, needles...)
		e.t.Logf("worker log lines about event %s (newest %d):\n%s", ev, len(lines), strings.Join(lines, "\n"))
	}
}

// logField returns the value of key in a text-handler log line.
func logField(line, key string) string {
	_, v, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return ""
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

func (e *env) deadLetters() []worker.DeadLetter {
	e.t.Helper()
	dl, err := worker.ListDeadLetters(context.Background(), e.js, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return dl
}

func conv(i int) string { return fmt.Sprintf("projects/acme/agent/sessions/s.%d x", i) }

func init() {
	// go-redis logs failed dials during the outage tests; keep them out of
	// the test output unless asked for.
	store.SetLogger(quietLog())
}

// reportStuck logs what a test needs to tell why events stay in the
// inbound stream: each stored message (subject, sequence), the durable
// consumer's state, and what the in-process workers logged about those
// subjects. A stuck event is either never delivered again (the consumer
// does not count it pending), deferred forever behind a head nobody holds,
// or handed back forever; the three look different here.
func (e *env) reportStuck() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, stream.InStream)
	if err != nil {
		e.t.Logf("stuck report: stream: %v", err)
		return
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(stream.InPrefix+">"))
	if err != nil {
		e.t.Logf("stuck report: stream info: %v", err)
		return
	}
	e.t.Logf("stream %s: msgs=%d first_seq=%d last_seq=%d deleted=%d subjects=%d created=%s",
		stream.InStream, info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, info.State.NumDeleted, len(info.State.Subjects), info.Created.Format(time.RFC3339Nano))
	subjects := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		subjects = append(subjects, subj)
	}
	sort.Strings(subjects)
	var needles []string
	reported := 0
	for _, subj := range subjects {
		if reported == 10 {
			break
		}
		var seqs []string
		var head uint64
		for seq := uint64(1); len(seqs) < 20; seq++ {
			m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
			if err != nil {
				break
			}
			ev, _ := handoff.UnmarshalEvent(m.Data)
			seqs = append(seqs, fmt.Sprintf("%d(%s %s, stored %s)", m.Sequence, ev.Type, ev.ID, m.Time.Format("15:04:05.000")))
			seq = m.Sequence
			if head == 0 {
				head = seq
			}
		}
		if len(seqs) == 0 {
			continue // applied since the stream info was read
		}
		convID, _ := stream.ConversationOf(subj)
		e.t.Logf("stuck: subject %s (conversation %q): %s", subj, convID, strings.Join(seqs, " "))
		reported++
		// The head's own history says why the conversation does not
		// move; the events behind it are only deferred again and again.
		headLines := e.logs.Lines(1_000_000, fmt.Sprintf("subject=%s seq=%d ", subj, head))
		if len(headLines) > 130 {
			headLines = append(append(headLines[:30:30], fmt.Sprintf("... %d lines ...", len(headLines)-130)), headLines[len(headLines)-100:]...)
		}
		e.t.Logf("worker log lines about the head %d of %s:\n%s", head, subj, strings.Join(headLines, "\n"))
		needles = append(needles, subj)
		if convID != "" {
			needles = append(needles, fmt.Sprintf("%q", convID), convID)
		}
	}
	cons, err := e.js.Consumer(ctx, stream.InStream, stream.Consumer)
	if err != nil {
		e.t.Logf("stuck report: consumer: %v", err)
	} else if ci, err := cons.Info(ctx); err != nil {
		e.t.Logf("stuck report: consumer info: %v", err)
	} else {
		e.t.Logf("consumer %s: num_ack_pending=%d num_redelivered=%d num_pending=%d num_waiting=%d delivered(consumer=%d stream=%d) ack_floor(consumer=%d stream=%d) created=%s",
			ci.Name, ci.NumAckPending, ci.NumRedelivered, ci.NumPending, ci.NumWaiting,
			ci.Delivered.Consumer, ci.Delivered.Stream, ci.AckFloor.Consumer, ci.AckFloor.Stream, ci.Created.Format(time.RFC3339Nano))
	}
	lines := e.logs.Lines(100, needles...)
	e.t.Logf("worker log lines about the stuck subjects (newest %d):\n%s", len(lines), strings.Join(lines, "\n"))
	if warns := e.logs.Lines(40, "level=WARN", "level=ERROR"); len(warns) > 0 {
		e.t.Logf("worker warnings and errors (newest %d):\n%s", len(warns), strings.Join(warns, "\n"))
	}
}

// mark writes a line of the test's own into the workers' log ring, so a
// report shows the test's steps (an outage starting, a restart) in the
// workers' timeline.
func (e *env) mark(step string) {
	if e.logs != nil {
		e.logs.Logger("test").Info(step)
	}
}
