package worker_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// publishCopy publishes ev (as it is, ID included) under the given
// Nats-Msg-Id, retrying while NATS is down, as a publisher that did not get
// its acknowledgement would, and returns JetStream's acknowledgement.
func (e *env) publishCopy(ev handoff.Event, msgID string) *jetstream.PubAck {
	e.t.Helper()
	body, err := ev.Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ack, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: stream.InSubject(ev.Subject), Data: body}, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			return ack
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("publish %s: %v", ev.ID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// textCount counts the customer messages with this text in the
// conversation's chat.
func (e *env) textCount(conv, text string) int {
	e.t.Helper()
	n := 0
	for _, t := range customerTexts(e.chatOf(conv)) {
		if t == text {
			n++
		}
	}
	return n
}

func duplicates(t testing.TB, reg *prometheus.Registry, typ handoff.EventType) float64 {
	t.Helper()
	return metricValue(t, reg, "handoff_worker_events_total", "type", string(typ), "outcome", "duplicate")
}

// TestSameIDAfterNATSRestart is issue 8's first reproduction: an event is
// applied (and so deleted from the work-queue stream), nats-server restarts
// for real on the same store, and the publisher retries the same event
// with the same Nats-Msg-Id. JetStream no longer knows the ID and stores it
// again; the worker must recognise it from the conversation record.
func TestSameIDAfterNATSRestart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart func(*testenv.NATS)
	}{
		{"graceful", func(n *testenv.NATS) { n.Stop(); n.Start() }},
		{"kill -9", func(n *testenv.NATS) { n.Kill(); n.Start() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvOn(t, testenv.StartNATSProcess(t))
			reg, _ := e.startWorker(testConfig())
			c := conv(1)
			e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent please"})
			msg := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "order 1234"})
			e.waitDrained(20 * time.Second)
			if n := e.textCount(c, "order 1234"); n != 1 {
				t.Fatalf("before the restart the chat holds the message %d times; want 1", n)
			}

			tc.restart(e.nats)
			ack := e.publishCopy(msg, msg.ID)
			if ack.Duplicate {
				// Then JetStream kept the ID across the restart and this
				// test would prove nothing about the worker.
				t.Fatalf("JetStream recognised the retried publish after the restart (seq %d); the scenario did not happen", ack.Sequence)
			}
			e.waitDrained(30 * time.Second)

			if n := e.textCount(c, "order 1234"); n != 1 {
				t.Errorf("after the restart and the retried publish the chat holds the message %d times; want 1", n)
			}
			if got := duplicates(t, reg, handoff.TypeMessageUser); got != 1 {
				t.Errorf("duplicate message.user events counted %v; want 1", got)
			}
		})
	}
}

// TestSameIDUnderAnotherMsgID is issue 8's second reproduction: the same
// CloudEvent published again through a path that sets another Nats-Msg-Id.
// JetStream stores both; LiveChat must get each event once, and a repeated
// handoff.requested must not send its opening text again. A message kept in
// Pending (no chat yet) is deduplicated too.
func TestSameIDUnderAnotherMsgID(t *testing.T) {
	e := newEnv(t)
	reg, _ := e.startWorker(testConfig())

	// Conversation 1: the chat is open, then both kinds come again.
	c := conv(1)
	h := e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent please"})
	m := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "order 1234"})
	e.waitDrained(20 * time.Second)
	for _, ev := range []handoff.Event{m, h} {
		if ack := e.publishCopy(ev, "other-path:"+ev.ID); ack.Duplicate {
			t.Fatalf("JetStream took %s under another Msg-Id as a duplicate; the scenario did not happen", ev.ID)
		}
	}
	after := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "still there?"})

	// Conversation 2: a message before any handoff is kept in Pending; its
	// copy must not be kept twice, so the chat opens with it once.
	c2 := conv(2)
	early := e.publish(handoff.TypeMessageUser, c2, handoff.UserMessage{Text: "hello?"})
	e.publishCopy(early, "other-path:"+early.ID)
	h2 := e.publish(handoff.TypeHandoffRequested, c2, handoff.HandoffRequested{Text: "a person please"})
	e.waitDrained(20 * time.Second)

	for _, tc := range []struct {
		conv, text string
	}{
		{c, "agent please"}, {c, "order 1234"}, {c, "still there?"},
		{c2, "hello?"}, {c2, "a person please"},
	} {
		if n := e.textCount(tc.conv, tc.text); n != 1 {
			t.Errorf("%s: %q is in the chat %d times; want once (texts: %q)", tc.conv, tc.text, n, customerTexts(e.chatOf(tc.conv)))
		}
	}
	// The opening text carries <handoff id>/<n>; a re-sent one would carry
	// the bare handoff ID, as a message sent into an open chat does.
	for _, ev := range e.chatOf(c).Events {
		if ev.CustomID == h.ID {
			t.Errorf("the repeated handoff.requested sent its text into the open chat again")
		}
	}
	if got := e.chatOf(c).Events; !slices.ContainsFunc(got, func(ev livechatsim.EventView) bool { return ev.CustomID == after.ID }) {
		t.Errorf("the message after the copies did not arrive: %+v", got)
	}
	if got := duplicates(t, reg, handoff.TypeMessageUser); got != 2 {
		t.Errorf("duplicate message.user events counted %v; want 2 (one open chat, one pending)", got)
	}
	if got := duplicates(t, reg, handoff.TypeHandoffRequested); got != 1 {
		t.Errorf("duplicate handoff.requested events counted %v; want 1", got)
	}
	rec, err := e.st.Conversation(context.Background(), c2)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Applied.Has(h2.ID) || !rec.Applied.Has(early.ID) {
		t.Errorf("record of %s does not remember its applied events: %+v", c2, rec.Applied)
	}
}

