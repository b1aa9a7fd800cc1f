// Package gateway is the HTTP ingress of handoff: it turns Dialogflow ES and
// CX webhook calls, Google Chat app events, REST calls and LiveChat webhooks
// into handoff events and publishes them with package publisher. It holds the
// authentication (Dialogflow secrets, Google-signed JWTs, API keys, LiveChat
// webhook secrets) and the HTTP plumbing, so that publisher stays a small
// library a bot can import without an HTTP server.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/texts"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config; DefaultConfig returns them filled in.
const (
	DefaultMaxBodyBytes      = 1 << 20
	DefaultRequestTimeout    = 4 * time.Second
	DefaultTranscriptTurns   = 50
	DefaultESContext         = "live-agent"
	DefaultESContextLifespan = 50
	DefaultCXParameter       = "live_agent"
	DefaultChatIssuer        = "chat@system.gserviceaccount.com"
	DefaultChatJWKSURL       = "https://www.googleapis.com/service_accounts/v1/jwk/chat@system.gserviceaccount.com"
	DefaultGoogleJWKSURL     = "https://www.googleapis.com/oauth2/v3/certs"
	DefaultDialogflowHeader  = "X-Handoff-Secret"
)

// Config configures the HTTP ingress. Start from
// DefaultConfig and set the credentials; New refuses a
// configuration without credentials unless InsecureNoAuth is set.
//
// Per-language maps are keyed by Dialogflow language code ("en", "pt-br",
// case-insensitive); a lookup tries the exact code, then the base language,
// then the "" key.
type Config struct {
	// MaxBodyBytes bounds a request body; larger bodies get 413.
	MaxBodyBytes int64
	// RequestTimeout bounds the work of one request, publishing included.
	// Keep it under the caller's own timeout (Dialogflow ES: 5 s, fixed)
	// so the caller sees our 503 rather than its own timeout.
	RequestTimeout time.Duration
	// InsecureNoAuth turns authentication off on every endpoint except the
	// LiveChat webhook's secret. Only for local development: CheckListen
	// refuses it on an address other machines reach unless
	// InsecureAllowRemote is set too.
	InsecureNoAuth      bool
	InsecureAllowRemote bool

	// Dialogflow (ES and CX share them). Each configured credential is
	// accepted on its own: basic auth, or the header DialogflowHeader with
	// value DialogflowHeaderValue (use Authorization with "Bearer <token>"
	// for a bearer secret).
	DialogflowUsername    string
	DialogflowPassword    string
	DialogflowHeader      string
	DialogflowHeaderValue string

	// ESHandoffIntents and ESCancelIntents are intent display names.
	ESHandoffIntents []string
	ESCancelIntents  []string
	// ESContext is the output context set while an agent owns the chat,
	// for ESContextLifespan turns (refreshed on every forwarded turn).
	ESContext         string
	ESContextLifespan int
	// ESFollowupEvent, when set, is the followupEventInput of the first
	// ES answer after the chat closed (and of a cancel), so the bot takes
	// the turn; the closing text is its parameter "text".
	ESFollowupEvent string
	// CXHandoffTags and CXCancelTags are fulfillment tags.
	CXHandoffTags []string
	CXCancelTags  []string
	// CXParameter is the session parameter set to true while an agent owns
	// the chat and deleted (null) on cancel.
	CXParameter string
	// NameParameter and EmailParameter name the session parameters that
	// hold the customer's name and email.
	NameParameter  string
	EmailParameter string

	// ChatAudience is the audience of Google Chat's tokens: the project
	// number, or the endpoint URL (then Google ID tokens are accepted too).
	ChatAudience string
	// ChatJWKSURL serves the keys of chat@system.gserviceaccount.com.
	ChatJWKSURL string
	// ChatIDTokenJWKSURL serves Google's OpenID keys for ID tokens.
	ChatIDTokenJWKSURL string
	// ChatIDTokenEmails are the service accounts whose ID tokens are
	// accepted when ChatAudience is a URL (default Chat's own; add an
	// add-on's service account here).
	ChatIDTokenEmails []string
	// ChatHandoffActions and ChatCancelActions are card action method
	// names (classic actionMethodName, add-on invokedFunction).
	ChatHandoffActions []string
	ChatCancelActions  []string
	// ChatJWKSRefresh is how long fetched keys are trusted before a
	// refresh; an unknown key ID triggers a refresh sooner, at most once
	// per ChatJWKSMinRefresh.
	ChatJWKSRefresh    time.Duration
	ChatJWKSMinRefresh time.Duration
	// HTTPClient fetches the JWKS (default: 10 s timeout).
	HTTPClient *http.Client

	// APIKeys are the bearer tokens the REST API accepts.
	APIKeys []string

	// HandoffPhrases ask for a person when found in the user's text as
	// whole words; CancelPhrases return to the bot when they are the whole
	// utterance (see phraseSet for the policy).
	HandoffPhrases map[string][]string
	CancelPhrases  map[string][]string
	// HandoffReply tells the user what happens next on the handoff turn;
	// CancelReply confirms the return to the bot; AckReply answers a turn
	// forwarded to the agent ("" sends nothing); ChatBotReply answers a
	// Google Chat message while no agent is involved.
	HandoffReply map[string]string
	CancelReply  map[string]string
	AckReply     map[string]string
	ChatBotReply map[string]string
	// Group is the LiveChat group (nil: LiveChat's default); Groups
	// overrides it per language.
	Group  *int
	Groups map[string]int
	// TranscriptTurns is how many bot-side turns per conversation are kept
	// for the transcript of a handoff.
	TranscriptTurns int

	// LiveChatWebhookSecret is the secret_key registered with LiveChat's
	// webhooks; /livechat/webhook is served only when it is set, even with
	// InsecureNoAuth: the endpoint writes conversation modes, and without a
	// registered secret no real LiveChat would call it anyway.
	LiveChatWebhookSecret string

	// StreamTokenSecret signs the per-conversation stream tokens returned
	// by the REST handoff call; empty issues none (API keys only).
	StreamTokenSecret string
	// CORSOrigins may read the event stream from a browser ("*": any).
	CORSOrigins []string
	// MaxStreams bounds the Server-Sent Event streams this process serves
	// at once; StreamHeartbeat is how often an idle stream gets a comment
	// line, so proxies keep it open and clients notice a dead one.
	MaxStreams      int
	StreamHeartbeat time.Duration

	// DialogflowPull says whether a Dialogflow answer carries the agent's
	// messages waiting on the feed that no push surface showed:
	// DialogflowPullAuto (default: when CallbackConfigured is false),
	// DialogflowPullOn or DialogflowPullOff. Needs the feed (WithFeed).
	DialogflowPull string
	// CallbackConfigured tells the gateway that the workers deliver to a
	// callback (--callback-url), which then shows agents' replies to
	// Dialogflow users: DialogflowPullAuto leaves the pull off.
	CallbackConfigured bool

	// WhenNoAgents is what happens when LiveChat finds no agent:
	// WhenNoAgentsWait (default) or WhenNoAgentsBot.
	WhenNoAgents string

	// Texts are the status and closing lines told to the user per
	// language (package texts; the outbound delivery uses the same).
	// Texts.NoAgentsBot also answers a handoff refused by Limits.
	Texts texts.Set
	// Limits bound handoffs and messages (see Limits).
	Limits Limits
	// SlowDownReply answers, on Dialogflow and Google Chat, a message over
	// the conversation's message rate; the message is not forwarded.
	SlowDownReply map[string]string
	// UnknownChatWait is how long a LiveChat webhook for a chat the store
	// does not know yet is held, while a handoff is pending, before the
	// answer asks LiveChat to deliver it again (see chatConversation).
	UnknownChatWait time.Duration
	// AgentNameWait is how long an agent's message is held when the
	// agent's name has not arrived yet (LiveChat delivers the join
	// webhook independently of the message); 0 does not wait.
	AgentNameWait time.Duration
}

