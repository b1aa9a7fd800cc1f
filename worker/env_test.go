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
	e := &env{t: t, nats: n, redis: testenv.StartRedis(t)}
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
	w, err := worker.New(cfg, js, e.liveChat(reg), e.newStore(), reg, quietLog())
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
	deadline := time.Now().Add(limit)
	for {
		info, err := s.Info(context.Background())
		if err == nil && info.State.Msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			var n uint64
			if info != nil {
				n = info.State.Msgs
			}
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
			}
		}
		pos := 0
		for _, id := range want[conv] {
			if seen[id] == 0 {
				report("%s: custom_id %s missing", conv, id)
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
