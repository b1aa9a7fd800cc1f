package worker_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHandoffMessagesAndCancel(t *testing.T) {
	e := newEnv(t)
	e.startWorker(testConfig())
	c := conv(1)
	g := 3
	h := e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{
		Customer:   handoff.Customer{Name: "Ana Souza", Email: "ana@example.com", Fields: map[string]string{"plan": "pro"}},
		Transcript: []handoff.TranscriptEntry{{Author: handoff.AuthorUser, Text: "my order is late"}, {Author: handoff.AuthorBot, Text: "Order number?"}},
		Group:      &g, Reason: "billing", Text: "talk to an agent",
	})
	m1 := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "order 1234"})
	m2 := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "are you there?"})
	e.waitDrained(20 * time.Second)

	chat := e.chatOf(c)
	want := []string{"my order is late", "[bot] Order number?", "talk to an agent", "order 1234", "are you there?"}
	if got := customerTexts(chat); !slices.Equal(got, want) {
		t.Errorf("chat texts = %q, want %q", got, want)
	}
	if chat.Customer.Name != "Ana Souza" || chat.Customer.Email != "ana@example.com" || !chat.Active {
		t.Errorf("chat customer %+v active %v", chat.Customer, chat.Active)
	}
	if !slices.Equal(chat.GroupIDs, []int{3}) {
		t.Errorf("chat groups %v, want [3]", chat.GroupIDs)
	}
	e.checkExactlyOnceInOrder(map[string][]string{c: {h.ID + "/0", h.ID + "/1", h.ID + "/2", m1.ID, m2.ID}})
	rec, _ := e.st.Conversation(context.Background(), c)
	if rec.Mode != handoff.ModeQueued || rec.LastEventID != m2.ID {
		t.Errorf("record after messages: %+v", rec)
	}

	e.publish(handoff.TypeHandoffCancelled, c, handoff.HandoffCancelled{Reason: "back to bot"})
	e.waitDrained(20 * time.Second)
	rec, _ = e.st.Conversation(context.Background(), c)
	if rec.Mode != handoff.ModeBot {
		t.Errorf("mode after cancel = %s, want bot", rec.Mode)
	}
	if e.chatOf(c).Active {
		t.Errorf("chat still active after cancel")
	}

	// Back with the bot, messages are kept for the next handoff, which
	// resumes the same chat (one customer, one chat).
	m3 := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "still there?"})
	h2 := e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent again"})
	e.waitDrained(20 * time.Second)
	chat = e.chatOf(c)
	texts := customerTexts(chat)
	if !slices.Equal(texts[len(texts)-2:], []string{"still there?", "agent again"}) || !chat.Active {
		t.Errorf("after second handoff: texts %q active %v", texts, chat.Active)
	}
	if n := len(e.sim.Chats()); n != 1 {
		t.Errorf("%d chats, want 1", n)
	}
	_ = m3
	_ = h2
}

func TestRepeatedHandoffOpensOneChat(t *testing.T) {
	e := newEnv(t)
	e.startWorker(testConfig())
	c := conv(2)
	for range 3 {
		e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent!"})
	}
	e.waitDrained(20 * time.Second)
	if n := len(e.sim.Chats()); n != 1 {
		t.Fatalf("%d chats, want 1", n)
	}
	if got := customerTexts(e.chatOf(c)); !slices.Equal(got, []string{"agent!", "agent!", "agent!"}) {
		t.Errorf("texts %q: the repeats should arrive as messages", got)
	}
}

func TestMessageBeforeHandoffIsKeptForTheChat(t *testing.T) {
	e := newEnv(t)
	e.startWorker(testConfig())
	c := conv(3)
	e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "hello?"})
	e.waitDrained(20 * time.Second)
	rec, _ := e.st.Conversation(context.Background(), c)
	if rec.ChatID != "" || len(rec.Pending) != 1 || rec.Pending[0].Text != "hello?" {
		t.Fatalf("record %+v: the message should wait in Pending", rec)
	}
	e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{})
	e.waitDrained(20 * time.Second)
	if got := customerTexts(e.chatOf(c)); !slices.Equal(got, []string{"hello?"}) {
		t.Errorf("chat texts %q, want the kept message", got)
	}
}