// DefaultConfig returns the defaults documented in
// docs/dialogflow.md and docs/google-chat.md, without credentials.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:       DefaultMaxBodyBytes,
		RequestTimeout:     DefaultRequestTimeout,
		DialogflowHeader:   DefaultDialogflowHeader,
		ESContext:          DefaultESContext,
		ESContextLifespan:  DefaultESContextLifespan,
		CXHandoffTags:      []string{"live-agent-handoff"},
		CXCancelTags:       []string{"live-agent-cancel"},
		CXParameter:        DefaultCXParameter,
		NameParameter:      "name",
		EmailParameter:     "email",
		ChatJWKSURL:        DefaultChatJWKSURL,
		ChatIDTokenJWKSURL: DefaultGoogleJWKSURL,
		ChatIDTokenEmails:  []string{DefaultChatIssuer},
		ChatHandoffActions: []string{"handoff"},
		ChatCancelActions:  []string{"cancel_handoff"},
		ChatJWKSRefresh:    time.Hour,
		ChatJWKSMinRefresh: 30 * time.Second,
		HandoffPhrases:     map[string][]string{"": {"agent", "human", "talk to an agent", "chat with agent", "live agent"}},
		CancelPhrases:      map[string][]string{"": {"back to bot", "cancel"}},
		HandoffReply:       map[string]string{"": "Connecting you to a human agent. Someone will be with you shortly."},
		CancelReply:        map[string]string{"": "You are back with the bot."},
		AckReply:           map[string]string{},
		ChatBotReply:       map[string]string{"": `Say "agent" to talk to a person.`},
		TranscriptTurns:    DefaultTranscriptTurns,
		Texts:              texts.Defaults(),
		Limits:             DefaultLimits(),
		SlowDownReply:      map[string]string{"": "You are sending messages faster than we can pass them on. Please wait a moment and send that again."},
		UnknownChatWait:    DefaultUnknownChatWait,
		AgentNameWait:      DefaultAgentNameWait,
		MaxStreams:         DefaultMaxStreams,
		WhenNoAgents:       WhenNoAgentsWait,
		DialogflowPull:     DialogflowPullAuto,
		StreamHeartbeat:    DefaultStreamHeartbeat,
	}
}

