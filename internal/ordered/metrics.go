package ordered

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the consumer's Prometheus metrics, named
// handoff_<subsystem>_*: "worker" keeps the inbound worker's names.
type metrics struct {
	events              *prometheus.CounterVec
	duration            *prometheus.HistogramVec
	lag                 prometheus.Histogram
	retries             *prometheus.CounterVec
	inFlight            prometheus.Gauge
	deadLetters         *prometheus.CounterVec
	consumerPending     prometheus.Gauge
	consumerAckPending  prometheus.Gauge
	consumerRedelivered prometheus.Gauge
	ackRetries          *prometheus.CounterVec
	fairHandBacks       prometheus.Counter
	staleHandBacks      prometheus.Counter
	fairRecalls         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, subsystem, streamName string) (*metrics, error) {
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "handoff", Subsystem: subsystem, Name: name, Help: help}
	}
	hist := func(name, help string, buckets []float64) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{Namespace: "handoff", Subsystem: subsystem, Name: name, Help: help, Buckets: buckets}
	}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts(opts("events_total",
			"Events taken from "+streamName+", by type and outcome (applied, duplicate, skipped, deferred, retried, dead_lettered; panic counts each attempt whose handler panicked).")),
			[]string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(hist("event_duration_seconds",
			"Time from taking an event to its outcome, including retries.",
			[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}), []string{"type"}),
		lag: prometheus.NewHistogram(hist("end_to_end_lag_seconds",
			"Time from an event's publication to its handler applying it.",
			[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300})),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts(opts("retries_total",
			"Attempts that failed and will be retried, by reason.")), []string{"reason"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts(opts("events_in_flight",
			"Events this process holds: being applied or waiting behind an older event of their conversation."))),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts(opts("dead_letters_total",
			"Events moved to the dead-letter stream, by reason.")), []string{"reason"}),
		consumerPending: prometheus.NewGauge(prometheus.GaugeOpts(opts("consumer_pending_messages",
			"Events in "+streamName+" not yet delivered to any process (read from the consumer)."))),
		consumerAckPending: prometheus.NewGauge(prometheus.GaugeOpts(opts("consumer_ack_pending_messages",
			"Events delivered and not yet acknowledged (read from the consumer)."))),
		consumerRedelivered: prometheus.NewGauge(prometheus.GaugeOpts(opts("consumer_redelivered_messages",
			"Events delivered more than once and not yet acknowledged (read from the consumer)."))),
		ackRetries: prometheus.NewCounterVec(prometheus.CounterOpts(opts("ack_retries_total",
			"Acks (kind ack) and hand-backs (kind nak) sent again because JetStream did not answer, as during a leader election.")),
			[]string{"kind"}),
		fairHandBacks: prometheus.NewCounter(prometheus.CounterOpts(opts("fairness_hand_backs_total",
			"Events handed back to the stream, timed to return when their conversation needs them, because this process already held --max-held-per-conversation events of that conversation: the redeliveries one conversation's backlog costs."))),
		staleHandBacks: prometheus.NewCounter(prometheus.CounterOpts(opts("stale_hand_backs_total",
			"Hand-backs not sent because the delivery may no longer be this process's (its lease ran out): left to the ack wait, so that another process's delivery of the event is not cut short."))),
		fairRecalls: prometheus.NewCounter(prometheus.CounterOpts(opts("fairness_recalls_total",
			"Fairness hand-backs called back before their delay ran out because their conversation reached them on this process."))),
	}
	for _, c := range []prometheus.Collector{m.events, m.duration, m.lag, m.retries, m.inFlight,
		m.deadLetters, m.consumerPending, m.consumerAckPending, m.consumerRedelivered, m.ackRetries, m.fairHandBacks, m.staleHandBacks, m.fairRecalls} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(typ, outcome string, start time.Time) {
	m.events.WithLabelValues(typ, outcome).Inc()
	m.duration.WithLabelValues(typ).Observe(time.Since(start).Seconds())
}

func (m *metrics) retried(reason string) { m.retries.WithLabelValues(reason).Inc() }
