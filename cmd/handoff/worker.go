package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// liveChatFlags configure the LiveChat client.
type liveChatFlags struct {
	cfg         livechat.Config
	refreshFile string
}

// refreshToken finds the refresh token: the flag or variable, else a file
// (--livechat-refresh-token-file, or the one `livechat login` writes by
// default), else the store (`livechat login --save store`). It arranges
// for a rotated token to be kept where it came from. st may be nil.
func (l *liveChatFlags) refreshToken(st store.Store, log *slog.Logger) error {
	if l.cfg.RefreshToken != "" {
		return nil
	}
	file := l.refreshFile
	if file == "" {
		if _, err := os.Stat(defaultRefreshTokenFile()); err == nil {
			file = defaultRefreshTokenFile()
		}
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return usageError{fmt.Errorf("--livechat-refresh-token-file: %w", err)}
		}
		l.cfg.RefreshToken = strings.TrimSpace(string(b))
		l.cfg.OnRefreshToken = func(_ context.Context, rt string) error {
			log.Info("LiveChat rotated the refresh token; keeping the new one", "file", file)
			return writeSecretFile(file, rt)
		}
		return nil
	}
	if st == nil {
		return nil
	}
	l.cfg.RefreshTokenSource = func(ctx context.Context) (string, error) {
		v, err := st.Value(ctx, refreshTokenValue)
		if errors.Is(err, store.ErrNotFound) {
			return "", errors.New("no LiveChat refresh token: set LIVECHAT_REFRESH_TOKEN or run handoff livechat login")
		}
		return v, err
	}
	l.cfg.OnRefreshToken = func(ctx context.Context, rt string) error {
		log.Info("LiveChat rotated the refresh token; keeping the new one in the store")
		return st.SetValue(ctx, refreshTokenValue, rt, 0)
	}
	return nil
}

func (l *liveChatFlags) register(f *flags) {
	f.String(&l.cfg.APIURL, "livechat-api-url", "LIVECHAT_API_URL", livechat.DefaultAPIURL, "LiveChat Web API base URL (the simulator's address in dev and tests)")
	f.String(&l.cfg.AccountsURL, "livechat-accounts-url", "LIVECHAT_ACCOUNTS_URL", livechat.DefaultAccountsURL, "LiveChat accounts (token) base URL")
	f.String(&l.cfg.Version, "livechat-api-version", "LIVECHAT_API_VERSION", livechat.DefaultVersion, "LiveChat Web API version")
	f.String(&l.cfg.Region, "livechat-region", "LIVECHAT_REGION", "", "LiveChat data centre (dal or fra); learned from tokens when empty")
	f.String(&l.cfg.ClientID, "livechat-client-id", "LIVECHAT_CLIENT_ID", "", "client ID of the LiveChat server-side app")
	f.String(&l.cfg.ClientSecret, "livechat-client-secret", "LIVECHAT_CLIENT_SECRET", "", "client secret of the app (prefer the environment variable)")
	f.String(&l.cfg.RefreshToken, "livechat-refresh-token", "LIVECHAT_REFRESH_TOKEN", "", "the agent's OAuth refresh token (prefer the environment variable)")
	f.String(&l.refreshFile, "livechat-refresh-token-file", "LIVECHAT_REFRESH_TOKEN_FILE", "", "file holding the refresh token, as `handoff livechat login` writes it; without this or the token, the login's default file, then the store, are tried")
	f.String(&l.cfg.OrganizationID, "livechat-organization-id", "LIVECHAT_ORGANIZATION_ID", "", "LiveChat organization ID; looked up from the license ID when empty")
	f.Int(&l.cfg.LicenseID, "livechat-license-id", "LIVECHAT_LICENSE_ID", 0, "LiveChat license ID, used to look up the organization ID")
}

func (l *liveChatFlags) client(hc *http.Client, log *slog.Logger) *livechat.Client {
	cfg := l.cfg
	cfg.HTTPClient = hc
	cfg.Logger = log
	cfg.UserAgent = "handoff/" + version
	return livechat.New(cfg)
}