// Trigger kinds: the trigger label of handoff_gateway_handoffs_requested_total
// and the default reason of a handoff.
const (
	TriggerIntent           = "intent"
	TriggerTag              = "tag"
	TriggerLiveAgentHandoff = "live_agent_handoff"
	TriggerPhrase           = "phrase"
	TriggerCard             = "card"
	TriggerAPI              = "api"
)

var triggers = []string{TriggerIntent, TriggerTag, TriggerLiveAgentHandoff, TriggerPhrase, TriggerCard, TriggerAPI}

// Gateway is the HTTP ingress: Dialogflow ES and CX webhooks, the Google
// Chat app endpoint and the REST API. It is an http.Handler.
type Gateway struct {
	cfg Config
	pub *publisher.Publisher
	st  store.Store
	log *slog.Logger
	// rejected logs refused requests, bounded (see rejectLog).
	rejected *rejectLog
	lim      *limits
	keys     []apiKey
	mux      *http.ServeMux
	routes   []route
	m        metrics
	handoff  phraseSet
	cancel   phraseSet
	chatJWT  *chatVerifier
	now      func() time.Time
	// feed reads HANDOFF_FEED (nil: no event endpoint); streams bounds
	// the open Server-Sent Event streams.
	feed    jetstream.JetStream
	streams chan struct{}
	pullState
}

type route struct {
	pattern  string // path pattern, without method
	method   string
	endpoint string // metrics label
}

type metrics struct {
	requests *prometheus.CounterVec
	handoffs *prometheus.CounterVec
	publish  prometheus.Histogram

	streamsOpen  prometheus.Gauge
	streamEvents *prometheus.CounterVec
}