func TestLongMessagesAreSplit(t *testing.T) {
	e := newEnv(t)
	e.startWorker(testConfig())
	c := conv(4)
	e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{})
	long := strings.Repeat("word ", 7000) // 35,000 bytes
	m := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: long})
	e.waitDrained(20 * time.Second)
	var parts []string
	for _, ev := range e.chatOf(c).Events {
		if strings.HasPrefix(ev.CustomID, m.ID+"#") {
			parts = append(parts, ev.Text)
			if len(ev.Text) > 16*1024 {
				t.Errorf("part of %d bytes exceeds LiveChat's limit", len(ev.Text))
			}
		}
	}
	if len(parts) != 3 || strings.Join(parts, "") != long {
		t.Errorf("got %d parts joining to %d bytes, want 3 parts joining to the text", len(parts), len(strings.Join(parts, "")))
	}
}

func TestPoisonEventsAreDeadLetteredAndLaterEventsFlow(t *testing.T) {
	e := newEnv(t)
	reg, _ := e.startWorker(testConfig())
	c := conv(5)
	ctx := context.Background()
	h := e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{})

	// Malformed JSON and an unknown type, published raw as any NATS client
	// could.
	for i, body := range []string{`{not json`, `{"specversion":"1.0","id":"u1","source":"x","type":"message.bogus","subject":"` + c + `","time":"2026-01-01T00:00:00Z","data":{}}`} {
		m := nats.NewMsg(stream.InSubject(c))
		m.Data = []byte(body)
		m.Header.Set("Nats-Msg-Id", "raw-"+string(rune('a'+i)))
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// An event LiveChat rejects as invalid: text over the limit is split,
	// so inject a validation error on the next send instead.
	if err := e.sim.SetFaults(livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Action: "send_event", Rate: 1, Type: "validation", Message: "event.text is invalid"}}}); err != nil {
		t.Fatal(err)
	}
	rejected := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "rejected"})
	waitFor(t, 20*time.Second, func() bool { return len(e.deadLetters()) == 3 })
	e.sim.ResetFaults()
	after := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "after the poison"})
	e.waitDrained(20 * time.Second)

	dls := e.deadLetters()
	reasons := []string{dls[0].Reason, dls[1].Reason, dls[2].Reason}
	if !slices.Equal(reasons, []string{"malformed_event", "malformed_event", "livechat_validation"}) {
		t.Errorf("dead-letter reasons %q", reasons)
	}
	for _, d := range dls {
		if d.Conversation != c || d.OriginalSubject != stream.InSubject(c) || d.OriginalSequence == 0 || d.DeliveryCount == 0 || d.Error == "" {
			t.Errorf("dead letter lacks its origin: %+v", d)
		}
	}
	if !strings.Contains(dls[1].Error, "message.bogus") {
		t.Errorf("unknown type's error %q does not name it", dls[1].Error)
	}
	e.checkExactlyOnceInOrder(map[string][]string{c: {h.ID + "/0", after.ID}})

	// Replay the rejected event: it is applied, after the later one.
	if dls[2].EventID != rejected.ID {
		t.Fatalf("third dead letter is %q, want the rejected event %q", dls[2].EventID, rejected.ID)
	}
	if _, err := worker.ReplayDeadLetter(ctx, e.js, dls[2].Sequence); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(20 * time.Second)
	e.checkExactlyOnceInOrder(map[string][]string{c: {h.ID + "/0", after.ID, rejected.ID}})

	// The same replay again (the operator ran it twice, or its publish was
	// retried after a NATS restart made JetStream forget its Msg-Id): the
	// event was applied, so the copy is dropped by its ID.
	again := nats.NewMsg(stream.InSubject(c))
	again.Data, _ = rejected.Marshal()
	again.Header.Set(worker.HeaderReplay, strconv.FormatUint(dls[2].Sequence, 10))
	again.Header.Set("Nats-Msg-Id", "replay-again:"+rejected.ID)
	if _, err := e.js.PublishMsg(ctx, again); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(20 * time.Second)
	e.checkExactlyOnceInOrder(map[string][]string{c: {h.ID + "/0", after.ID, rejected.ID}})
	// Dropped without a LiveChat call, not merely found by its custom_id.
	if got := duplicates(t, reg, handoff.TypeMessageUser); got != 1 {
		t.Errorf("the repeated replay counted %v duplicates; want 1", got)
	}
	if n := len(e.deadLetters()); n != 2 {
		t.Errorf("%d dead letters after replay, want 2", n)
	}
	if got := testutil.ToFloat64(metricVec(t, reg, "handoff_worker_dead_letters_total", "reason", "malformed_event")); got != 2 {
		t.Errorf("dead letters metric for malformed_event = %v, want 2", got)
	}
}

