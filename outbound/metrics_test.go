package outbound

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Every outbound metric is lint-clean once it has samples, and the
// circuit gauge says which destination failed.
func TestMetricsLintClean(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	defer srv.Close()
	cb, err := NewCallback(CallbackConfig{URL: srv.URL, Secrets: testenv.NewSecret(t), Breaker: BreakerConfig{Failures: 1}}, m)
	if err != nil {
		t.Fatal(err)
	}
	_ = cb.Deliver(context.Background(), outgoing(agentEvent(t, "c", "e1", "", "x"), handoff.ReplyTo{Channel: handoff.ChannelREST}))
	m.deliveries.WithLabelValues("callback", "retried").Inc()
	m.latency.WithLabelValues("callback").Observe(0.01)
	if v := testutil.ToFloat64(m.circuit.WithLabelValues("callback")); v != 2 {
		t.Errorf("callback circuit state = %v after a failure with Failures 1, want 2 (open)", v)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}
