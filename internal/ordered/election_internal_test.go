package ordered

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/stream"
	"github.com/prometheus/client_golang/prometheus"
)

// TestHandBackLostInAnElectionIsSentAgain: a consumer leader that steps
// down with a hand-back still queued for its replicas has answered it, and
// the new leader does not know it: without more, the event comes back
// only after the ack wait. The first hand-back is lost here on purpose
// (loseHandBack; the real loss needs the leader to stop within the
// moment between its answer and its replicas' commit), then the consumer's
// leader moves. The event must come back long before the ack wait, which
// this test sets to two minutes so that the difference is not timing.
func TestHandBackLostInAnElectionIsSentAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats servers")
	}
	cluster := testenv.StartNATSCluster(t)
	nc, js := cluster.Connect()
	scfg := stream.DefaultConfig()
	scfg.Replicas = 3
	scfg.AckWait = 2 * time.Minute
	if _, err := stream.Setup(context.Background(), js, scfg); err != nil {
		t.Fatal(err)
	}
	leader := cluster.ConsumerLeader(js, stream.InStream, stream.Consumer)

	var mu sync.Mutex
	var attempts []time.Time
	handedBack := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, d *Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
		if len(attempts) == 1 {
			return Outage("test_outage", errors.New("down for a moment"))
		}
		return nil
	})
	cfg := DefaultConfig()
	cfg.Stream, cfg.Durable, cfg.Subsystem = stream.InStream, stream.Consumer, "test"
	cfg.AckWait = scfg.AckWait
	cfg.OutageDelay = 100 * time.Millisecond
	_, cjs := cluster.Connect()
	c, err := New(cfg, cjs, h, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	c.loseHandBack = func(uint64) bool {
		lost := false
		once.Do(func() { lost = true; close(handedBack) })
		return lost
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	pub := publisher.New(js, publisher.WithSource("test"))
	ev, err := handoff.NewEvent(handoff.TypeMessageUser, "conv-lost-nak", handoff.UserMessage{Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handedBack:
	case <-time.After(30 * time.Second):
		t.Fatal("the event was not handed back")
	}
	others := map[string]string{"n1": "n2", "n2": "n3", "n3": "n1"}
	cluster.MoveConsumerLeader(nc, js, stream.InStream, stream.Consumer, others[leader])
	moved := time.Now()

	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(attempts)
		mu.Unlock()
		if n >= 2 {
			t.Logf("handled again %v after the leader moved", attempts[1].Sub(moved).Round(100*time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the event lost in the election was not delivered again within 60 s (ack wait %v)", scfg.AckWait)
}