// New checks cfg and builds the gateway. Metrics are registered on
// reg (nil: not registered). Starting without any credential fails unless
// cfg.InsecureNoAuth is set, so a forgotten secret never opens the doors.
func New(cfg Config, pub *publisher.Publisher, st store.Store, reg prometheus.Registerer, log *slog.Logger, opts ...Option) (*Gateway, error) {
	if pub == nil || st == nil {
		return nil, errors.New("gateway: publisher and store are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.HandoffReply = lowerKeys(cfg.HandoffReply)
	cfg.CancelReply = lowerKeys(cfg.CancelReply)
	cfg.AckReply = lowerKeys(cfg.AckReply)
	cfg.ChatBotReply = lowerKeys(cfg.ChatBotReply)
	cfg.SlowDownReply = lowerKeys(cfg.SlowDownReply)
	cfg.Groups = lowerKeys(cfg.Groups)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	g := &Gateway{
		cfg:      cfg,
		pub:      pub,
		st:       st,
		log:      log,
		rejected: newRejectLog(log),
		mux:      http.NewServeMux(),
		handoff:  newPhraseSet(cfg.HandoffPhrases, true),
		cancel:   newPhraseSet(cfg.CancelPhrases, false),
		now:      time.Now,
		lim:      newLimits(cfg.Limits, time.Now),
		streams:  make(chan struct{}, max(cfg.MaxStreams, 1)),
	}
	for _, o := range opts {
		o(g)
	}
	for _, e := range cfg.APIKeys {
		k, _ := parseAPIKey(e) // Validate has refused bad entries
		g.keys = append(g.keys, k)
	}
	if cfg.ChatAudience != "" {
		g.chatJWT = newChatVerifier(cfg)
	}
	g.m = metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_gateway_requests_total",
			Help: "HTTP requests answered by the gateway, by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_gateway_handoffs_requested_total",
			Help: "Handoff requests published, by what triggered them.",
		}, []string{"trigger"}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "handoff_gateway_publish_duration_seconds",
			Help:    "Time from publishing an event to JetStream's acknowledgement.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		streamsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "handoff_gateway_streams_open",
			Help: "Server-Sent Event streams open now.",
		}),
		streamEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "handoff_gateway_stream_events_total",
			Help: "Feed events served to users, by mode (sse, pull).",
		}, []string{"mode"}),
	}
	g.m.streamEvents.WithLabelValues("sse")
	g.m.streamEvents.WithLabelValues("pull")
	for _, t := range triggers {
		g.m.handoffs.WithLabelValues(t) // export zeros, so rate() works from the start
	}
	for _, l := range limitNames {
		g.lim.refused.WithLabelValues(l)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{g.m.requests, g.m.handoffs, g.m.publish, g.lim.refused, g.m.streamsOpen, g.m.streamEvents} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("gateway: register metrics: %w", err)
			}
		}
	}
	g.handle("POST", "/dialogflow/es", "dialogflow_es", g.authDialogflow, g.serveES)
	g.handle("POST", "/dialogflow/cx", "dialogflow_cx", g.authDialogflow, g.serveCX)
	g.handle("POST", "/google-chat", "google_chat", g.authChat, g.serveChat)
	g.handle("POST", "/v1/conversations/{id}/handoff", "rest_handoff", g.authAPI, g.serveRESTHandoff)
	g.handle("POST", "/v1/conversations/{id}/messages", "rest_messages", g.authAPI, g.serveRESTMessage)
	g.handle("POST", "/v1/conversations/{id}/cancel", "rest_cancel", g.authAPI, g.serveRESTCancel)
	g.handle("GET", "/v1/conversations/{id}", "rest_conversation", g.authAPI, g.serveRESTConversation)
	g.handle("GET", "/v1/conversations/{id}/events", "rest_events", g.authFeed, g.serveEvents)
	if g.cfg.LiveChatWebhookSecret != "" {
		// The secret travels in the body, so the handler checks it.
		g.handle("POST", "/livechat/webhook", "livechat_webhook", nil, g.serveLiveChatWebhook)
	}
	g.handle("GET", "/v1/openapi.json", "openapi", nil, serveOpenAPI)
	g.handle("GET", "/healthz", "healthz", nil, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	g.handle("GET", "/readyz", "readyz", nil, g.serveReady)
	g.mux.Handle("/", g.instrument("not_found", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.URL.Path)
	}))
	return g, nil
}

