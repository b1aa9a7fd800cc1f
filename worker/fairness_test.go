package worker_test

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	hotEvents  = flag.Int("hot.events", 2000, "events of the hot conversation in TestHotConversationDoesNotStallOthers")
	hotWorkers = flag.String("hot.workers", "1,3", "worker counts TestHotConversationDoesNotStallOthers runs, side by side")
)

// TestHotConversationDoesNotStallOthers is issue 13's acceptance test: a
// conversation with 2,000 queued events (a user or a looping bot flooding
// it) is published first, then 300 ordinary conversations of three events
// (a handoff and two messages). With LiveChat answering in 50 ms and
// default settings, every ordinary conversation is in LiveChat within 10 s
// (before the per-conversation limit they waited 57 s behind the backlog),
// and the hot conversation's events still arrive once each and in order.
// With one worker and with three; the two run side by side, on their own
// servers, because the hot conversation alone takes 2,000 × 50 ms. Under
// -race the backlog is 400 events and the 10 s are not checked.
func TestHotConversationDoesNotStallOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("hot conversation test skipped in -short mode")
	}
	for _, w := range strings.Split(*hotWorkers, ",") {
		workers, err := strconv.Atoi(w)
		if err != nil {
			t.Fatalf("-hot.workers: %v", err)
		}
		t.Run(fmt.Sprintf("%d_workers", workers), func(t *testing.T) {
			t.Parallel()
			n := *hotEvents
			if raceEnabled {
				// The race detector slows everything five- to tenfold:
				// check order and exactly-once on a shorter backlog, and
				// not the time.
				n = min(n, 400)
			}
			hotConversation(t, workers, n, 300)
		})
	}
}

func hotConversation(t *testing.T, workers, hotEvents, others int) {
	e := newEnv(t)
	if err := e.sim.SetFaults(livechatsim.Faults{Latency: &livechatsim.Latency{FixedMS: 50}}); err != nil {
		t.Fatal(err)
	}
	for range workers {
		e.startWorker(worker.DefaultConfig())
	}

	const hot = "projects/acme/agent/sessions/hot"
	want := map[string][]string{}
	hotStart := time.Now()
	want[hot] = e.publishBurst(t, hot, hotEvents)

	// The ordinary conversations, published after the backlog.
	othersStart := time.Now()
	pending := map[string]bool{}
	var ordinary []string
	for i := range others {
		c := conv(i)
		ordinary = append(ordinary, c)
		want[c] = e.publishBurst(t, c, 3)
		for _, id := range want[c] {
			pending[id] = true
		}
	}
	// Every ordinary conversation's three events in LiveChat within 10 s
	// of their publication: the bound issue 13 asks for, generous for 300
	// handoffs at 50 ms a call even on this shared machine.
	const bound = 10 * time.Second
	for len(pending) > 0 && time.Since(othersStart) < bound {
		time.Sleep(100 * time.Millisecond)
		for _, c := range e.sim.Chats() {
			for _, ev := range c.Events {
				delete(pending, ev.CustomID)
			}
		}
	}
	took := time.Since(othersStart)
	if len(pending) > 0 && raceEnabled {
		t.Logf("under -race: %d of the %d ordinary events not in LiveChat %v after their publication (not checked)", len(pending), others*3, bound)
	} else if len(pending) > 0 {
		t.Errorf("%d of the %d ordinary events not in LiveChat %v after their publication", len(pending), others*3, bound)
	} else {
		t.Logf("%d ordinary conversations in LiveChat %v after their publication", others, took.Round(10*time.Millisecond))
	}

	for n := e.inboundLen(); n > 0; n = e.inboundLen() {
		if time.Since(hotStart) > 10*time.Minute {
			t.Fatalf("%d events still in the stream after 10 minutes", n)
		}
		if s := int(time.Since(hotStart).Seconds()); s%20 == 0 {
			t.Logf("%d workers, %v: %d events left", workers, time.Since(hotStart).Round(time.Second), n)
		}
		time.Sleep(time.Second)
	}
	hotTook := time.Since(hotStart)
	e.checkExactlyOnceInOrder(want)
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Errorf("%d dead letters, first: %v", len(dl), dl[0])
	}
	total := hotEvents + others*3
	redeliveries := e.redeliveries(total)
	t.Logf("%d worker(s): the hot conversation's %d events took %v (%.1f events/s; LiveChat's pace is 20/s); %d redeliveries for %d events (%.0f per 1,000)",
		workers, hotEvents, hotTook.Round(100*time.Millisecond), float64(hotEvents)/hotTook.Seconds(),
		redeliveries, total, 1000*float64(redeliveries)/float64(total))
}

// publishBurst publishes a handoff and n-1 messages to one conversation
// without waiting for each acknowledgement, and returns the custom_ids
// LiveChat must end up with, in order.
func (e *env) publishBurst(t testing.TB, c string, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	var futures []jetstream.PubAckFuture
	for j := range n {
		var ev handoff.Event
		var err error
		if j == 0 {
			ev, err = handoff.NewEvent(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent please"})
			ids = append(ids, ev.ID+"/0")
		} else {
			ev, err = handoff.NewEvent(handoff.TypeMessageUser, c, handoff.UserMessage{Text: fmt.Sprintf("message %d", j)})
			ids = append(ids, ev.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := ev.Marshal()
		f, err := e.js.PublishMsgAsync(&nats.Msg{Subject: stream.InSubject(c), Data: body}, jetstream.WithMsgID(ev.ID))
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
		if len(futures) == 1000 {
			waitAcks(t, futures)
			futures = futures[:0]
		}
	}
	waitAcks(t, futures)
	return ids
}

// redeliveries is how many deliveries the inbound consumer made beyond one
// per event, as the server counts them.
func (e *env) redeliveries(events int) int {
	e.t.Helper()
	cons, err := e.js.Consumer(context.Background(), stream.InStream, stream.Consumer)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return int(info.Delivered.Consumer) - events
}
