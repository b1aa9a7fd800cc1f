package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/outbound"
	"github.com/handoff-dev/handoff/store"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// outboundFlags configure the outbound consumer (HANDOFF_OUT to the user's
// surface), which runs inside `handoff worker` unless turned off.
type outboundFlags struct {
	enabled         bool
	cfg             outbound.Config
	callbackURL     string
	callbackSecret  string
	callback        outbound.CallbackConfig
	chatCredentials string
	chatEndpoint    string
	chatTokenURL    string
	texts           textOptions
}

func (o *outboundFlags) register(f *flags) {
	o.cfg = outbound.DefaultConfig()
	c := &o.cfg.Consumer
	f.Bool(&o.enabled, "outbound", "HANDOFF_OUTBOUND", true, "also deliver HANDOFF_OUT (agents' replies, status, closes) to users: feed, Google Chat, callbacks (false: LiveChat side only)")
	f.String(&o.callbackURL, "callback-url", "HANDOFF_CALLBACK_URL", "", "POST every reverse-path event of REST and Dialogflow conversations here, signed per Standard Webhooks (empty: feed only; see docs/callbacks.md)")
	f.String(&o.callbackSecret, "callback-secret", "HANDOFF_CALLBACK_SECRET", "", "callback signing secret, whsec_<base64>; two separated by a space while rotating (prefer the environment variable)")
	f.Duration(&o.callback.Timeout, "callback-timeout", "HANDOFF_CALLBACK_TIMEOUT", 15*time.Second, "how long one callback POST may take")
	f.String(&o.chatCredentials, "chat-credentials", "HANDOFF_CHAT_CREDENTIALS", "", "Google Chat app's service-account key file for replies into Chat; \"adc\": Application Default Credentials (empty: no Google Chat delivery)")
	f.String(&o.chatEndpoint, "chat-api-url", "HANDOFF_CHAT_API_URL", outbound.DefaultChatEndpoint, "Google Chat API base URL (a local fake in tests)")
	f.String(&o.chatTokenURL, "chat-token-url", "HANDOFF_CHAT_TOKEN_URL", "", "OAuth token URL overriding the key's token_uri (a local fake in tests)")
	f.Duration(&o.cfg.GiveUpAfter, "outbound-give-up-after", "HANDOFF_OUTBOUND_GIVE_UP_AFTER", o.cfg.GiveUpAfter, "age after which an undeliverable event becomes a dead letter (keep it below the stream max age)")
	f.Duration(&c.BackoffMax, "outbound-backoff-max", "HANDOFF_OUTBOUND_BACKOFF_MAX", c.BackoffMax, "longest wait between delivery attempts")
	f.Int(&c.MaxInFlight, "outbound-max-in-flight", "HANDOFF_OUTBOUND_MAX_IN_FLIGHT", c.MaxInFlight, "outbound events this process holds at once")
	// Google Chat users read the same status and closing words as the
	// gateway's Dialogflow answers.
	o.texts.register(f)
}

// routes builds the channels the flags configure.
func (o *outboundFlags) routes(ctx context.Context, m *outbound.Metrics, log *slog.Logger) (outbound.Routes, error) {
	routes := outbound.Routes{}
	if o.callbackURL != "" || o.callbackSecret != "" {
		if o.callbackURL == "" || o.callbackSecret == "" {
			return nil, usageError{errors.New("--callback-url and --callback-secret go together")}
		}
		cc := o.callback
		cc.URL, cc.Secrets, cc.UserAgent = o.callbackURL, o.callbackSecret, "handoff/"+version
		cb, err := outbound.NewCallback(cc, m)
		if err != nil {
			return nil, usageError{err}
		}
		for _, ch := range []handoff.Channel{handoff.ChannelREST, handoff.ChannelDialogflowES, handoff.ChannelDialogflowCX} {
			routes[ch] = cb
		}
	}
	if o.chatCredentials != "" {
		set, err := o.texts.set()
		if err != nil {
			return nil, usageError{err}
		}
		gc := outbound.GoogleChatConfig{Endpoint: o.chatEndpoint, TokenURL: o.chatTokenURL, Texts: &set}
		if o.chatCredentials != "adc" {
			gc.CredentialsFile = o.chatCredentials
		}
		g, err := outbound.NewGoogleChat(ctx, gc, m)
		if err != nil {
			return nil, err
		}
		routes[handoff.ChannelGoogleChat] = g
	}
	names := make([]string, 0, len(routes))
	for ch := range routes {
		names = append(names, string(ch))
	}
	log.Info("outbound delivery", "pushed_channels", names, "feed", true)
	return routes, nil
}

// consumer returns the outbound consumer, or nil when turned off.
func (o *outboundFlags) consumer(ctx context.Context, js jetstream.JetStream, st store.Store, reg prometheus.Registerer, log *slog.Logger) (*ordered.Consumer, error) {
	if !o.enabled {
		return nil, nil
	}
	m, err := outbound.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	routes, err := o.routes(ctx, m, log)
	if err != nil {
		return nil, err
	}
	return outbound.New(o.cfg, js, st, routes, m, reg, log.With("consumer", outbound.Durable))
}