// Validate reports every problem of the configuration at once, including
// the absence of any credential without InsecureNoAuth.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("max body bytes must be positive"))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("request timeout must be positive"))
	}
	if c.TranscriptTurns < 0 || c.TranscriptTurns > handoff.MaxTranscriptLen-2 {
		errs = append(errs, fmt.Errorf("transcript turns must be between 0 and %d", handoff.MaxTranscriptLen-2))
	}
	if c.ESContextLifespan <= 0 {
		errs = append(errs, errors.New("ES context lifespan must be positive"))
	}
	if c.ESContext == "" || strings.Contains(c.ESContext, "/") {
		errs = append(errs, errors.New("ES context must be a non-empty name without '/'"))
	}
	if c.CXParameter == "" {
		errs = append(errs, errors.New("CX parameter must not be empty"))
	}
	if (c.DialogflowUsername == "") != (c.DialogflowPassword == "") {
		errs = append(errs, errors.New("dialogflow basic auth needs both username and password"))
	}
	if c.DialogflowHeaderValue != "" && c.DialogflowHeader == "" {
		errs = append(errs, errors.New("dialogflow header value is set but the header name is empty"))
	}
	if c.Group != nil && *c.Group < 0 {
		errs = append(errs, errors.New("group must not be negative"))
	}
	if c.WhenNoAgents != WhenNoAgentsWait && c.WhenNoAgents != WhenNoAgentsBot {
		errs = append(errs, fmt.Errorf("when no agents must be %q or %q, got %q", WhenNoAgentsWait, WhenNoAgentsBot, c.WhenNoAgents))
	}
	switch c.DialogflowPull {
	case "", DialogflowPullAuto, DialogflowPullOn, DialogflowPullOff:
	default:
		errs = append(errs, fmt.Errorf("dialogflow pull must be %q, %q or %q, got %q", DialogflowPullAuto, DialogflowPullOn, DialogflowPullOff, c.DialogflowPull))
	}
	if c.MaxStreams < 1 {
		errs = append(errs, errors.New("max streams must be at least 1"))
	}
	if c.StreamHeartbeat <= 0 {
		errs = append(errs, errors.New("stream heartbeat must be positive"))
	}
	for lang, grp := range c.Groups {
		if grp < 0 {
			errs = append(errs, fmt.Errorf("group of language %q must not be negative", lang))
		}
	}
	if err := c.Limits.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ChatAudience != "" {
		for name, u := range map[string]string{"chat JWKS URL": c.ChatJWKSURL, "chat ID token JWKS URL": c.ChatIDTokenJWKSURL} {
			if err := checkKeyURL(u); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	for _, k := range c.APIKeys {
		if _, err := parseAPIKey(k); err != nil {
			errs = append(errs, err)
		}
	}
	if !c.InsecureNoAuth && c.DialogflowUsername == "" && c.DialogflowHeaderValue == "" && c.ChatAudience == "" && len(c.APIKeys) == 0 {
		errs = append(errs, errors.New("no credentials configured: set Dialogflow basic auth or header secret, the Google Chat audience, or API keys (or, for local development only, insecure-no-auth)"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("gateway config: %w", errors.Join(errs...))
	}
	return nil
}

// MaxHeaderBytes bounds a request's headers for the gateway's server (Go's
// default is 1 MiB): a webhook call needs a few KiB, and an outsider's
// headers must not be able to cost more.
const MaxHeaderBytes = 16 << 10

// CheckListen refuses to serve without authentication on an address that
// other machines can reach, unless InsecureAllowRemote says so too: one
// forgotten development flag must not open a public port.
func (c *Config) CheckListen(addr string) error {
	if !c.InsecureNoAuth || c.InsecureAllowRemote || isLoopback(addr) {
		return nil
	}
	return fmt.Errorf("gateway config: insecure-no-auth on %q, which is not a loopback address: listen on 127.0.0.1 or [::1], or also set insecure-allow-remote", addr)
}

// checkKeyURL accepts https, or http to a loopback address (a test's key
// server): keys fetched in the clear could be swapped on the way.
func checkKeyURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		return fmt.Errorf("%q is not an absolute URL", raw)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
		return nil
	}
	return fmt.Errorf("%q: must be https (http only to a loopback address)", raw)
}

// isLoopback reports whether addr (host:port) listens on loopback only.
// An empty host is every interface; a name other than localhost may
// resolve to anything, so it is not loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && isLoopbackHost(host)
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServeHTTP makes the gateway an http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.mux.ServeHTTP(w, r) }

