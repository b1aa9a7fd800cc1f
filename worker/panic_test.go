package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/worker"
)

// TestPanicIsDeadLetteredAndOthersFlow is issue 13's panic acceptance
// test: an event whose apply path panics does not take the worker down;
// other conversations' later events flow while it spends its budget, and it
// ends as a dead letter with reason panic.
func TestPanicIsDeadLetteredAndOthersFlow(t *testing.T) {
	e := newEnv(t)
	poison := conv(1)
	var poisonID string
	reset := worker.SetTestHook(func(d *ordered.Delivery) {
		if d.Event.ID == poisonID {
			var m map[string]int
			m["boom"]++ // a nil-map write, as a bug in the apply path would
		}
	})
	t.Cleanup(reset) // runs after the worker stops (cleanups run last-in first-out)
	cfg := testConfig()
	cfg.MaxAttempts = 5
	poisonID = e.publish(handoff.TypeHandoffRequested, poison, handoff.HandoffRequested{Text: "agent"}).ID
	reg, _ := e.startWorker(cfg)

	want := e.publishConversations(10, 20, 3, nil)
	e.waitDrained(60 * time.Second)
	e.checkExactlyOnceInOrder(want)
	dls := e.deadLetters()
	if len(dls) != 1 || dls[0].EventID != poisonID || dls[0].Reason != "panic" || dls[0].Conversation != poison {
		t.Fatalf("dead letters %v, want the poison event with reason panic", dls)
	}
	if got := metricValue(t, reg, "handoff_worker_events_total", "outcome", "panic"); got != float64(cfg.MaxAttempts) {
		t.Errorf("events_total{outcome=panic} = %v, want one per attempt (%d)", got, cfg.MaxAttempts)
	}
	// The worker still runs: a later event of the same conversation is
	// applied (it keeps the message while no chat is open).
	e.publish(handoff.TypeMessageUser, poison, handoff.UserMessage{Text: "after the panic"})
	e.waitDrained(20 * time.Second)
	rec, err := e.st.Conversation(context.Background(), poison)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Pending) != 1 || rec.Pending[0].Text != "after the panic" {
		t.Errorf("record after the panic %+v: the later event was not applied", rec)
	}
}
