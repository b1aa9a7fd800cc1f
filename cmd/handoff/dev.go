package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/internal/demo"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
)

func runDev(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		lg             logging
		host           string
		natsPort       int
		dataDir        string
		backend        string
		redisURL       string
		simAddr        string
		gatewayAddr    string
		metricsAddr    string
		callbackURL    string
		callbackSecret string
		dialogflowPull string
		esFollowup     string
		demoAddr       string
		maxHeld        int
	)
	f := newFlags("dev", "[flags]", "Run the whole service in one process for local development: an embedded NATS\nserver with JetStream and the streams, the state store (Redis when --redis-url\nis given or redis-server is on PATH, otherwise JetStream key-value buckets on\nthe embedded NATS: nothing to install), the LiveChat simulator, a worker and\nthe gateway (with authentication off, listening on loopback). Data stays in\n--data-dir, so the next start resumes. Stop with Ctrl-C.")
	lg.register(f)
	f.String(&host, "host", "HANDOFF_DEV_HOST", "127.0.0.1", "address the embedded servers listen on")
	f.Int(&natsPort, "nats-port", "HANDOFF_DEV_NATS_PORT", 4222, "port of the embedded NATS server (-1 picks a free one)")
	f.String(&dataDir, "data-dir", "HANDOFF_DEV_DATA_DIR", ".handoff", "where JetStream (and redis-server) keep their files; kept across starts")
	f.String(&backend, "store", "HANDOFF_DEV_STORE", "auto", "state store: auto (redis when --redis-url is given or redis-server is on PATH, else nats), redis or nats")
	f.String(&redisURL, "redis-url", "HANDOFF_DEV_REDIS_URL", "", "use this Redis instead of starting redis-server")
	f.String(&simAddr, "sim-addr", "HANDOFF_DEV_SIM_ADDR", "127.0.0.1:8091", "address of the LiveChat simulator")
	f.String(&gatewayAddr, "gateway-addr", "HANDOFF_DEV_GATEWAY_ADDR", "127.0.0.1:8080", "address of the gateway")
	f.String(&metricsAddr, "metrics-addr", "HANDOFF_DEV_METRICS_ADDR", "127.0.0.1:9090", "address of the worker's /metrics")
	f.String(&demoAddr, "demo-addr", "HANDOFF_DEV_DEMO_ADDR", "127.0.0.1:8000", "address of the demo page: a user and a LiveChat agent side by side in the browser (empty: off)")
	f.String(&callbackURL, "callback-url", "HANDOFF_CALLBACK_URL", "", "POST agents' replies of REST and Dialogflow conversations here, signed (see docs/callbacks.md; empty: feed only)")
	f.String(&callbackSecret, "callback-secret", "HANDOFF_CALLBACK_SECRET", "", "callback signing secret, whsec_<base64> (prefer the environment variable)")
	f.String(&dialogflowPull, "dialogflow-pull", "HANDOFF_GATEWAY_DIALOGFLOW_PULL", "auto", "answer each Dialogflow turn with the agent's messages no push surface showed yet: auto (on when --callback-url is empty), on or off")
	f.String(&esFollowup, "es-followup-event", "HANDOFF_GATEWAY_ES_FOLLOWUP_EVENT", "", "ES event (e.g. HANDOFF_ENDED) the first answer after the chat closed, or a cancel, invokes so the bot takes the turn (empty: none)")
	f.Int(&maxHeld, "max-held-per-conversation", "HANDOFF_MAX_HELD_PER_CONVERSATION", worker.DefaultConfig().MaxHeldPerConversation, "events of one conversation the worker holds, inbound and outbound (at least 2); the newer ones go back to the stream, timed to return when needed, so one conversation's backlog cannot stall the others")
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	log, err := lg.logger()
	if err != nil {
		return err
	}
	switch backend {
	case "auto":
		backend = "nats"
		if _, err := exec.LookPath("redis-server"); err == nil || redisURL != "" {
			backend = "redis"
		}
	case "redis", "nats":
	default:
		return usageError{fmt.Errorf("dev: --store %q: want auto, redis or nats", backend)}
	}
	if dataDir == "" {
		return usageError{errors.New("dev: --data-dir is empty")}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("dev: data dir: %w", err)
	}
	srv, err := stream.RunEmbedded(host, natsPort, dataDir)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	}()
	natsURL := srv.ClientURL()
	nc, js, err := connect(natsURL, "handoff-dev", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	changes, err := stream.Setup(ctx, js, stream.DefaultConfig())
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	for _, c := range changes {
		log.Info("stream setup", c.Kind, c.Name, "action", c.Action)
	}

	if backend == "redis" && redisURL == "" {
		url, stop, err := startRedis(host, dataDir, log)
		if err != nil {
			return err
		}
		defer stop()
		redisURL = url
	}
	storeArgs := []string{"--store", "nats"}
	if backend == "redis" {
		storeArgs = []string{"--store", "redis", "--redis-url", redisURL}
	}

	simURL := "http://" + simAddr
	// Each part runs as its own subcommand would, from the same flags, so
	// dev exercises the production wiring.
	parts := []struct {
		name string
		run  func(context.Context, []string, io.Writer) error
		args []string
	}{
		{"livechat-sim", runLiveChatSim, []string{"--addr", simAddr}},
		{"worker", runWorker, append([]string{"--nats-url", natsURL,
			"--livechat-api-url", simURL, "--livechat-accounts-url", simURL,
			"--livechat-client-id", "handoff-dev", "--livechat-client-secret", "dev", "--livechat-refresh-token", "dev",
			"--metrics-addr", metricsAddr, "--callback-url", callbackURL, "--callback-secret", callbackSecret,
			"--max-held-per-conversation", strconv.Itoa(maxHeld)}, storeArgs...)},
		{"gateway", runGateway, append([]string{"--nats-url", natsURL,
			"--listen", gatewayAddr, "--insecure-no-auth", "--livechat-webhook-secret", devWebhookSecret,
			"--callback-url", callbackURL, "--dialogflow-pull", dialogflowPull, "--es-followup-event", esFollowup}, storeArgs...)},
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(parts))
	for i, p := range parts {
		if i > 0 && p.name == "worker" {
			// The worker asks the simulator for tokens at once: wait for it.
			if err := waitListening(ctx, simAddr); err != nil {
				return err
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := append(p.args, "--log-format", lg.format, "--log-level", lg.level, "--log-personal-data="+strconv.FormatBool(lg.personal))
			if err := p.run(ctx, args, io.Discard); err != nil {
				errc <- fmt.Errorf("dev: %s: %w", p.name, err)
				cancel()
			}
		}()
	}
	state := "JetStream key-value buckets (handoff, handoff_mode_*)"
	if backend == "redis" {
		state = "Redis at " + redactURL(redisURL)
	}
	if demoAddr != "" {
		stopDemo, err := serveDemo(demoAddr, "http://"+gatewayAddr, simURL, log)
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		defer stopDemo()
	}
	if err := devReady(ctx, stdout, state, natsURL, dataDir, simAddr, simURL, gatewayAddr, metricsAddr); err != nil {
		cancel()
		wg.Wait()
		return err
	}
	if demoAddr != "" {
		fmt.Fprintf(stdout, "Demo page: http://%s/ (a user and the LiveChat agent side by side)\n", demoAddr)
	}
	var first error
	select {
	case first = <-errc:
	case <-ctx.Done():
	}
	cancel()
	log.Info("shutting down")
	wg.Wait()
	return first
}

// devReady waits for dev's parts to listen, connects the simulator's
// webhooks to the gateway, and prints what runs and what to try.
func devReady(ctx context.Context, stdout io.Writer, state, natsURL, dataDir, simAddr, simURL, gatewayAddr, metricsAddr string) error {
	if err := waitListening(ctx, gatewayAddr); err != nil {
		return err
	}
	// The simulator sends agents' replies and closes back to the gateway,
	// as LiveChat would after `handoff setup`.
	sim := livechat.New(livechat.Config{APIURL: simURL, AccountsURL: simURL, ClientID: "handoff-dev", ClientSecret: "dev", RefreshToken: "dev"})
	if err := registerWebhooks(ctx, sim, "http://"+gatewayAddr+"/livechat/webhook", devWebhookSecret, io.Discard); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	fmt.Fprintf(stdout, `handoff dev is running
  NATS:       %s (JetStream data in %s)
  state:      %s
  LiveChat:   %s (simulator; see %s/_sim/chats)
  gateway:    http://%s (authentication OFF: loopback only)
  metrics:    http://%s/metrics
Try:
  curl -X POST http://%s/v1/conversations/demo-1/handoff -H 'Content-Type: application/json' -d '{"customer":{"name":"Ana"},"text":"agent"}'
  curl -X POST http://%s/v1/conversations/demo-1/messages -H 'Content-Type: application/json' -d '{"text":"my order is late"}'
  curl %s/_sim/chats
  curl -X POST %s/_sim/chats/<chat id>/agent_message -d '{"text":"Hi, I am Tom"}'
  (the reply is published as message.agent on handoff.out.demo-1)
Press Ctrl-C to stop.
`, natsURL, dataDir, state, simURL, simURL, gatewayAddr, metricsAddr, gatewayAddr, gatewayAddr, simURL, simURL)
	return nil
}

// devWebhookSecret is the LiveChat webhook secret between dev's simulator
// and gateway; both are on loopback only.
const devWebhookSecret = "handoff-dev-webhook-secret"

// startRedis runs redis-server from PATH on a free port, with its files in
// dir, until stop is called.
func startRedis(host, dir string, log *slog.Logger) (url string, stop func(), err error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, errors.New("dev: --store redis: redis-server is not on PATH (Debian: apt-get install redis-server); pass --redis-url, or --store nats to need nothing installed")
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", nil, fmt.Errorf("dev: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", host, "--dir", dir,
		"--save", "", "--appendonly", "yes", "--protected-mode", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("dev: start redis-server: %w", err)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	if err := waitListening(context.Background(), addr); err != nil {
		_ = cmd.Process.Kill()
		return "", nil, fmt.Errorf("dev: redis-server: %w", err)
	}
	log.Info("redis-server started", "addr", addr)
	return "redis://" + addr + "/0", func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }, nil
}

func waitListening(ctx context.Context, addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after 15s", addr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// redactURL hides a password in a URL for printing.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// serveDemo serves the demo page on addr until stop is called.
func serveDemo(addr, gatewayURL, simURL string, log *slog.Logger) (stop func(), err error) {
	h, err := demo.New(gatewayURL, simURL)
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dev: demo page on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("demo page", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