func runWorker(ctx context.Context, args []string, stdout io.Writer) (err error) {
	defer func() { err = stoppedWhileStarting(ctx, err) }()
	var (
		n           natsFlags
		lg          logging
		lc          liveChatFlags
		sf          storeFlags
		metricsAddr string
		memLimit    string
		cfg         = worker.DefaultConfig()
		ob          outboundFlags
	)
	f := newFlags("worker", "[flags]", "Consume the inbound stream and deliver each conversation's events to LiveChat,\nin order and exactly once. Run as many as you like side by side. SIGTERM stops\nfetching, finishes in-flight events within --shutdown-timeout and exits 0.")
	n.register(f, true)
	f.Duration(&cfg.IdempotencyWindow, "idempotency-window", "HANDOFF_IDEMPOTENCY_WINDOW", cfg.IdempotencyWindow, fmt.Sprintf("how long a conversation remembers an applied event ID (at most %d per conversation), so a copy is not applied twice", handoff.MaxAppliedEvents))
	lg.register(f)
	lc.register(f)
	sf.register(f, false)
	f.String(&metricsAddr, "metrics-addr", "HANDOFF_METRICS_ADDR", ":9090", "address of /metrics, /healthz and /readyz (empty: off)")
	f.String(&memLimit, "memory-limit", "HANDOFF_MEMORY_LIMIT", "", "soft memory limit of the Go runtime, e.g. 400MiB for a 512Mi container (like GOMEMLIMIT, which wins when set; empty: none)")
	f.Int(&cfg.Group, "livechat-group", "LIVECHAT_GROUP", cfg.Group, "LiveChat group for handoffs that name none (0: all agents)")
	f.Bool(&cfg.Continuous, "continuous", "HANDOFF_CONTINUOUS", cfg.Continuous, "open chats even when no agent is online, so messages wait for one")
	f.Int(&cfg.MaxInFlight, "max-in-flight", "HANDOFF_MAX_IN_FLIGHT", cfg.MaxInFlight, "events this process holds at once")
	f.Int(&cfg.MaxHeldPerConversation, "max-held-per-conversation", "HANDOFF_MAX_HELD_PER_CONVERSATION", cfg.MaxHeldPerConversation, "events of one conversation this process holds, inbound and outbound (at least 2); the newer ones go back to the stream, timed to return when needed, so one conversation's backlog cannot stall the others")
	f.Int(&cfg.MaxAttempts, "max-attempts", "HANDOFF_MAX_ATTEMPTS", cfg.MaxAttempts, "attempts of one event on transient failures before it is dead-lettered (outages do not count)")
	f.Duration(&cfg.BackoffBase, "backoff-base", "HANDOFF_BACKOFF_BASE", cfg.BackoffBase, "first retry delay; doubles per attempt, with jitter")
	f.Duration(&cfg.BackoffMax, "backoff-max", "HANDOFF_BACKOFF_MAX", cfg.BackoffMax, "longest retry delay")
	f.Duration(&cfg.ShutdownTimeout, "shutdown-timeout", "HANDOFF_SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout, "time to finish in-flight events after SIGTERM")
	f.Int(&cfg.BreakerFailures, "breaker-failures", "HANDOFF_BREAKER_FAILURES", cfg.BreakerFailures, "consecutive LiveChat failures that open the circuit")
	f.Duration(&cfg.BreakerOpenFor, "breaker-open-for", "HANDOFF_BREAKER_OPEN_FOR", cfg.BreakerOpenFor, "how long the circuit stays open before probing LiveChat again")
	f.Duration(&cfg.PickupTimeout, "pickup-timeout", "HANDOFF_PICKUP_TIMEOUT", cfg.PickupTimeout, "how long a chat may wait with no agent before the sweep acts (checked every --sweep-interval)")
	f.String(&cfg.PickupAction, "pickup-action", "HANDOFF_PICKUP_ACTION", cfg.PickupAction, "after --pickup-timeout: wait (tell the user, keep waiting), bot (close the chat, back to the bot) or message (close the chat; its transcript and the customer's contact stay in LiveChat's archive for an agent to follow up; the user is told --no-agents-message-text and is back with the bot)")
	f.Duration(&cfg.QueuePollInterval, "queue-poll-interval", "HANDOFF_QUEUE_POLL_INTERVAL", cfg.QueuePollInterval, "how often one worker reads the queue position of every queued chat (customer get_chat) and tells users whose position changed (chat.queued); 0: off")
	f.Duration(&cfg.SweepInterval, "sweep-interval", "HANDOFF_SWEEP_INTERVAL", cfg.SweepInterval, "how often one worker reconciles every live chat with LiveChat (missed agent messages, chat ends); also right after start")
	ob.register(f)
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	log, err := lg.logger()
	if err != nil {
		return err
	}
	cfg.Stream = n.stream
	// One knob for both consumers: fairness between conversations is the
	// same question in both directions.
	ob.cfg.Consumer.MaxHeldPerConversation = cfg.MaxHeldPerConversation
	if err := setMemoryLimit(memLimit, log); err != nil {
		return err
	}

	st, err := sf.open(ctx, &n, "handoff-worker", log)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer st.Close()
	if err := lc.refreshToken(st, log); err != nil {
		return err
	}

	nc, js, err := n.connectWaiting(ctx, "handoff-worker", log)
	if err != nil {
		return err
	}
	defer nc.Drain()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lm, err := worker.NewLiveChatMetrics(reg)
	if err != nil {
		return err
	}
	hc := livechat.DefaultHTTPClient()
	hc.Transport = lm.Transport(hc.Transport)

	w, err := worker.New(cfg, js, lc.client(hc, log), st, reg, log)
	if err != nil {
		return err
	}
	ob.cfg.Consumer.AckWait = n.stream.AckWait
	ob.cfg.Consumer.ShutdownTimeout = cfg.ShutdownTimeout
	out, err := ob.consumer(ctx, js, st, reg, log)
	if err != nil {
		return err
	}
	if metricsAddr != "" {
		stopMetrics, err := serveOps(metricsAddr, reg, log, func(ctx context.Context) error {
			if !nc.IsConnected() {
				return errors.New("nats not connected")
			}
			return st.Ping(ctx)
		})
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	if out == nil {
		return w.Run(ctx)
	}
	// Both directions in one process, sharing its connections: the
	// outbound consumer starts once the streams and its durable exist
	// (Setup, as the worker runs it), and either one failing stops both.
	setupCtx, cancelSetup := context.WithTimeout(ctx, 30*time.Second)
	_, err = stream.Setup(setupCtx, js, n.stream)
	cancelSetup()
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return out.Run(gctx) })
	return g.Wait()
}

// serveOps serves /metrics, /healthz and /readyz on addr.
func serveOps(addr string, reg *prometheus.Registry, log *slog.Logger, ready func(context.Context) error) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", l.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// setMemoryLimit applies --memory-limit unless GOMEMLIMIT is set. A soft
// limit keeps resident memory under a container's limit by collecting
// garbage sooner; set it well above the live heap (a limit close to it, 64
// MiB with a thousand events in flight, was measured to slow the worker
// sixfold), so there is no default.
func setMemoryLimit(v string, log *slog.Logger) error {
	if os.Getenv("GOMEMLIMIT") != "" || v == "" || v == "0" {
		return nil
	}
	n, err := parseBytes(v)
	if err != nil {
		return usageError{fmt.Errorf("--memory-limit %q: %w", v, err)}
	}
	debug.SetMemoryLimit(n)
	log.Debug("memory limit set", "bytes", n)
	return nil
}

// parseBytes reads sizes like 64MiB, 1GiB, 512KiB or a number of bytes.
func parseBytes(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n <= 0 {
				return 0, errors.New("want a size like 64MiB or 1GiB")
			}
			return n * u.mult, nil
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("want a size like 64MiB or 1GiB")
	}
	return n, nil
}
