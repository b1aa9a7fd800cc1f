package ordered

import (
	"context"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// TestNoHeartbeatAfterHandBack: the heartbeat loop sends InProgress for a
// snapshot of the held messages, and a message can be handed back between
// the snapshot and its InProgress. An InProgress that reaches the server
// after the NAK restarts the ack wait: the event, the head of its
// conversation, comes back after 30 s instead of the hand-back's delay, and
// every later event of the conversation is deferred meanwhile. Every
// heartbeat pass during an outage's hand-backs caught some, and
// worker TestOutagesRedisAndNATS failed when a few of these stalls followed
// each other in one conversation.
//
// The ack wait here is two minutes, so the difference is not timing: the
// event must come back long before it.
func TestNoHeartbeatAfterHandBack(t *testing.T) {
	ctx := context.Background()
	c, js := handBackFixture(t, "conv-heartbeat")
	cons, err := js.Consumer(ctx, stream.InStream, stream.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(wait time.Duration) jetstream.Msg { t.Helper(); return fetchOne(t, cons, wait) }
	it := heldItem(t, fetch(5*time.Second))

	// The heartbeat loop's snapshot holds it; the hand-back comes before
	// the loop reaches it.
	snapshot := []*item{it}
	c.handBack(ctx, it, 100*time.Millisecond)
	for _, h := range snapshot {
		h.beat(js.Conn().IsConnected())
	}

	again := fetch(30 * time.Second)
	if again == nil {
		t.Fatal("a message handed back with a 100ms delay was not redelivered within 30s (ack wait 2m): a heartbeat after the hand-back restarted the ack wait")
	}
	if md, _ := again.Metadata(); md == nil || md.Sequence.Stream != it.seq || md.NumDelivered != 2 {
		t.Fatalf("redelivered %+v, want stream sequence %d delivered twice", md, it.seq)
	}
}

// TestHandBackWithLostAnswerIsNotSentAgain: a NAK whose answer does not
// come within the timeout may have been applied; the message may already
// be redelivered to another process. JetStream applies a NAK to whatever
// delivery of the message is pending, so a NAK sent again would cut that
// delivery short, a third delivery would pass the head check beside it,
// and both would apply the event (worker TestOutagesRedisAndNATS found
// custom_ids twice in LiveChat under load). Here the first NAK is applied
// and its answer lost; the second delivery must then stay the only one.
func TestHandBackWithLostAnswerIsNotSentAgain(t *testing.T) {
	ctx := context.Background()
	c, js := handBackFixture(t, "conv-lost-answer")
	c.loseNakAnswer = func(uint64) bool { return true }
	cons, err := js.Consumer(ctx, stream.InStream, stream.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(wait time.Duration) jetstream.Msg { t.Helper(); return fetchOne(t, cons, wait) }
	it := heldItem(t, fetch(5*time.Second))
	done := make(chan struct{})
	go func() { defer close(done); c.handBack(ctx, it, 50*time.Millisecond) }()

	// Another process takes the redelivery and holds it.
	second := fetch(30 * time.Second)
	if second == nil {
		t.Fatal("the applied hand-back did not redeliver the event")
	}
	if third := fetch(3 * time.Second); third != nil {
		md, _ := third.Metadata()
		t.Fatalf("delivered again while the second delivery is held (%+v): the hand-back was sent again and cut it short", md)
	}
	<-done
}

// TestStaleDeliveryIsNotHandedBack: a process that holds a delivery the
// server may have superseded must not cut the newer delivery short.
// JetStream applies a NAK to whichever delivery of the message is pending,
// so a NAK with a short delay would bring the message to a third process
// while another holds it, and both would apply the event. worker
// TestFaultsKilledWorkers found this as messages twice in LiveChat: a
// worker held an event through a nats-server restart, the restarted server
// gave it to another worker, and the first one then handed its old
// delivery back for fairness with a 608 ms delay.
//
// Past the lease the hand-back is not sent at all. Held through a
// reconnect, it is sent with at least resendMinDelay, longer than the
// heartbeat interval every holder keeps after a reconnect, so a holder's
// heartbeat always comes first; nobody holding it, it comes back then.
func TestStaleDeliveryIsNotHandedBack(t *testing.T) {
	t.Run("lease ran out", func(t *testing.T) {
		const ackWait = 5 * time.Second
		ctx := context.Background()
		c, js := handBackFixtureOn(t, testenv.StartNATS(t), "conv-stale", ackWait)
		cons, err := js.Consumer(ctx, stream.InStream, stream.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		fetch := func(wait time.Duration) jetstream.Msg { t.Helper(); return fetchOne(t, cons, wait) }
		stale := heldItem(t, fetch(5*time.Second))
		time.Sleep(ackWait + 500*time.Millisecond) // no heartbeat: the lease runs out

		// Another process takes the message again and holds it.
		second := fetch(30 * time.Second)
		if second == nil {
			t.Fatal("the server did not deliver the message again after the ack wait")
		}
		if md, _ := second.Metadata(); md == nil || md.Sequence.Stream != stale.seq || md.NumDelivered != 2 {
			t.Fatalf("delivered %+v, want stream sequence %d delivered twice", md, stale.seq)
		}
		// The first holder hands its old delivery back, for a short delay.
		c.handBack(ctx, stale, 50*time.Millisecond)
		if third := fetch(2 * time.Second); third != nil {
			md, _ := third.Metadata()
			t.Fatalf("delivered a third time while the second delivery is held (%+v): the stale hand-back cut it short", md)
		}
	})
	t.Run("held through a restart", func(t *testing.T) {
		ctx := context.Background()
		n := testenv.StartNATSProcess(t)
		c, js := handBackFixtureOn(t, n, "conv-stale", 2*time.Minute)
		cons, err := js.Consumer(ctx, stream.InStream, stream.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		fetch := func(wait time.Duration) jetstream.Msg { t.Helper(); return fetchOne(t, cons, wait) }
		stale := heldItem(t, fetch(5*time.Second))
		stale.conn = c.reconnects()
		n.Stop()
		n.Start()
		deadline := time.Now().Add(20 * time.Second)
		for !js.Conn().IsConnected() || c.reconnects() == stale.conn {
			if time.Now().After(deadline) {
				t.Fatal("the client did not reconnect to the restarted server")
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.handBack(ctx, stale, 50*time.Millisecond)
		if early := fetch(time.Second); early != nil {
			md, _ := early.Metadata()
			t.Fatalf("delivered again within a second of a hand-back held through a restart (%+v): a holder's heartbeat may not have come first", md)
		}
		again := fetch(30 * time.Second)
		if again == nil {
			t.Fatal("a hand-back held through a restart did not bring the message back (ack wait 2m)")
		}
		if md, _ := again.Metadata(); md == nil || md.Sequence.Stream != stale.seq {
			t.Fatalf("delivered %+v, want stream sequence %d", md, stale.seq)
		}
	})
}

// fetchOne pulls one message from cons within wait, or returns nil.
func fetchOne(t *testing.T, cons jetstream.Consumer, wait time.Duration) jetstream.Msg {
	t.Helper()
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		return m
	}
	return nil
}

// heldItem is msg as the consumer holds it after a delivery.
func heldItem(t *testing.T, msg jetstream.Msg) *item {
	t.Helper()
	if msg == nil {
		t.Fatal("the event was not delivered")
	}
	md, err := msg.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	return &item{msg: msg, seq: md.Sequence.Stream, delivered: md.NumDelivered, subject: msg.Subject(), lease: time.Now()}
}

// handBackFixture publishes one event of conv on a fresh NATS with a
// two-minute ack wait (so only a missing hand-back, never timing, can keep
// the event away) and returns a consumer that is not running, for tests
// that drive its hand-back and heartbeat steps by hand.
func handBackFixture(t *testing.T, conv string) (*Consumer, jetstream.JetStream) {
	t.Helper()
	return handBackFixtureOn(t, testenv.StartNATS(t), conv, 2*time.Minute)
}

// handBackFixtureOn is handBackFixture on the server n, with that ack wait.
func handBackFixtureOn(t *testing.T, n *testenv.NATS, conv string, ackWait time.Duration) (*Consumer, jetstream.JetStream) {
	t.Helper()
	_, js := n.Connect()
	scfg := stream.DefaultConfig()
	scfg.AckWait = ackWait
	ctx := context.Background()
	if _, err := stream.Setup(ctx, js, scfg); err != nil {
		t.Fatal(err)
	}
	ev, err := handoff.NewEvent(handoff.TypeMessageUser, conv, handoff.UserMessage{Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publisher.New(js, publisher.WithSource("test")).Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Stream, cfg.Durable, cfg.Subsystem = stream.InStream, stream.Consumer, "test"
	cfg.AckWait = scfg.AckWait
	c, err := New(cfg, js, HandlerFunc(func(context.Context, *Delivery) error { return nil }), prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, js
}
