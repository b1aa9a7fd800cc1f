package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/outbound"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	funnelAPIKey        = "funnel-api-key"
	funnelWebhookSecret = "funnel-webhook-secret"
)

// funnelEnv is the whole path of a handoff: the gateway (REST API and
// LiveChat webhooks, which the simulator sends it), and worker processes
// each running the inbound worker and the outbound consumer on one
// registry, delivering REST conversations to a callback receiver.
type funnelEnv struct {
	*env
	gw  *httptest.Server
	rcv *testenv.CallbackReceiver
}

func newFunnelEnv(t *testing.T, mutate func(*gateway.Config)) *funnelEnv {
	t.Helper()
	e := &funnelEnv{env: newEnv(t), rcv: testenv.StartCallbackReceiver(t, testenv.NewSecret(t))}
	gcfg := gateway.DefaultConfig()
	gcfg.LiveChatWebhookSecret = funnelWebhookSecret
	gcfg.APIKeys = []string{funnelAPIKey}
	if mutate != nil {
		mutate(&gcfg)
	}
	_, js := e.nats.Connect()
	gw, err := gateway.New(gcfg, publisher.New(js), e.newStore(), prometheus.NewRegistry(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	e.gw = httptest.NewServer(gw)
	t.Cleanup(e.gw.Close)

	// What `handoff setup --livechat-webhook-url` registers.
	ctx := context.Background()
	lc := e.liveChat(nil)
	tok, err := lc.RefreshAgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{livechat.ActionIncomingEvent, livechat.ActionChatDeactivated, livechat.ActionIncomingChat,
		livechat.ActionUserAdded, livechat.ActionChatTransferred} {
		if _, err := lc.RegisterWebhook(ctx, tok.AccessToken, livechat.Webhook{URL: e.gw.URL + "/livechat/webhook", Action: a,
			SecretKey: funnelWebhookSecret, Type: "license", Filters: map[string]any{"only_my_chats": true}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := lc.EnableLicenseWebhooks(ctx, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	return e
}

// startProcess runs what `handoff worker` runs: the worker and the
// outbound consumer sharing one registry, until stop.
func (e *funnelEnv) startProcess(cfg worker.Config) (reg *prometheus.Registry, stop func()) {
	e.t.Helper()
	reg = prometheus.NewRegistry()
	_, js := e.nats.Connect()
	st := e.newStore()
	w, err := worker.New(cfg, js, e.liveChat(reg), st, reg, quietLog())
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := outbound.NewMetrics(reg)
	if err != nil {
		e.t.Fatal(err)
	}
	cb, err := outbound.NewCallback(outbound.CallbackConfig{URL: e.rcv.URL(), Secrets: e.rcv.Secret(), Timeout: 2 * time.Second,
		Breaker: outbound.BreakerConfig{Failures: 3, OpenFor: 200 * time.Millisecond}}, m)
	if err != nil {
		e.t.Fatal(err)
	}
	ocfg := outbound.DefaultConfig()
	ocfg.Consumer.BackoffBase = 20 * time.Millisecond
	ocfg.Consumer.BackoffMax = 200 * time.Millisecond
	ocfg.Consumer.OutageDelay = 200 * time.Millisecond
	ocfg.Consumer.OrderDelay = 20 * time.Millisecond
	ocfg.Consumer.ShutdownTimeout = 2 * time.Second
	out, err := outbound.New(ocfg, js, st, outbound.Routes{handoff.ChannelREST: cb}, m, reg, quietLog())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			e.t.Errorf("worker.Run: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := out.Run(ctx); err != nil {
			e.t.Errorf("outbound: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	e.t.Cleanup(stop)
	return reg, stop
}

// rest calls the gateway's REST API as a bot does.
func (e *funnelEnv) rest(conv, action string, body any) {
	e.t.Helper()
	b, err := jsonBody(body)
	if err != nil {
		e.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, e.gw.URL+"/v1/conversations/"+url.PathEscape(conv)+"/"+action, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+funnelAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		e.t.Fatalf("POST %s %s: %s", conv, action, resp.Status)
	}
}

// waitFunnel waits until the conversation's funnel satisfies cond.
func (e *funnelEnv) waitFunnel(conv, what string, cond func(*handoff.Funnel) bool) handoff.Conversation {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, err := e.st.Conversation(context.Background(), conv)
		if err != nil {
			e.t.Fatal(err)
		}
		if rec.Funnel != nil && cond(rec.Funnel) {
			return rec
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: funnel never %s: %+v (mode %s)", conv, what, rec.Funnel, rec.Mode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitQuiet waits until both directions' streams are empty.
func (e *funnelEnv) waitQuiet() {
	e.t.Helper()
	e.waitDrained(30 * time.Second)
	s, err := e.js.Stream(context.Background(), stream.OutStream)
	if err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, 30*time.Second, func() bool {
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
}

// TestFunnelMetricsCountWhatHappened is issue 10's acceptance 4: three
// handoffs go through the real gateway, simulator, workers and outbound
// consumers: one reaches an agent who replies twice (the user's callback
// endpoint refusing the first deliveries, so they are retried) and closes
// the chat; one is cancelled by the user while queued; one waits until the
// pickup timeout gives it back to the bot. Every start_chat's answer is
// lost once, so every handoff is retried after it began. The counts,
// summed over three worker processes (two at once, then a third), are
// exactly what happened, and every registry passes client_golang's lint.
func TestFunnelMetricsCountWhatHappened(t *testing.T) {
	e := newFunnelEnv(t, nil)
	cfg := testConfig()
	cfg.SweepInterval = 500 * time.Millisecond
	cfg.PickupTimeout = time.Hour
	cfg.PickupAction = worker.PickupBot
	if err := e.sim.SetFaults(livechatsim.Faults{DropAfterApply: &livechatsim.Drop{Rate: 1, Actions: []string{"start_chat"}}}); err != nil {
		t.Fatal(err)
	}
	reg1, stop1 := e.startProcess(cfg)
	reg2, stop2 := e.startProcess(cfg)

	served, cancelled, timedOut := "funnel-served", "funnel-cancelled", "funnel-timeout"
	two, outside := 2, 1000
	e.rest(served, "handoff", handoff.HandoffRequested{Text: "agent please"})
	e.rest(cancelled, "handoff", handoff.HandoffRequested{Text: "agent please", Group: &two})
	e.rest(timedOut, "handoff", handoff.HandoffRequested{Text: "agent please", Group: &outside})
	queued := func(f *handoff.Funnel) bool { return f.Reached(handoff.StageQueued) }
	rec := e.waitFunnel(served, "queued", queued)
	e.waitFunnel(cancelled, "queued", queued)
	e.waitFunnel(timedOut, "queued", queued)
	e.sim.ResetFaults()

	// The agent replies twice while the user's endpoint is down, then
	// closes the chat.
	e.rcv.Down(http.StatusServiceUnavailable)
	for _, text := range []string{"Hi, I'm Tom", "Your order ships today"} {
		if err := e.sim.AgentMessage(rec.ChatID, text); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, func() bool {
		return metricValue(t, reg1, "handoff_outbound_deliveries_total", "outcome", "retried")+
			metricValue(t, reg2, "handoff_outbound_deliveries_total", "outcome", "retried") > 2
	})
	e.rcv.Up()
	e.waitFunnel(served, "replied", func(f *handoff.Funnel) bool { return f.Reached(handoff.StageFirstAgentReply) })
	if err := e.sim.CloseChat(rec.ChatID); err != nil {
		t.Fatal(err)
	}
	e.waitFunnel(served, "closed", func(f *handoff.Funnel) bool { return f.Reached(handoff.StageClosed) })

	// The user goes back to the bot while still queued.
	e.rest(cancelled, "cancel", handoff.HandoffCancelled{Reason: "never mind"})
	e.waitFunnel(cancelled, "abandoned", func(f *handoff.Funnel) bool { return f.Abandoned != "" })
	e.waitQuiet()
	stop1()
	stop2()

	// A worker with a short pickup timeout: the chat still queued is
	// closed and the conversation goes back to the bot.
	cfg.PickupTimeout = time.Second
	reg3, _ := e.startProcess(cfg)
	e.waitFunnel(timedOut, "abandoned", func(f *handoff.Funnel) bool { return f.Abandoned != "" })
	e.waitMode(timedOut, handoff.ModeClosed, 20*time.Second)
	e.waitQuiet()

	regs := []*prometheus.Registry{reg1, reg2, reg3}
	for i, reg := range regs {
		problems, err := testutil.GatherAndLint(reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("process %d: lint: %s: %s", i+1, p.Metric, p.Text)
		}
	}
	sum := func(name string, labels ...string) float64 {
		var v float64
		for _, reg := range regs {
			v += metricValue(t, reg, name, labels...)
		}
		return v
	}
	const (
		stages    = "handoff_funnel_stage_total"
		durations = "handoff_funnel_stage_duration_seconds"
		abandoned = "handoff_funnel_abandoned_total"
	)
	rest := string(handoff.ChannelREST)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{stages, nil, 3 + 3 + 3 + 1 + 1 + 1},
		{stages, []string{"stage", "requested"}, 3},
		{stages, []string{"stage", "requested", "channel", rest, "group", "default"}, 1},
		{stages, []string{"stage", "requested", "channel", rest, "group", "2"}, 1},
		{stages, []string{"stage", "requested", "channel", rest, "group", "other"}, 1},
		{stages, []string{"stage", "chat_started"}, 3},
		{stages, []string{"stage", "queued"}, 3},
		{stages, []string{"stage", "agent_joined", "group", "default"}, 1},
		{stages, []string{"stage", "first_agent_reply", "group", "default"}, 1},
		{stages, []string{"stage", "closed", "group", "default"}, 1},
		{durations, nil, 3 + 3 + 1 + 1 + 1},
		{durations, []string{"stage", "requested"}, 0},
		{durations, []string{"stage", "chat_started"}, 3},
		{durations, []string{"stage", "queued"}, 3},
		{durations, []string{"stage", "agent_joined", "channel", rest, "group", "default"}, 1},
		{durations, []string{"stage", "first_agent_reply", "channel", rest, "group", "default"}, 1},
		{durations, []string{"stage", "closed", "channel", rest, "group", "default"}, 1},
		{abandoned, nil, 2},
		{abandoned, []string{"reason", handoff.AbandonUserCancelled, "channel", rest, "group", "2"}, 1},
		{abandoned, []string{"reason", handoff.AbandonPickupTimeout, "channel", rest, "group", "other"}, 1},
	}
	for _, c := range checks {
		if got := sum(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The records agree: each handoff ended once, the way it did.
	for conv, want := range map[string]string{served: "", cancelled: handoff.AbandonUserCancelled, timedOut: handoff.AbandonPickupTimeout} {
		rec, err := e.st.Conversation(context.Background(), conv)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Funnel == nil || rec.Funnel.Abandoned != want || rec.Funnel.Reached(handoff.StageClosed) != (want == "") {
			t.Errorf("%s: funnel %+v, want abandoned %q", conv, rec.Funnel, want)
		}
	}
	// Both agent replies reached the user once each, after the retries.
	if n := len(e.rcv.Unique()); n < 2 {
		t.Errorf("callback receiver has %d events, want at least the two replies", n)
	}
}

// TestFunnelNoAgents: LiveChat finds no agent online and archives the
// chat; with --when-no-agents bot the gateway both tells the user
// (agents.unavailable, seen by outbound) and cancels the handoff (seen by
// the worker). The handoff is abandoned once, for no_agents, whichever
// side comes first, and the close that follows counts nothing. Whether it
// was counted queued first depends on which of LiveChat's two webhooks
// (incoming_chat, the archive notice) the gateway relays first, so that
// one count may be 0 or 1.
func TestFunnelNoAgents(t *testing.T) {
	e := newFunnelEnv(t, func(c *gateway.Config) { c.WhenNoAgents = gateway.WhenNoAgentsBot })
	if err := e.sim.SetFaults(livechatsim.Faults{AgentsOffline: true}); err != nil {
		t.Fatal(err)
	}
	reg, _ := e.startProcess(testConfig())
	conv := "funnel-nobody"
	e.rest(conv, "handoff", handoff.HandoffRequested{Text: "agent please"})
	e.waitFunnel(conv, "abandoned", func(f *handoff.Funnel) bool { return f.Abandoned != "" })
	e.waitMode(conv, handoff.ModeBot, 20*time.Second)
	e.waitQuiet()

	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"handoff_funnel_stage_total", []string{"stage", "requested", "channel", "rest", "group", "default"}, 1},
		{"handoff_funnel_stage_total", []string{"stage", "chat_started"}, 1},
		{"handoff_funnel_stage_total", []string{"stage", "agent_joined"}, 0},
		{"handoff_funnel_stage_total", []string{"stage", "first_agent_reply"}, 0},
		{"handoff_funnel_stage_total", []string{"stage", "closed"}, 0},
		{"handoff_funnel_abandoned_total", nil, 1},
		{"handoff_funnel_abandoned_total", []string{"reason", handoff.AbandonNoAgents, "channel", "rest", "group", "default"}, 1},
	}
	for _, c := range checks {
		if got := metricValue(t, reg, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if q := metricValue(t, reg, "handoff_funnel_stage_total", "stage", "queued"); q > 1 {
		t.Errorf("queued counted %v times", q)
	}
}

func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request body: %w", err)
	}
	return b, nil
}