func TestUnknownOutcomeIsNotSentTwice(t *testing.T) {
	e := newEnv(t)
	reg, _ := e.startWorker(testConfig())
	if err := e.sim.SetFaults(livechatsim.Faults{DropAfterApply: &livechatsim.Drop{Rate: 0.3, Actions: []string{"send_event", "start_chat"}}}); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for i := range 10 {
		c := conv(100 + i)
		h := e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent"})
		want[c] = []string{h.ID + "/0"}
		for j := range 10 {
			m := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "m" + string(rune('0'+j))})
			want[c] = append(want[c], m.ID)
		}
	}
	e.waitDrained(60 * time.Second)
	e.checkExactlyOnceInOrder(want)
	if len(e.deadLetters()) != 0 {
		t.Errorf("dead letters: %v", e.deadLetters())
	}
	if testutil.ToFloat64(metricCounter(t, reg, "handoff_worker_reconciled_sends_total")) == 0 {
		t.Errorf("no send was reconciled by custom_id, so the drop fault did not bite")
	}
}

func waitFor(t testing.TB, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGracefulShutdownHandsBack stops a busy worker: Run returns nil and
// the events it held are handed back, not left to time out: with an ack
// wait of a minute, a second worker still delivers everything well inside
// it, exactly once and in order.
func TestGracefulShutdownHandsBack(t *testing.T) {
	e := newEnv(t)
	if err := e.sim.SetFaults(livechatsim.Faults{Latency: &livechatsim.Latency{FixedMS: 50}}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Stream.AckWait = time.Minute
	_, stop := e.startWorker(cfg)
	want := e.publishConversations(0, 20, 10, nil)
	waitFor(t, 20*time.Second, func() bool { return e.inboundLen() < 150 })
	stop() // fails the test if Run errs or does not return
	if e.inboundLen() == 0 {
		t.Fatalf("the worker finished everything before it was stopped: the test proves nothing")
	}
	e.startWorker(cfg)
	// Events left to time out would wait the whole minute.
	e.waitDrained(30 * time.Second)
	e.checkExactlyOnceInOrder(want)
}

// TestAgentTokenRefreshedOncePerDeployment runs three workers while the
// agent token lives two seconds: they share one token through the store and
// renew it one at a time, so LiveChat sees about one refresh per 80 % of the
// lifetime, not one per worker (which would burn LiveChat's 25-token limit).
func TestAgentTokenRefreshedOncePerDeployment(t *testing.T) {
	e := newEnv(t)
	if err := e.sim.SetFaults(livechatsim.Faults{TokenLifetimeS: 2}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e.startWorker(testConfig())
	}
	start := time.Now()
	// New customers need the agent token all along: one handoff every
	// 20 ms for about 6 s.
	for i := 0; time.Since(start) < 6*time.Second; i++ {
		e.publish(handoff.TypeHandoffRequested, conv(1000+i), handoff.HandoffRequested{Text: "agent"})
		time.Sleep(20 * time.Millisecond)
	}
	e.waitDrained(30 * time.Second)
	elapsed := time.Since(start)
	refreshes := e.sim.Stats()["token"][200]
	// One refresh to start, then one per 1.6 s (80 % of 2 s), plus one of
	// slack for a renewal racing the end of the run.
	allowed := int64(elapsed/(1600*time.Millisecond)) + 2
	if refreshes > allowed {
		t.Errorf("%d agent token refreshes in %v by 3 workers; at most %d expected from one shared token", refreshes, elapsed.Round(time.Millisecond), allowed)
	}
	if refreshes < 2 {
		t.Errorf("%d refreshes: the token never expired during the run, the test proves nothing", refreshes)
	}
	if len(e.deadLetters()) != 0 {
		t.Errorf("dead letters: %v", e.deadLetters())
	}
}

// TestRecreatedStreamDoesNotFenceNewEvents: after HANDOFF_IN is deleted and
// created again its sequences restart at 1; the old LastSeq of a
// conversation must not make the new events look applied.
func TestRecreatedStreamDoesNotFenceNewEvents(t *testing.T) {
	e := newEnv(t)
	_, stop := e.startWorker(testConfig())
	c := conv(7)
	e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent"})
	for i := range 20 {
		e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: fmt.Sprintf("before %d", i)})
	}
	e.waitDrained(20 * time.Second)
	stop()
	ctx := context.Background()
	if err := e.js.DeleteStream(ctx, stream.InStream); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Setup(ctx, e.js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	e.startWorker(testConfig())
	after := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "after the new stream"})
	e.waitDrained(20 * time.Second)
	texts := customerTexts(e.chatOf(c))
	if texts[len(texts)-1] != "after the new stream" {
		t.Errorf("the event published on the new stream (id %s) was dropped as applied; last texts %q", after.ID, texts[len(texts)-3:])
	}
}

