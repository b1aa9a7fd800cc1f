package ordered_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// env is embedded NATS with the handoff streams, and consumers started on
// demand with a fake handler.
type env struct {
	t    *testing.T
	nats *testenv.NATS
	js   jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, nats: testenv.StartNATS(t)}
	_, e.js = e.nats.Connect()
	if _, err := stream.Setup(context.Background(), e.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return e
}

func testConfig() ordered.Config {
	c := ordered.DefaultConfig()
	c.Stream = stream.InStream
	c.Durable = stream.Consumer
	c.Subsystem = "test"
	c.BackoffBase = 2 * time.Millisecond
	c.BackoffMax = 20 * time.Millisecond
	c.OrderDelay = 20 * time.Millisecond
	c.OutageDelay = 50 * time.Millisecond
	c.StatsInterval = 100 * time.Millisecond
	return c
}

// start runs a consumer on its own connection until the test ends or stop
// is called; stop fails the test if Run errs or hangs.
func (e *env) start(cfg ordered.Config, h ordered.Handler) (reg *prometheus.Registry, stop func()) {
	e.t.Helper()
	reg = prometheus.NewRegistry()
	_, js := e.nats.Connect()
	c, err := ordered.New(cfg, js, h, reg, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run: %v", err)
				}
			case <-time.After(time.Minute):
				e.t.Errorf("Run did not return within a minute of its context ending")
			}
		})
	}
	e.t.Cleanup(stop)
	return reg, stop
}

// publish stores a user message for conv on the inbound stream.
func (e *env) publish(conv, text string) handoff.Event {
	e.t.Helper()
	ev, err := handoff.NewEvent(handoff.TypeMessageUser, conv, handoff.UserMessage{Text: text})
	if err != nil {
		e.t.Fatal(err)
	}
	body, err := ev.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	m := &nats.Msg{Subject: stream.InSubject(conv), Data: body, Header: nats.Header{"Ce-Type": {string(ev.Type)}}}
	if _, err := e.js.PublishMsg(context.Background(), m, jetstream.WithMsgID(ev.ID)); err != nil {
		e.t.Fatal(err)
	}
	return ev
}

