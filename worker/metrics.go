package worker

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the worker's LiveChat metrics, defined once here; the
// consumer's (events, retries, dead letters, in flight, lag, consumer info)
// are package ordered's, under the same handoff_worker_ prefix.
type metrics struct {
	tokenReissues *prometheus.CounterVec
	reconciled    prometheus.Counter
	breakerState  *prometheus.GaugeVec
	conversations *prometheus.GaugeVec
	sweepDuration prometheus.Histogram
	sweepCalls    *prometheus.CounterVec
	sweepRelayed  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		tokenReissues: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_worker_token_reissues_total",
			Help: "LiveChat access tokens obtained, by kind (agent, customer).",
		}, []string{"kind"}),
		reconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "handoff_worker_reconciled_sends_total",
			Help: "Messages found already in LiveChat by custom_id after an uncertain attempt, so not sent again.",
		}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "handoff_worker_livechat_circuit_state",
			Help: "State of the circuit breaker in front of each LiveChat host (api, accounts): 0 closed, 1 half-open, 2 open.",
		}, []string{"host"}),
		conversations: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "handoff_conversations",
			Help: "Live conversations by mode, read from the store (the same fleet-wide value on every worker: aggregate with max, not sum).",
		}, []string{"mode"}),
		sweepDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "handoff_worker_sweep_duration_seconds",
			Help:    "Duration of one reconciliation sweep over every live conversation (on the worker holding the sweep lease).",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30, 60, 120},
		}),
		sweepCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_worker_sweep_livechat_calls_total",
			Help: "LiveChat calls made by the reconciliation sweep (Agent Chat API list_chats, get_chat, deactivate_chat) and the queue poll (customer_get_chat), by action, retries included.",
		}, []string{"action"}),
		sweepRelayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "handoff_worker_sweep_relayed_messages_total",
			Help: "Agent messages the reconciliation sweep published that no webhook had delivered.",
		}),
	}
	for _, c := range []prometheus.Collector{m.conversations, m.tokenReissues, m.reconciled, m.breakerState,
		m.sweepDuration, m.sweepCalls, m.sweepRelayed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// LiveChatMetrics measures every request to LiveChat by action and status
// code. Wrap the LiveChat client's transport with it.
type LiveChatMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewLiveChatMetrics registers the LiveChat request metrics on reg.
func NewLiveChatMetrics(reg prometheus.Registerer) (*LiveChatMetrics, error) {
	l := &LiveChatMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_livechat_requests_total",
			Help: "Requests to LiveChat by action and HTTP status code (\"error\" when no answer came).",
		}, []string{"action", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "handoff_livechat_request_duration_seconds",
			Help:    "Duration of requests to LiveChat by action.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}, []string{"action"}),
	}
	for _, c := range []prometheus.Collector{l.requests, l.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Transport wraps next so every request is counted.
func (l *LiveChatMetrics) Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		action := actionOf(r.URL.Path)
		start := time.Now()
		resp, err := next.RoundTrip(r)
		l.duration.WithLabelValues(action).Observe(time.Since(start).Seconds())
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		l.requests.WithLabelValues(action, code).Inc()
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// actionOf names a LiveChat request by its path: the action of the Web API,
// or the accounts endpoint.
func actionOf(path string) string {
	if i := strings.LastIndex(path, "/action/"); i >= 0 {
		return path[i+len("/action/"):]
	}
	switch {
	case strings.HasSuffix(path, "/customer/token"):
		return "customer_token"
	case strings.HasSuffix(path, "/token"):
		return "token"
	}
	return "other"
}