// TestLiveChatOutageDeadLettersNothing: LiveChat answers every request 503
// for a while. Events wait in the stream instead of spending their retry
// budget, and once LiveChat is back everything arrives, exactly once, in
// order, with no dead letter, even with a budget of three attempts:
//   - with many conversations the circuit opens (a metric says so);
//   - with one conversation the budget runs out long before the circuit
//     has counted enough failures to open (12 attempts against 20 failures
//     by default; 3 against 20 here): nothing answered between the
//     event's attempts, so the failure is the outage's, not the event's.
func TestLiveChatOutageDeadLettersNothing(t *testing.T) {
	for _, tc := range []struct {
		name                string
		conversations, msgs int
		breakerFailures     int
		circuitOpens        bool
	}{
		{name: "many conversations open the circuit", conversations: 10, msgs: 5, breakerFailures: 5, circuitOpens: true},
		{name: "one conversation before the circuit opens", conversations: 1, msgs: 1, breakerFailures: 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := testConfig()
			cfg.MaxAttempts = 3
			cfg.BreakerFailures = tc.breakerFailures
			reg, _ := e.startWorker(cfg)
			// Open the conversations first, so the outage hits messages.
			want := e.publishConversations(0, tc.conversations, 1, nil)
			e.waitDrained(20 * time.Second)
			if err := e.sim.SetFaults(livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Action: "*", Rate: 1, Type: "service_unavailable", Status: 503}}}); err != nil {
				t.Fatal(err)
			}
			for c := range want {
				for i := range tc.msgs {
					ev := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: fmt.Sprintf("during the outage %d", i)})
					want[c] = append(want[c], ev.ID)
				}
			}
			if tc.circuitOpens {
				waitFor(t, 20*time.Second, func() bool {
					return metricValue(t, reg, "handoff_worker_livechat_circuit_state", "host", "api") == 2
				})
				time.Sleep(2 * time.Second) // several open/half-open rounds
			} else {
				// Several budgets' worth of attempts.
				waitFor(t, 20*time.Second, func() bool {
					return metricValue(t, reg, "handoff_worker_retries_total", "reason", "livechat_circuit_open") >= 2
				})
			}
			e.sim.ResetFaults()
			e.waitDrained(30 * time.Second)
			e.checkExactlyOnceInOrder(want)
			if dl := e.deadLetters(); len(dl) != 0 {
				t.Errorf("%d events dead-lettered for an outage; first: %s %s", len(dl), dl[0].Reason, dl[0].Error)
			}
			if got := metricValue(t, reg, "handoff_worker_retries_total", "reason", "livechat_circuit_open"); got == 0 {
				t.Errorf("no event waited for LiveChat")
			}
		})
	}
}
