package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/outbound"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/prometheus/client_golang/prometheus"
)

// The user's side of a deployment, for tests that assert what a user
// sees rather than what reaches HANDOFF_OUT: the real outbound consumer
// delivering to a signed callback receiver and to the feed, and a real
// gateway (LiveChat's webhooks in, the feed out as SSE) that can be
// stopped and started again behind a fixed address.

// testAPIKey authenticates the tests' SSE clients to the gateway.
const testAPIKey = "worker-test-api-key"

// testWebhookSecret is the secret_key registered with LiveChat's webhooks.
const testWebhookSecret = "worker-test-webhook-secret"

// startOutbound runs the outbound consumer, with REST conversations
// delivered to rcv, until the test ends.
func (e *env) startOutbound(rcv *testenv.CallbackReceiver) {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	m, err := outbound.NewMetrics(reg)
	if err != nil {
		e.t.Fatal(err)
	}
	cb, err := outbound.NewCallback(outbound.CallbackConfig{URL: rcv.URL(), Secrets: rcv.Secret(), Timeout: 5 * time.Second}, m)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg := outbound.DefaultConfig()
	cfg.Consumer.BackoffBase = 5 * time.Millisecond
	cfg.Consumer.BackoffMax = 200 * time.Millisecond
	cfg.Consumer.OrderDelay = 20 * time.Millisecond
	cfg.Consumer.OutageDelay = 200 * time.Millisecond
	cfg.Consumer.StatsInterval = 200 * time.Millisecond
	_, js := e.nats.Connect()
	c, err := outbound.New(cfg, js, e.newStore(), outbound.Routes{"rest": cb}, m, reg, quietLog())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("outbound: %v", err)
			}
		case <-time.After(60 * time.Second):
			e.t.Errorf("outbound did not stop within 60s")
		}
	})
}

// gatewayFront is a gateway behind a fixed address: while stopped, every
// request is refused (502, as a load balancer with no backend answers)
// and counted.
type gatewayFront struct {
	e       *env
	srv     *httptest.Server
	mu      sync.Mutex
	gw      http.Handler // nil while stopped
	refused atomic.Int64
}

// startGateway starts a gateway, registers LiveChat's license webhooks
// (agents' events, chat ends) to it with the simulator and returns its
// front.
func (e *env) startGateway() *gatewayFront {
	e.t.Helper()
	f := &gatewayFront{e: e}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		gw := f.gw
		f.mu.Unlock()
		if gw == nil {
			f.refused.Add(1)
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		gw.ServeHTTP(w, r)
	}))
	e.t.Cleanup(f.srv.Close)
	f.Start()
	ctx := context.Background()
	lc := e.liveChat(nil)
	tok, err := lc.RefreshAgentToken(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, a := range []string{livechat.ActionIncomingEvent, livechat.ActionChatDeactivated} {
		if _, err := lc.RegisterWebhook(ctx, tok.AccessToken, livechat.Webhook{URL: f.srv.URL + "/livechat/webhook", Action: a,
			SecretKey: testWebhookSecret, Filters: map[string]any{"author_type": "agent"}}); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := lc.EnableLicenseWebhooks(ctx, tok.AccessToken); err != nil {
		e.t.Fatal(err)
	}
	return f
}

// Start starts a new gateway process behind the front.
func (f *gatewayFront) Start() {
	f.e.t.Helper()
	cfg := gateway.DefaultConfig()
	cfg.APIKeys = []string{testAPIKey}
	cfg.LiveChatWebhookSecret = testWebhookSecret
	_, js := f.e.nats.Connect()
	gw, err := gateway.New(cfg, publisher.New(js, publisher.WithSource("handoff-gateway")), f.e.newStore(),
		prometheus.NewRegistry(), quietLog(), gateway.WithFeed(js))
	if err != nil {
		f.e.t.Fatal(err)
	}
	f.mu.Lock()
	f.gw = gw
	f.mu.Unlock()
}

// Stop stops the gateway: from now on nothing reaches it.
func (f *gatewayFront) Stop() {
	f.mu.Lock()
	f.gw = nil
	f.mu.Unlock()
}

// Events opens the conversation's event stream (SSE) as a web front end
// does.
func (f *gatewayFront) Events(t testing.TB, conversation string) *testenv.SSEClient {
	t.Helper()
	return testenv.OpenSSE(t, f.srv.URL+"/v1/conversations/"+conversation+"/events", "",
		http.Header{"Authorization": {"Bearer " + testAPIKey}})
}