// TestRetryAfterAPartlySentMessageSendsNoPartTwice: a message split in three
// parts whose later part is refused with a 429 (which says nothing was
// applied by that request) is retried in place; the parts that went through
// before it must not be sent again. The 429 alone would make the retry
// certain; what the attempt did before it must make it look first.
func TestRetryAfterAPartlySentMessageSendsNoPartTwice(t *testing.T) {
	e := newEnv(t)
	e.startWorker(testConfig())
	const n = 20
	want := map[string][]string{}
	for i := range n {
		h := e.publish(handoff.TypeHandoffRequested, conv(i), handoff.HandoffRequested{})
		want[conv(i)] = []string{h.ID + "/0"}
	}
	e.waitDrained(20 * time.Second)
	if err := e.sim.SetFaults(livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Action: "send_event", Rate: 0.5, Type: "too_many_requests", Status: 429}}}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("word ", 7000) // 35,000 bytes: three parts
	for i := range n {
		m := e.publish(handoff.TypeMessageUser, conv(i), handoff.UserMessage{Text: long})
		want[conv(i)] = append(want[conv(i)], m.ID+"#0", m.ID+"#1", m.ID+"#2")
	}
	e.waitDrained(60 * time.Second)
	e.sim.ResetFaults()
	e.checkExactlyOnceInOrder(want)
	if st := e.sim.Stats(); st["send_event"][429] == 0 {
		t.Fatalf("no send_event was refused: %v", st)
	}
}

// TestForgottenDeliveryIsLookedUpFirst: a message reaches LiveChat but its
// answer is lost, and the worker stops before its next attempt; then
// JetStream forgets the delivery, as a nats-server killed abruptly does
// for the deliveries of its last ~100 ms (it writes consumer state about
// ten times a second), here made certain by deleting the durable consumer.
// The event then comes as a first delivery; the conversation record must
// still say it may have been sent, so the message reaches the agent once.
func TestForgottenDeliveryIsLookedUpFirst(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	_, stop := e.startWorker(cfg)
	c := conv(1)
	e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent please"})
	e.waitDrained(20 * time.Second)

	// The next attempt would wait a minute: the worker stops first.
	stop()
	slow := testConfig()
	slow.BackoffBase, slow.BackoffMax = time.Minute, time.Minute
	slow.ShutdownTimeout = time.Second
	_, stop = e.startWorker(slow)
	if err := e.sim.SetFaults(livechatsim.Faults{DropAfterApply: &livechatsim.Drop{Rate: 1, Actions: []string{"send_event"}}}); err != nil {
		t.Fatal(err)
	}
	msg := e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "order 1234"})
	waitFor(t, 20*time.Second, func() bool { return e.textCount(c, "order 1234") == 1 })
	stop()

	ctx := context.Background()
	if err := e.js.DeleteConsumer(ctx, stream.InStream, stream.Consumer); err != nil {
		t.Fatalf("delete the consumer: %v", err)
	}
	if err := e.sim.SetFaults(livechatsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	reg, _ := e.startWorker(cfg)
	e.waitDrained(20 * time.Second)

	if n := e.textCount(c, "order 1234"); n != 1 {
		t.Errorf("the agent sees %q %d times, want once", "order 1234", n)
	}
	if got := metricValue(t, reg, "handoff_worker_reconciled_sends_total"); got != 1 {
		t.Errorf("handoff_worker_reconciled_sends_total = %v, want 1 (found in LiveChat, not sent again)", got)
	}
	rec, err := e.st.Conversation(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Applied.Has(msg.ID) || slices.Contains(rec.Touched, msg.ID) {
		t.Errorf("record after the apply: applied %v, touched %v; want %s applied and no longer touched", rec.Applied, rec.Touched, msg.ID)
	}
}