// Routes lists the gateway's endpoints as "METHOD /path" patterns.
func (g *Gateway) Routes() []string {
	out := make([]string, len(g.routes))
	for i, r := range g.routes {
		out[i] = r.method + " " + r.pattern
	}
	return out
}

// Ready reports whether the gateway can do its work: NATS connected and
// the store reachable. /readyz answers with it.
func (g *Gateway) Ready(ctx context.Context) error {
	if err := g.pub.Ready(); err != nil {
		return err
	}
	if err := g.st.Ping(ctx); err != nil {
		return fmt.Errorf("store ping: %w", err)
	}
	return nil
}

func (g *Gateway) serveReady(w http.ResponseWriter, r *http.Request) {
	if err := g.Ready(r.Context()); err != nil {
		// Anyone may ask: the backend's words go to the log only.
		g.rejected.Warn("not ready", "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", reasonNotReady)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// handle registers a route. The pattern carries no method so that a wrong
// method reaches us and gets a JSON 405 rather than the mux's plain text.
func (g *Gateway) handle(method, pattern, endpoint string, auth func(*http.Request) error, h http.HandlerFunc) {
	g.routes = append(g.routes, route{pattern: pattern, method: method, endpoint: endpoint})
	g.mux.Handle(pattern, g.instrument(endpoint, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions && strings.HasSuffix(pattern, "/events") {
			// A browser's CORS preflight carries no credentials.
			g.serveEventsPreflight(w, r)
			return
		}
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use "+method)
			return
		}
		if auth != nil && !g.cfg.InsecureNoAuth {
			if err := auth(r); err != nil {
				// The reason may quote the request (a token's issuer)
				// or name the configuration: bounded in the log, generic
				// in the answer.
				g.rejected.Info("unauthenticated request", "endpoint", endpoint, "reason", truncate(err.Error()), "remote", r.RemoteAddr)
				writeError(w, http.StatusUnauthorized, "unauthorized", reasonUnauthorized)
				return
			}
		}
		// Every REST route names its conversation in the path: the key
		// (or, in insecure mode, the default scope) must reach it, so a
		// REST call cannot read or write a Chat or Dialogflow conversation.
		if strings.HasPrefix(pattern, "/v1/conversations/{id}") && !g.scopeAllows(r, r.PathValue("id")) {
			g.rejected.Info("forbidden request", "endpoint", endpoint, "conversation", truncate(r.PathValue("id")), "remote", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "forbidden", reasonForbidden)
			return
		}
		if method == http.MethodPost {
			if err := checkContentType(r); err != nil {
				writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", err.Error())
				return
			}
			if r.ContentLength > g.cfg.MaxBodyBytes {
				writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body is larger than %d bytes", g.cfg.MaxBodyBytes))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes)
		}
		h(w, r)
	}))
}

// instrument counts responses and bounds the request's work. The work gets
// 90% of RequestTimeout so that a publish stuck on a NATS outage still
// leaves time to write the 503 inside the timeout.
func (g *Gateway) instrument(endpoint string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout*9/10)
		defer cancel()
		rec := &statusRecorder{ResponseWriter: w}
		h(rec, r.WithContext(ctx))
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		g.m.requests.WithLabelValues(endpoint, fmt.Sprint(rec.code)).Inc()
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// language helpers

func (g *Gateway) reply(m map[string]string, lang string) string { return lookupLang(m, lang) }

func (g *Gateway) group(lang string) *int {
	if len(g.cfg.Groups) > 0 {
		lang = strings.ToLower(lang)
		for _, k := range []string{lang, baseLang(lang)} {
			if v, ok := g.cfg.Groups[k]; ok {
				return &v
			}
		}
	}
	return g.cfg.Group
}

func baseLang(lang string) string {
	if i := strings.IndexAny(lang, "-_"); i > 0 {
		return lang[:i]
	}
	return lang
}
