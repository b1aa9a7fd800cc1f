package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/stream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// gatewayOptions are the gateway's flags before conversion into a
// gateway.Config.
type gatewayOptions struct {
	nats     natsFlags
	log      logging
	listen   string
	metrics  string
	store    storeFlags
	source   string
	shutdown time.Duration
	cfg      gateway.Config

	// Lists and per-language maps arrive as strings.
	esHandoffIntents, esCancelIntents, cxHandoffTags, cxCancelTags string
	chatEmails, chatHandoffActions, chatCancelActions, apiKeys     string
	corsOrigins                                                    string
	handoffPhrases, cancelPhrases                                  string
	handoffReply, cancelReply, ackReply, chatBotReply, groups      string
	slowDownReply                                                  string
	callbackURL                                                    string
	group                                                          int
	texts                                                          textOptions
}

// gatewayFlags declares every gateway flag; the docs test walks them.
func gatewayFlags(o *gatewayOptions) *flags {
	d := gateway.DefaultConfig()
	o.cfg = d
	f := newFlags("gateway", "[flags]", "Serve the bot ingress: Dialogflow ES (/dialogflow/es) and CX (/dialogflow/cx)\nwebhooks, the Google Chat app endpoint (/google-chat) and the REST API\n(/v1/conversations/{id}/...), plus /healthz, /readyz and /metrics.\nAt least one credential is required unless --insecure-no-auth. Prefer the\nenvironment variables for secrets: flags show up in the process list.\nLists are comma-separated; per-language settings take a JSON object keyed by\nlanguage code (\"\" is the fallback), e.g. '{\"\":\"Hi\",\"pt\":\"Olá\"}'.")
	o.nats.register(f, false)
	o.log.register(f)
	f.String(&o.listen, "listen", "HANDOFF_GATEWAY_LISTEN", ":8080", "address to serve HTTP on")
	f.String(&o.metrics, "metrics-addr", "HANDOFF_GATEWAY_METRICS_ADDR", "", "serve /metrics (and /healthz, /readyz) on this separate address, off the public listener (empty: /metrics on --listen)")
	o.store.register(f, true)
	f.String(&o.source, "source", "HANDOFF_GATEWAY_SOURCE", "handoff-gateway", "CloudEvents source of published events")
	f.Duration(&o.shutdown, "shutdown-timeout", "HANDOFF_GATEWAY_SHUTDOWN_TIMEOUT", 10*time.Second, "how long in-flight requests may finish on shutdown")
	f.Duration(&o.cfg.RequestTimeout, "request-timeout", "HANDOFF_GATEWAY_REQUEST_TIMEOUT", d.RequestTimeout, "bound on one request, publishing included; keep it under Dialogflow's 5s")
	f.Int64(&o.cfg.MaxBodyBytes, "max-body-bytes", "HANDOFF_GATEWAY_MAX_BODY_BYTES", d.MaxBodyBytes, "largest request body accepted (413 above)")
	f.String(&o.cfg.LiveChatWebhookSecret, "livechat-webhook-secret", "HANDOFF_GATEWAY_LIVECHAT_WEBHOOK_SECRET", "", "secret_key of the LiveChat webhooks; serves /livechat/webhook (agent messages and closed chats) when set")
	f.Bool(&o.cfg.InsecureNoAuth, "insecure-no-auth", "HANDOFF_GATEWAY_INSECURE_NO_AUTH", false, "turn authentication off on every endpoint but the LiveChat webhook (local development only; loopback --listen only)")
	f.Bool(&o.cfg.InsecureAllowRemote, "insecure-allow-remote", "HANDOFF_GATEWAY_INSECURE_ALLOW_REMOTE", false, "allow --insecure-no-auth on a --listen address other machines can reach")

	f.String(&o.cfg.DialogflowUsername, "dialogflow-username", "HANDOFF_GATEWAY_DIALOGFLOW_USERNAME", "", "Dialogflow webhook basic auth user name")
	f.String(&o.cfg.DialogflowPassword, "dialogflow-password", "HANDOFF_GATEWAY_DIALOGFLOW_PASSWORD", "", "Dialogflow webhook basic auth password")
	f.String(&o.cfg.DialogflowHeader, "dialogflow-header", "HANDOFF_GATEWAY_DIALOGFLOW_HEADER", d.DialogflowHeader, "name of the Dialogflow webhook secret header (Authorization for a bearer token)")
	f.String(&o.cfg.DialogflowHeaderValue, "dialogflow-header-value", "HANDOFF_GATEWAY_DIALOGFLOW_HEADER_VALUE", "", "value of the Dialogflow webhook secret header (\"Bearer <token>\" with Authorization)")
	f.String(&o.esHandoffIntents, "es-handoff-intents", "HANDOFF_GATEWAY_ES_HANDOFF_INTENTS", "", "ES intent display names that request a handoff")
	f.String(&o.esCancelIntents, "es-cancel-intents", "HANDOFF_GATEWAY_ES_CANCEL_INTENTS", "", "ES intent display names that return to the bot")
	f.String(&o.cfg.ESContext, "es-context", "HANDOFF_GATEWAY_ES_CONTEXT", d.ESContext, "ES output context set while an agent owns the chat")
	f.Int(&o.cfg.ESContextLifespan, "es-context-lifespan", "HANDOFF_GATEWAY_ES_CONTEXT_LIFESPAN", d.ESContextLifespan, "lifespan (turns) of the ES context, renewed on every forwarded turn")
	f.String(&o.cfg.ESFollowupEvent, "es-followup-event", "HANDOFF_GATEWAY_ES_FOLLOWUP_EVENT", "", "ES event (e.g. HANDOFF_ENDED) the first answer after the chat closed, or a cancel, invokes so the bot takes the turn; the closing text is its parameter text")
	f.String(&o.cxHandoffTags, "cx-handoff-tags", "HANDOFF_GATEWAY_CX_HANDOFF_TAGS", strings.Join(d.CXHandoffTags, ","), "CX fulfillment tags that request a handoff")
	f.String(&o.cxCancelTags, "cx-cancel-tags", "HANDOFF_GATEWAY_CX_CANCEL_TAGS", strings.Join(d.CXCancelTags, ","), "CX fulfillment tags that return to the bot")
	f.String(&o.cfg.CXParameter, "cx-parameter", "HANDOFF_GATEWAY_CX_PARAMETER", d.CXParameter, "CX session parameter set true while an agent owns the chat")
	f.String(&o.cfg.DialogflowPull, "dialogflow-pull", "HANDOFF_GATEWAY_DIALOGFLOW_PULL", d.DialogflowPull, "answer each Dialogflow turn with the agent's messages no push surface showed yet: auto (on when --callback-url is empty), on or off")
	f.String(&o.callbackURL, "callback-url", "HANDOFF_CALLBACK_URL", "", "the workers' callback URL; the gateway only looks whether one is set (then --dialogflow-pull=auto is off, as the callback shows agents' replies)")
	f.String(&o.cfg.NameParameter, "name-parameter", "HANDOFF_GATEWAY_NAME_PARAMETER", d.NameParameter, "session parameter holding the customer's name")
	f.String(&o.cfg.EmailParameter, "email-parameter", "HANDOFF_GATEWAY_EMAIL_PARAMETER", d.EmailParameter, "session parameter holding the customer's email")

	f.String(&o.cfg.ChatAudience, "chat-audience", "HANDOFF_GATEWAY_CHAT_AUDIENCE", "", "audience of Google Chat tokens: the project number, or the endpoint URL (enables ID tokens); empty disables /google-chat")
	f.String(&o.cfg.ChatJWKSURL, "chat-jwks-url", "HANDOFF_GATEWAY_CHAT_JWKS_URL", d.ChatJWKSURL, "keys of chat@system.gserviceaccount.com")
	f.String(&o.cfg.ChatIDTokenJWKSURL, "chat-id-token-jwks-url", "HANDOFF_GATEWAY_CHAT_ID_TOKEN_JWKS_URL", d.ChatIDTokenJWKSURL, "Google's OpenID keys, for ID tokens when the audience is a URL")
	f.String(&o.chatEmails, "chat-id-token-emails", "HANDOFF_GATEWAY_CHAT_ID_TOKEN_EMAILS", strings.Join(d.ChatIDTokenEmails, ","), "service accounts whose ID tokens are accepted (add an add-on's account here)")
	f.String(&o.chatHandoffActions, "chat-handoff-actions", "HANDOFF_GATEWAY_CHAT_HANDOFF_ACTIONS", strings.Join(d.ChatHandoffActions, ","), "card action method names (add-on: invoked functions) that request a handoff")
	f.String(&o.chatCancelActions, "chat-cancel-actions", "HANDOFF_GATEWAY_CHAT_CANCEL_ACTIONS", strings.Join(d.ChatCancelActions, ","), "card action method names that return to the bot")
	f.String(&o.chatBotReply, "chat-bot-reply", "HANDOFF_GATEWAY_CHAT_BOT_REPLY", mustJSON(d.ChatBotReply), "reply to a Google Chat message while no agent is involved (text, or JSON per language)")

	f.String(&o.apiKeys, "api-keys", "HANDOFF_GATEWAY_API_KEYS", "", "REST API bearer keys; each reaches REST conversation IDs only (not projects/... or spaces/...) unless bound otherwise: KEY;prefix=P (IDs starting with P), KEY;channels=rest|dialogflow-es|dialogflow-cx|google-chat")
	f.String(&o.cfg.StreamTokenSecret, "stream-token-secret", "HANDOFF_GATEWAY_STREAM_TOKEN_SECRET", "", "signs the per-conversation stream tokens the REST handoff answer carries (for browsers); empty: event streams take API keys only")
	f.String(&o.corsOrigins, "cors-origins", "HANDOFF_GATEWAY_CORS_ORIGINS", "", "browser origins allowed to read /v1/conversations/{id}/events (comma-separated; * for any)")
	f.String(&o.cfg.WhenNoAgents, "when-no-agents", "HANDOFF_GATEWAY_WHEN_NO_AGENTS", d.WhenNoAgents, "when LiveChat finds no agent: wait (tell the user, keep the chat) or bot (tell the user --no-agents-bot-text, back to the bot, end the chat)")
	f.Int(&o.cfg.MaxStreams, "max-streams", "HANDOFF_GATEWAY_MAX_STREAMS", d.MaxStreams, "event streams (Server-Sent Events) served at once by this process; more get 503")
	f.Duration(&o.cfg.StreamHeartbeat, "stream-heartbeat", "HANDOFF_GATEWAY_STREAM_HEARTBEAT", d.StreamHeartbeat, "interval of the heartbeat comment on an idle event stream")

	f.String(&o.handoffPhrases, "handoff-phrases", "HANDOFF_GATEWAY_HANDOFF_PHRASES", strings.Join(d.HandoffPhrases[""], ","), "phrases that request a handoff when found as whole words (list, or JSON per language)")
	f.String(&o.cancelPhrases, "cancel-phrases", "HANDOFF_GATEWAY_CANCEL_PHRASES", strings.Join(d.CancelPhrases[""], ","), "phrases that return to the bot when they are the whole message (list, or JSON per language)")
	f.String(&o.handoffReply, "handoff-reply", "HANDOFF_GATEWAY_HANDOFF_REPLY", mustJSON(d.HandoffReply), "reply on the handoff turn (text, or JSON per language)")
	f.String(&o.cancelReply, "cancel-reply", "HANDOFF_GATEWAY_CANCEL_REPLY", mustJSON(d.CancelReply), "reply on cancel (text, or JSON per language)")
	f.String(&o.ackReply, "ack-reply", "HANDOFF_GATEWAY_ACK_REPLY", "", "reply to a turn forwarded to the agent; empty says nothing (text, or JSON per language)")
	f.Int(&o.group, "group", "HANDOFF_GATEWAY_GROUP", -1, "LiveChat group to route to (-1: LiveChat's default)")
	f.String(&o.groups, "groups", "HANDOFF_GATEWAY_GROUPS", "", "LiveChat group per language, JSON, e.g. '{\"pt\":3}'")
	l := d.Limits
	f.Int(&o.cfg.Limits.HandoffRate, "handoff-rate", "HANDOFF_GATEWAY_HANDOFF_RATE", l.HandoffRate, "handoff requests per second per source (a REST API key, Dialogflow ES, CX, Google Chat); 429 or the no-agents answer above (0: off)")
	f.Int(&o.cfg.Limits.HandoffBurst, "handoff-burst", "HANDOFF_GATEWAY_HANDOFF_BURST", l.HandoffBurst, "handoff requests one source may send at once before --handoff-rate applies")
	f.Int(&o.cfg.Limits.HandoffRateTotal, "handoff-rate-total", "HANDOFF_GATEWAY_HANDOFF_RATE_TOTAL", l.HandoffRateTotal, "handoff requests per second over all sources (0: off)")
	f.Int(&o.cfg.Limits.HandoffBurstTotal, "handoff-burst-total", "HANDOFF_GATEWAY_HANDOFF_BURST_TOTAL", l.HandoffBurstTotal, "handoff requests all sources may send at once")
	f.Int(&o.cfg.Limits.MaxPending, "max-pending", "HANDOFF_GATEWAY_MAX_PENDING", l.MaxPending, "conversations waiting for an agent at once; a handoff beyond gets the no-agents answer (0: no cap)")
	f.Int(&o.cfg.Limits.MessageRate, "message-rate", "HANDOFF_GATEWAY_MESSAGE_RATE", l.MessageRate, "user messages per second per conversation passed to the agent; 429 or --slow-down-reply above (0: off)")
	f.Int(&o.cfg.Limits.MessageBurst, "message-burst", "HANDOFF_GATEWAY_MESSAGE_BURST", l.MessageBurst, "user messages one conversation may send at once before --message-rate applies")
	f.String(&o.slowDownReply, "slow-down-reply", "HANDOFF_GATEWAY_SLOW_DOWN_REPLY", mustJSON(d.SlowDownReply), "reply on Dialogflow and Google Chat to a message over --message-rate, which is not forwarded (text, or JSON per language)")
	f.Int(&o.cfg.TranscriptTurns, "transcript-turns", "HANDOFF_GATEWAY_TRANSCRIPT_TURNS", d.TranscriptTurns, "bot-side transcript entries kept per conversation for the agent")
	o.texts.register(f)
	return f
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// config turns the flag values into a GatewayConfig.
func (o *gatewayOptions) config() (gateway.Config, error) {
	c := o.cfg
	c.CallbackConfigured = strings.TrimSpace(o.callbackURL) != ""
	var errs []error
	c.ESHandoffIntents = splitList(o.esHandoffIntents)
	c.ESCancelIntents = splitList(o.esCancelIntents)
	c.CXHandoffTags = splitList(o.cxHandoffTags)
	c.CXCancelTags = splitList(o.cxCancelTags)
	c.ChatIDTokenEmails = splitList(o.chatEmails)
	c.ChatHandoffActions = splitList(o.chatHandoffActions)
	c.ChatCancelActions = splitList(o.chatCancelActions)
	c.APIKeys = splitList(o.apiKeys)
	c.CORSOrigins = splitList(o.corsOrigins)
	var err error
	if c.HandoffPhrases, err = phraseMap(o.handoffPhrases); err != nil {
		errs = append(errs, fmt.Errorf("--handoff-phrases: %w", err))
	}
	if c.CancelPhrases, err = phraseMap(o.cancelPhrases); err != nil {
		errs = append(errs, fmt.Errorf("--cancel-phrases: %w", err))
	}
	for _, t := range []struct {
		name string
		raw  string
		dst  *map[string]string
	}{
		{"--handoff-reply", o.handoffReply, &c.HandoffReply},
		{"--cancel-reply", o.cancelReply, &c.CancelReply},
		{"--ack-reply", o.ackReply, &c.AckReply},
		{"--chat-bot-reply", o.chatBotReply, &c.ChatBotReply},
		{"--slow-down-reply", o.slowDownReply, &c.SlowDownReply},
	} {
		if *t.dst, err = textMap(t.raw); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.name, err))
		}
	}
	if o.group >= 0 {
		g := o.group
		c.Group = &g
	}
	if strings.TrimSpace(o.groups) != "" {
		if err := json.Unmarshal([]byte(o.groups), &c.Groups); err != nil {
			errs = append(errs, fmt.Errorf("--groups: want a JSON object of language to group number: %w", err))
		}
	}
	if c.Texts, err = o.texts.set(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// phraseMap reads a comma-separated list (the fallback language) or a JSON
// object of language code to list of phrases.
func phraseMap(s string) (map[string][]string, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "{") {
		var m map[string][]string
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, fmt.Errorf("want a JSON object of language to list of phrases: %w", err)
		}
		return m, nil
	}
	return map[string][]string{"": splitList(s)}, nil
}

