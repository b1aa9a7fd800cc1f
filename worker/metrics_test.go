package worker_test

import (
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsCountWhatHappened runs a known scenario and reads the metrics
// back: every name exists, passes client_golang's lint (the same as
// `promtool check metrics`), and the counts match the events.
func TestMetricsCountWhatHappened(t *testing.T) {
	e := newEnv(t)
	reg, _ := e.startWorker(testConfig())
	const convs, msgs = 4, 3
	for i := range convs {
		c := conv(500 + i)
		e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent"})
		for range msgs {
			e.publish(handoff.TypeMessageUser, c, handoff.UserMessage{Text: "hello"})
		}
	}
	e.waitDrained(20 * time.Second)
	// One event LiveChat rejects: dead-lettered.
	if err := e.sim.SetFaults(livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Action: "send_event", Rate: 1, Type: "validation"}}}); err != nil {
		t.Fatal(err)
	}
	e.publish(handoff.TypeMessageUser, conv(500), handoff.UserMessage{Text: "rejected"})
	e.waitDrained(20 * time.Second)
	e.sim.ResetFaults()
	// One cancel: the agent is told (one send_event of a system message),
	// the conversation goes back to the bot.
	e.publish(handoff.TypeHandoffCancelled, conv(501), handoff.HandoffCancelled{})
	e.waitDrained(20 * time.Second)

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	applied := float64(convs*(1+msgs) + 1)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"handoff_worker_events_total", []string{"outcome", "applied"}, applied},
		{"handoff_worker_events_total", []string{"type", "handoff.requested", "outcome", "applied"}, convs},
		{"handoff_worker_events_total", []string{"type", "message.user", "outcome", "applied"}, convs * msgs},
		{"handoff_worker_events_total", []string{"type", "handoff.cancelled", "outcome", "applied"}, 1},
		{"handoff_worker_events_total", []string{"outcome", "dead_lettered"}, 1},
		{"handoff_worker_dead_letters_total", []string{"reason", "livechat_validation"}, 1},
		{"handoff_worker_event_duration_seconds", nil, applied + 1},
		{"handoff_worker_end_to_end_lag_seconds", nil, applied},
		{"handoff_worker_events_in_flight", nil, 0},
		{"handoff_livechat_requests_total", []string{"action", "start_chat", "code", "200"}, convs},
		{"handoff_livechat_requests_total", []string{"action", "send_event", "code", "200"}, convs*msgs + 1},
		{"handoff_livechat_requests_total", []string{"action", "send_event", "code", "400"}, 1},
		{"handoff_livechat_requests_total", []string{"action", "deactivate_chat", "code", "200"}, 1},
		{"handoff_livechat_requests_total", []string{"action", "customer_token", "code", "200"}, convs},
		{"handoff_livechat_request_duration_seconds", []string{"action", "send_event"}, convs*msgs + 2},
		{"handoff_worker_token_reissues_total", []string{"kind", "agent"}, 1},
		{"handoff_worker_livechat_circuit_state", nil, 0},
	}
	for _, c := range checks {
		if got := metricValue(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Gauges read periodically from NATS and the store.
	waitFor(t, 10*time.Second, func() bool {
		return metricValue(t, reg, "handoff_conversations", "mode", "queued") == convs-1 &&
			metricValue(t, reg, "handoff_conversations", "mode", "bot") == 1
	})
	for _, name := range []string{"handoff_worker_consumer_pending_messages", "handoff_worker_consumer_ack_pending_messages", "handoff_worker_consumer_redelivered_messages", "handoff_worker_retries_total", "handoff_worker_reconciled_sends_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || (n == 0 && name != "handoff_worker_retries_total") {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
}