func (e *env) inboundLen() uint64 {
	s, err := e.js.Stream(context.Background(), stream.InStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

func (e *env) deadLetters() []ordered.DeadLetter {
	e.t.Helper()
	dl, err := ordered.ListDeadLetters(context.Background(), e.js, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return dl
}

// waitFor polls cond; limit is a generous bound against a hung test, not a
// performance assertion.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is a fake handler: it records the events it applied per
// conversation, and fails the way fail says.
type recorder struct {
	mu      sync.Mutex
	applied map[string][]string // conversation → event IDs, in the order applied
	calls   map[string]int      // event ID → Handle calls
	fail    func(d *ordered.Delivery, call int) error
	last    map[string]*ordered.Delivery
}

func newRecorder(fail func(d *ordered.Delivery, call int) error) *recorder {
	return &recorder{applied: map[string][]string{}, calls: map[string]int{}, last: map[string]*ordered.Delivery{}, fail: fail}
}

func (r *recorder) Handle(_ context.Context, d *ordered.Delivery) error {
	r.mu.Lock()
	r.calls[d.Event.ID]++
	call := r.calls[d.Event.ID]
	copied := *d
	r.last[d.Event.ID] = &copied
	r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(d, call); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.applied[d.Key] = append(r.applied[d.Key], d.Event.ID)
	r.mu.Unlock()
	return nil
}

func (r *recorder) callsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

func (r *recorder) appliedOf(conv string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.applied[conv])
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// TestOrderPerConversation: two consumers share the stream while the
// handler fails a fifth of its attempts and takes its time; every
// conversation's events are applied exactly once, in publish order.
func TestOrderPerConversation(t *testing.T) {
	e := newEnv(t)
	h := newRecorder(func(d *ordered.Delivery, _ int) error {
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		if rand.IntN(5) == 0 {
			return errors.New("flaky downstream")
		}
		return nil
	})
	cfg := testConfig()
	cfg.MaxAttempts = 1000
	reg, _ := e.start(cfg, h)
	e.start(cfg, h)

	const convs, perConv = 20, 30
	want := map[string][]string{}
	for j := range perConv {
		for i := range convs {
			c := fmt.Sprintf("conversation %d", i)
			want[c] = append(want[c], e.publish(c, fmt.Sprintf("message %d", j)).ID)
		}
	}
	waitFor(t, time.Minute, "stream drained", func() bool { return e.inboundLen() == 0 })
	for c, ids := range want {
		if got := h.appliedOf(c); !slices.Equal(got, ids) {
			t.Errorf("%s: applied %d events %v, want %d in publish order %v", c, len(got), got, len(ids), ids)
		}
	}
	if n := len(e.deadLetters()); n != 0 {
		t.Errorf("%d dead letters", n)
	}
	if metricValue(t, reg, "handoff_test_retries_total", "reason", "unknown") == 0 {
		t.Errorf("no retry counted: the flaky handler did not bite")
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

var errDown = errors.New("downstream unreachable")

// TestFailureClasses: what each kind of handler error does to the event,
// and that the conversation's later events flow after it.
func TestFailureClasses(t *testing.T) {
	errCustom := errors.New("custom rejection")
	tests := []struct {
		name string
		// fail fails the event under test on its call-th Handle.
		fail         func(call int) error
		wantCalls    int    // Handle calls of the event under test
		wantDLQ      string // dead-letter reason, "" for none
		wantOutcome  string
		wantRetries  string // a retries_total reason that must be counted
		wantApplied  bool
		wantRedelivr bool // the event was handed back to the stream
	}{
		{
			name:        "permanent is dead-lettered at once with its reason",
			fail:        func(int) error { return ordered.Permanent("bad_input", errors.New("field x is invalid")) },
			wantCalls:   1,
			wantDLQ:     "bad_input",
			wantOutcome: "dead_lettered",
		},
		{
			name:        "transient spends the budget, then retries_exhausted",
			fail:        func(int) error { return errDown },
			wantCalls:   3,
			wantDLQ:     "retries_exhausted",
			wantOutcome: "dead_lettered",
			wantRetries: "unknown",
		},
		{
			name: "outage is handed back and keeps the budget",
			fail: func(call int) error {
				if call <= 5 {
					return ordered.Outage("downstream_down", errDown)
				}
				return nil
			},
			wantCalls:    6,
			wantOutcome:  "applied",
			wantRetries:  "downstream_down",
			wantApplied:  true,
			wantRedelivr: true,
		},
		{
			name: "lease lost is an outage",
			fail: func(call int) error {
				if call == 1 {
					return fmt.Errorf("send: %w", ordered.ErrLeaseLost)
				}
				return nil
			},
			wantCalls:   2,
			wantOutcome: "applied",
			wantRetries: "lease_lost",
			wantApplied: true,
		},
		{
			name:        "duplicate is acknowledged",
			fail:        func(int) error { return fmt.Errorf("commit: %w", ordered.ErrDuplicate) },
			wantCalls:   1,
			wantOutcome: "duplicate",
		},
		{
			name:        "skip is acknowledged",
			fail:        func(int) error { return ordered.Skip("stale_status") },
			wantCalls:   1,
			wantOutcome: "skipped",
		},
		{
			name:        "a panic spends the budget, then is dead-lettered as panic",
			fail:        func(int) error { panic("nil map in the handler") },
			wantCalls:   3,
			wantDLQ:     "panic",
			wantOutcome: "panic",
			wantRetries: "panic",
		},
		{
			name:        "the classifier names its own errors",
			fail:        func(int) error { return fmt.Errorf("post: %w", errCustom) },
			wantCalls:   1,
			wantDLQ:     "custom_rejected",
			wantOutcome: "dead_lettered",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			const c = "conversation/1"
			var target string
			var targetMu sync.Mutex
			h := newRecorder(func(d *ordered.Delivery, call int) error {
				targetMu.Lock()
				defer targetMu.Unlock()
				if d.Event.ID == target {
					return tt.fail(call)
				}
				return nil
			})
			cfg := testConfig()
			cfg.MaxAttempts = 3
			cfg.Classify = func(err error) ordered.Verdict {
				if errors.Is(err, errCustom) {
					return ordered.Verdict{Class: ordered.ClassPermanent, Reason: "custom_rejected"}
				}
				return ordered.Verdict{}
			}
			targetMu.Lock()
			before := e.publish(c, "before")
			ev := e.publish(c, "the event under test")
			target = ev.ID
			targetMu.Unlock()
			after := e.publish(c, "after")
			reg, _ := e.start(cfg, h)
			waitFor(t, 30*time.Second, "stream drained", func() bool { return e.inboundLen() == 0 })

			wantApplied := []string{before.ID}
			if tt.wantApplied {
				wantApplied = append(wantApplied, ev.ID)
			}
			wantApplied = append(wantApplied, after.ID)
			if got := h.appliedOf(c); !slices.Equal(got, wantApplied) {
				t.Errorf("applied %v, want %v", got, wantApplied)
			}
			if got := h.callsOf(ev.ID); got != tt.wantCalls {
				t.Errorf("Handle called %d times for the event, want %d", got, tt.wantCalls)
			}
			dls := e.deadLetters()
			switch {
			case tt.wantDLQ == "" && len(dls) != 0:
				t.Errorf("dead letters %v, want none", dls)
			case tt.wantDLQ != "":
				if len(dls) != 1 {
					t.Fatalf("dead letters %v, want one", dls)
				}
				d := dls[0]
				if d.Reason != tt.wantDLQ || d.EventID != ev.ID || d.Conversation != c || d.OriginalSubject != stream.InSubject(c) || d.Error == "" {
					t.Errorf("dead letter %+v, want reason %s for event %s of %q", d, tt.wantDLQ, ev.ID, c)
				}
				if got := metricValue(t, reg, "handoff_test_dead_letters_total", "reason", tt.wantDLQ); got != 1 {
					t.Errorf("dead_letters_total{reason=%s} = %v, want 1", tt.wantDLQ, got)
				}
			}
			if got := metricValue(t, reg, "handoff_test_events_total", "outcome", tt.wantOutcome); got < 1 {
				t.Errorf("events_total{outcome=%s} = %v, want at least 1", tt.wantOutcome, got)
			}
			if tt.wantRetries != "" && metricValue(t, reg, "handoff_test_retries_total", "reason", tt.wantRetries) == 0 {
				t.Errorf("no retry counted with reason %s", tt.wantRetries)
			}
			if tt.wantRedelivr {
				h.mu.Lock()
				last := h.last[ev.ID]
				h.mu.Unlock()
				if last.Delivered < 2 || !last.Uncertain() {
					t.Errorf("last attempt saw NumDelivered %d, uncertain %v: the event was not handed back to the stream", last.Delivered, last.Uncertain())
				}
			}
		})
	}
}

// TestDeliveryDescribesTheEvent: the handler sees the decoded event, its
// conversation, subject and stream position; a malformed event never
// reaches it and is dead-lettered.
func TestDeliveryDescribesTheEvent(t *testing.T) {
	e := newEnv(t)
	const c = "projects/p/agent/sessions/a b*c"
	bad := nats.NewMsg(stream.InSubject(c))
	bad.Data = []byte("{not json")
	if _, err := e.js.PublishMsg(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	ev := e.publish(c, "hello")
	h := newRecorder(nil)
	e.start(testConfig(), h)
	waitFor(t, 30*time.Second, "stream drained", func() bool { return e.inboundLen() == 0 })
	h.mu.Lock()
	d := h.last[ev.ID]
	h.mu.Unlock()
	if d == nil {
		t.Fatal("the event never reached the handler")
	}
	p, ok := d.Payload.(*handoff.UserMessage)
	if d.Key != c || d.Subject != stream.InSubject(c) || d.Pos.Seq != 2 || d.Pos.Epoch == 0 || d.Delivered != 1 || d.Stored.IsZero() || time.Since(d.Stored) > time.Minute || d.Attempt != 1 || d.Uncertain() || !ok || p.Text != "hello" {
		t.Errorf("delivery %+v (payload %#v)", d, d.Payload)
	}
	if err := d.CheckLease(); err != nil {
		t.Errorf("CheckLease right after handling: %v", err)
	}
	if dls := e.deadLetters(); len(dls) != 1 || dls[0].Reason != "malformed_event" || dls[0].OriginalSequence != 1 {
		t.Errorf("dead letters %v, want the malformed event", dls)
	}
}

// TestDrainHandsBack: stopping a busy consumer returns from Run and hands
// what it held back to the stream at once; a second consumer then applies
// everything, exactly once and in order, well inside an ack wait of a
// minute (an event left to time out would wait the whole minute).
func TestDrainHandsBack(t *testing.T) {
	e := newEnv(t)
	h := newRecorder(func(*ordered.Delivery, int) error {
		time.Sleep(20 * time.Millisecond)
		return nil
	})
	cfg := testConfig()
	cfg.AckWait = time.Minute
	cfg.ShutdownTimeout = 5 * time.Second
	want := map[string][]string{}
	for j := range 20 {
		for i := range 10 {
			c := fmt.Sprintf("conversation %d", i)
			want[c] = append(want[c], e.publish(c, fmt.Sprintf("m%d", j)).ID)
		}
	}
	_, stop := e.start(cfg, h)
	waitFor(t, 30*time.Second, "some events applied", func() bool { return e.inboundLen() < 150 })
	stop()
	left := e.inboundLen()
	if left == 0 {
		t.Fatal("everything was applied before the stop: the test proves nothing")
	}
	e.start(cfg, h)
	waitFor(t, 30*time.Second, "stream drained by the second consumer", func() bool { return e.inboundLen() == 0 })
	for c, ids := range want {
		if got := h.appliedOf(c); !slices.Equal(got, ids) {
			t.Errorf("%s: applied %v, want %v", c, got, ids)
		}
	}
	t.Logf("%d of 200 events were left for the second consumer", left)
}

func TestNewRequiresNames(t *testing.T) {
	for _, cfg := range []ordered.Config{{}, {Stream: "S", Durable: "d"}, {Stream: "S", Subsystem: "x"}} {
		if _, err := ordered.New(cfg, nil, newRecorder(nil), prometheus.NewRegistry(), nil); err == nil || !strings.Contains(err.Error(), "required") {
			t.Errorf("New(%+v) = %v, want an error naming what is required", cfg, err)
		}
	}
}

// TestLeaseDoesNotSurviveAReconnect: a restarted server rebuilds its
// pending list from delivery times our heartbeats never updated and hands
// held messages to another process about a second later, well inside the
// ack wait. An event held across the restart must not start a side effect
// on its old delivery: CheckLease fails, the event goes back, and its next
// delivery is applied once.
func TestLeaseDoesNotSurviveAReconnect(t *testing.T) {
	e := newEnv(t)
	started := make(chan struct{})
	restarted := make(chan struct{})
	var leaseAfter error
	h := newRecorder(func(d *ordered.Delivery, call int) error {
		if call > 1 {
			return d.CheckLease()
		}
		close(started)
		<-restarted
		leaseAfter = d.CheckLease()
		return leaseAfter
	})
	e.start(testConfig(), h)
	const conv = "lease-across-restart"
	ev := e.publish(conv, "held across a restart")
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the event never reached the handler")
	}
	e.nats.Stop()
	e.nats.Start()
	// The consumer's connection reconnects on its own; wait until it has.
	waitFor(t, 30*time.Second, "publisher reconnected", func() bool { return e.js.Conn().IsConnected() })
	time.Sleep(time.Second) // at least one reconnect attempt interval of the consumer's connection
	close(restarted)
	waitFor(t, 60*time.Second, "event applied after the restart", func() bool { return len(h.appliedOf(conv)) == 1 })
	if !errors.Is(leaseAfter, ordered.ErrLeaseLost) {
		t.Errorf("CheckLease on a delivery taken before the restart = %v, want ErrLeaseLost", leaseAfter)
	}
	if got := h.appliedOf(conv); len(got) != 1 || got[0] != ev.ID {
		t.Errorf("applied %v, want [%s] once", got, ev.ID)
	}
}

// TestOneConversationCannotStarveOthers: a conversation with a backlog of
// 300 events is published first, then 30 conversations of one event each,
// and the slots allow 32 events per process. Without a limit per
// conversation the slots would hold the backlog and the 30 would wait for
// nearly all of it; with it, each of them is applied before the backlog's
// 150th event, the backlog is applied exactly once and in order, and its
// hand-backs are counted and cost a few redeliveries per event, not one
// per event and round.
func TestOneConversationCannotStarveOthers(t *testing.T) {
	for _, consumers := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d consumers", consumers), func(t *testing.T) {
			e := newEnv(t)
			var mu sync.Mutex
			var order []string // conversations, in the order their events were applied
			h := newRecorder(func(d *ordered.Delivery, _ int) error {
				time.Sleep(3 * time.Millisecond) // a downstream with a pace
				mu.Lock()
				order = append(order, d.Key)
				mu.Unlock()
				return nil
			})
			cfg := testConfig()
			cfg.MaxInFlight = 32
			cfg.MaxHeldPerConversation = 4
			var regs []*prometheus.Registry
			for range consumers {
				reg, _ := e.start(cfg, h)
				regs = append(regs, reg)
			}

			const hot, backlog, others = "hot", 300, 30
			var want []string
			for i := range backlog {
				want = append(want, e.publish(hot, fmt.Sprintf("message %d", i)).ID)
			}
			for i := range others {
				e.publish(fmt.Sprintf("conversation %d", i), "hello")
			}
			waitFor(t, 2*time.Minute, "stream drained", func() bool { return e.inboundLen() == 0 })

			if got := h.appliedOf(hot); !slices.Equal(got, want) {
				t.Errorf("the backlog: applied %d events, want its %d once each in publish order", len(got), len(want))
			}
			mu.Lock()
			hotSeen, othersSeen := 0, 0
			for _, c := range order {
				if c == hot {
					hotSeen++
					continue
				}
				othersSeen++
				if hotSeen >= backlog/2 {
					t.Errorf("%s applied after %d of the backlog's events: it waited behind the backlog", c, hotSeen)
				}
			}
			mu.Unlock()
			if othersSeen != others {
				t.Errorf("%d of the %d other conversations applied", othersSeen, others)
			}
			var handBacks float64
			for _, reg := range regs {
				handBacks += metricValue(t, reg, "handoff_test_fairness_hand_backs_total")
			}
			if handBacks == 0 {
				t.Errorf("no fairness hand-back counted")
			}
			cons, err := e.js.Consumer(context.Background(), stream.InStream, stream.Consumer)
			if err != nil {
				t.Fatal(err)
			}
			info, err := cons.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			redeliveries := int(info.Delivered.Consumer) - backlog - others
			t.Logf("%d consumers: %v fairness hand-backs, %d redeliveries for a backlog of %d", consumers, handBacks, redeliveries, backlog)
			// One hand-back per round for every held-back event would be
			// thousands here; the timed hand-back costs a few per event.
			if redeliveries > 10*backlog {
				t.Errorf("%d redeliveries for a backlog of %d", redeliveries, backlog)
			}
		})
	}
}