// textMap reads plain text (the fallback language) or a JSON object of
// language code to text.
func textMap(s string) (map[string]string, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "{") {
		var m map[string]string
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, fmt.Errorf("want a JSON object of language to text: %w", err)
		}
		return m, nil
	}
	return map[string]string{"": s}, nil
}

func runGateway(ctx context.Context, args []string, stdout io.Writer) (err error) {
	defer func() { err = stoppedWhileStarting(ctx, err) }()
	var o gatewayOptions
	f := gatewayFlags(&o)
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	log, err := o.log.logger()
	if err != nil {
		return err
	}
	cfg, err := o.config()
	if err != nil {
		return usageError{fmt.Errorf("gateway: %w", err)}
	}
	if err := errors.Join(cfg.Validate(), cfg.CheckListen(o.listen)); err != nil {
		// Before connecting anywhere: a missing secret is a usage error.
		return usageError{fmt.Errorf("gateway: %w", err)}
	}
	if cfg.InsecureNoAuth {
		log.Warn("authentication is OFF (--insecure-no-auth): anyone who reaches this port can publish events")
	}

	nc, js, err := o.nats.connect("handoff-gateway", log)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer nc.Close()
	if _, err := js.Stream(ctx, stream.InStream); err != nil {
		log.Warn("inbound stream not found: run 'handoff setup' first; publishes will fail until then", "stream", stream.InStream, "err", err)
	}
	st, err := o.store.open(ctx, &o.nats, "handoff-gateway", log)
	if err != nil {
		return fmt.Errorf("gateway: open store: %w", err)
	}
	defer st.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pub := publisher.New(js, publisher.WithSource(o.source), publisher.WithTimeout(cfg.RequestTimeout))
	gw, err := gateway.New(cfg, pub, st, reg, log, gateway.WithFeed(js))
	if err != nil {
		return usageError{fmt.Errorf("gateway: %w", err)}
	}
	mux := http.NewServeMux()
	if o.metrics == "" {
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	} else {
		stopMetrics, err := serveOps(o.metrics, reg, log, gw.Ready)
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		defer stopMetrics()
	}
	mux.Handle("/", gw)

	srv := gatewayServer(mux, cfg)
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", o.listen, err)
	}
	fmt.Fprintf(stdout, "handoff gateway listening on %s\n", ln.Addr())
	log.Info("gateway listening", "addr", ln.Addr().String(), "routes", gw.Routes())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}

// gatewayServer bounds what a client can hold or send: slow headers,
// bodies and readers time out, and headers stop at gateway.MaxHeaderBytes
// (431 above).
func gatewayServer(h http.Handler, cfg gateway.Config) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       cfg.RequestTimeout + 5*time.Second,
		WriteTimeout:      cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    gateway.MaxHeaderBytes,
	}
}
