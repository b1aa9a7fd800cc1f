package outbound

import (
	"github.com/handoff-dev/handoff/internal/funnel"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are outbound's own metrics, defined once here. The consumer's
// generic ones (handoff_outbound_events_total, dead letters, lag, ...) come
// from internal/ordered under the "outbound" subsystem.
type Metrics struct {
	deliveries *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	circuit    *prometheus.GaugeVec
	// funnel is shared with the worker in the same process (funnel.New
	// returns the set already registered).
	funnel *funnel.Metrics
}

// NewMetrics registers outbound's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_outbound_deliveries_total",
			Help: "Delivery attempts to user surfaces by channel (feed, google_chat, callback) and outcome (delivered, duplicate, retried, outage, rejected).",
		}, []string{"channel", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "handoff_outbound_agent_message_latency_seconds",
			Help:    "Time from an agent's message (the event's time) to its delivery to the user's surface, by channel.",
			Buckets: []float64{.005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
		}, []string{"channel"}),
		circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "handoff_outbound_circuit_state",
			Help: "State of the circuit breaker in front of each destination (google_chat, callback): 0 closed, 1 half-open, 2 open.",
		}, []string{"destination"}),
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.latency, m.circuit} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	var err error
	if m.funnel, err = funnel.New(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// outcome names a delivery's result for handoff_outbound_deliveries_total.
func outcome(err error) string {
	if err == nil {
		return "delivered"
	}
	e, ok := AsError(err)
	switch {
	case !ok:
		return "retried"
	case e.Class == Permanent:
		return "rejected"
	case e.Class == Outage:
		return "outage"
	}
	return "retried"
}
