package outbound

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Durable is the outbound consumer every process shares on HANDOFF_OUT.
const Durable = stream.OutboundDurable

// Config tunes the outbound consumer.
type Config struct {
	// Consumer is the ordered consumer's settings; Stream, Durable and
	// Subsystem are filled in by New.
	Consumer ordered.Config
	// GiveUpAfter is the age budget: an event still failing this long
	// after it was stored becomes a dead letter (budget_exhausted). Until
	// then transient failures retry with backoff up to BackoffMax. It
	// must stay below the stream's MaxAge, which would drop the event
	// silently.
	GiveUpAfter time.Duration
	// DeliveredTTL is how long a delivered event ID is remembered per
	// conversation, so the same event published again (the reconciliation
	// sweep, a webhook relayed twice) long after JetStream's duplicate
	// window is acknowledged without a second delivery.
	DeliveredTTL time.Duration
}

// DefaultConfig returns the defaults documented in README.md: a day of
// retries with backoff up to five minutes, and no count budget (an
// endpoint down for an hour costs a quiet conversation nothing but time).
func DefaultConfig() Config {
	c := ordered.DefaultConfig()
	c.MaxAttempts = 1 << 30
	c.BackoffBase = 200 * time.Millisecond
	c.BackoffMax = 5 * time.Minute
	return Config{Consumer: c, GiveUpAfter: 24 * time.Hour, DeliveredTTL: 14 * 24 * time.Hour}
}

// Routes picks the channel of each reply_to channel. A surface without a
// route gets the feed only (SSE, pull, the next Dialogflow turn); Google
// Chat has no other way to reach the user, so an unrouted Google Chat
// event is a dead letter (no_route) to replay once Chat is configured.
type Routes map[handoff.Channel]Channel

// Handler delivers one event: feed first, then the conversation's channel.
type Handler struct {
	js     jetstream.JetStream
	st     store.Store
	routes Routes
	m      *Metrics
	cfg    Config
	log    *slog.Logger
}

// NewHandler returns the outbound handler for an ordered.Consumer.
func NewHandler(cfg Config, js jetstream.JetStream, st store.Store, routes Routes, m *Metrics, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	d := DefaultConfig()
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = d.GiveUpAfter
	}
	if cfg.DeliveredTTL <= 0 {
		cfg.DeliveredTTL = d.DeliveredTTL
	}
	return &Handler{js: js, st: st, routes: routes, m: m, cfg: cfg, log: log}
}

// New returns the outbound consumer: the handler on an ordered.Consumer of
// HANDOFF_OUT, with handoff_outbound_* metrics on reg.
func New(cfg Config, js jetstream.JetStream, st store.Store, routes Routes, m *Metrics, reg prometheus.Registerer, log *slog.Logger) (*ordered.Consumer, error) {
	oc := cfg.Consumer
	// handoff_outbound_* (the deployments test reads this literal).
	id := ordered.Config{Stream: stream.OutStream, Durable: Durable, Subsystem: "outbound", Classify: Classify}
	oc.Stream, oc.Durable, oc.Subsystem, oc.Classify = id.Stream, id.Durable, id.Subsystem, id.Classify
	return ordered.New(oc, js, NewHandler(cfg, js, st, routes, m, log), reg, log)
}

// Classify maps a channel's *Error to the consumer's verdict.
func Classify(err error) ordered.Verdict {
	e, ok := AsError(err)
	if !ok {
		if errors.Is(err, store.ErrUnavailable) {
			return ordered.Verdict{Class: ordered.ClassOutage, Reason: "store_unavailable"}
		}
		return ordered.Verdict{}
	}
	v := ordered.Verdict{Reason: e.Reason, RetryAfter: e.RetryAfter, Uncertain: e.Uncertain}
	switch e.Class {
	case Permanent:
		v.Class = ordered.ClassPermanent
	case Outage:
		v.Class = ordered.ClassOutage
	default:
		v.Class = ordered.ClassTransient
	}
	return v
}

// Handle implements ordered.Handler.
func (h *Handler) Handle(ctx context.Context, d *ordered.Delivery) error {
	ev, conv := d.Event, d.Key
	done, err := h.delivered(ctx, conv, ev.ID)
	if err != nil {
		return err
	}
	if done {
		h.m.deliveries.WithLabelValues("any", "duplicate").Inc()
		return ordered.ErrDuplicate
	}
	// The conversation record, read once for everything this event needs
	// of it: the funnel step, and the reply_to of an event the gateway did
	// not stamp with one. An event needing neither reads nothing.
	to, lang := stamped(ev)
	step, moves := funnelEventOf(d)
	var rec handoff.Conversation
	if moves || to.Channel == "" {
		if rec, err = h.st.Conversation(ctx, conv); err != nil {
			return fmt.Errorf("outbound: read the conversation: %w", err)
		}
	}
	if moves {
		if rec, err = h.funnelStep(ctx, rec, step); err != nil {
			return err
		}
	}
	if err := d.CheckLease(); err != nil {
		return err
	}
	if err := h.appendFeed(ctx, conv, d); err != nil {
		h.m.deliveries.WithLabelValues("feed", "outage").Inc()
		return err
	}

	if to.Channel == "" {
		to = rec.ReplyTo
	}
	ch, ok := h.routes[to.Channel]
	switch {
	case ok:
	case to.Channel == handoff.ChannelGoogleChat:
		return ordered.Permanent("no_route", errors.New("google chat delivery is not configured (--chat-credentials)"))
	default:
		// The feed is this conversation's delivery: SSE, pull, or the
		// next Dialogflow turn.
		h.observe("feed", ev)
		return h.markDelivered(ctx, conv, ev.ID)
	}
	if err := d.CheckLease(); err != nil {
		return err
	}
	err = ch.Deliver(ctx, Outgoing{Key: ev.ID, To: to, Event: ev, Payload: d.Payload, Language: lang, Uncertain: d.Uncertain()})
	h.m.deliveries.WithLabelValues(ch.Name(), outcome(err)).Inc()
	if err != nil {
		// Past the age budget, a destination that is still failing or
		// still down (its circuit open) costs the event: a dead letter
		// someone sees beats the stream's MaxAge dropping it silently.
		if e, ok := AsError(err); ok && e.Class != Permanent && h.expired(d) {
			return ordered.Permanent("budget_exhausted", fmt.Errorf("undelivered %s after %s: %w", time.Since(d.Stored).Round(time.Second), h.cfg.GiveUpAfter, err))
		}
		return err
	}
	h.observe(ch.Name(), ev)
	return h.markDelivered(ctx, conv, ev.ID)
}

// expired reports whether the event has spent its age budget.
func (h *Handler) expired(d *ordered.Delivery) bool {
	stored := d.Stored
	if stored.IsZero() {
		stored = d.Event.Time
	}
	return time.Since(stored) > h.cfg.GiveUpAfter
}

func (h *Handler) observe(channel string, ev handoff.Event) {
	if ev.Type == handoff.TypeMessageAgent {
		h.m.latency.WithLabelValues(channel).Observe(time.Since(ev.Time).Seconds())
	}
	if channel == "feed" {
		h.m.deliveries.WithLabelValues("feed", "delivered").Inc()
	}
}

// appendFeed stores the event on the conversation's feed subject for the
// gateway's SSE and pull readers. Its Nats-Msg-Id is the event ID, so a
// retry inside the duplicate window is stored once (readers deduplicate
// by ID beyond it).
func (h *Handler) appendFeed(ctx context.Context, conv string, d *ordered.Delivery) error {
	body, err := d.Event.Marshal()
	if err != nil {
		return ordered.Permanent("malformed_event", err)
	}
	msg := &nats.Msg{Subject: stream.FeedSubject(conv), Data: body, Header: nats.Header{}}
	msg.Header.Set("Ce-Type", string(d.Event.Type))
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := h.js.PublishMsg(pctx, msg, jetstream.WithMsgID(d.Event.ID), jetstream.WithExpectStream(stream.FeedStream)); err != nil {
		return ordered.Outage("feed_unavailable", fmt.Errorf("append to %s: %w", stream.FeedStream, err))
	}
	return nil
}

// stamped is the reply_to and language the gateway stamped on the event
// (every reverse-path kind carries them under the same names); without a
// stamped reply_to the event goes to the conversation record's.
func stamped(ev handoff.Event) (handoff.ReplyTo, string) {
	var stamp struct {
		ReplyTo  handoff.ReplyTo `json:"reply_to"`
		Language string          `json:"language"`
	}
	_ = json.Unmarshal(ev.Data, &stamp) // validated already; absent fields stay empty
	return stamp.ReplyTo, stamp.Language
}

// deliveredName is the store value marking an event delivered to a
// conversation: one small key per event, with a TTL, outside the
// conversation record so it never bumps its Version (no compare-and-swap
// conflicts with the gateway or the inbound worker).
func deliveredName(conv, eventID string) string {
	sum := sha256.Sum256([]byte(eventID))
	return "outbound:" + stream.Token(conv) + ":" + hex.EncodeToString(sum[:12])
}

func (h *Handler) delivered(ctx context.Context, conv, eventID string) (bool, error) {
	_, err := h.st.Value(ctx, deliveredName(conv, eventID))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	}
	return false, fmt.Errorf("outbound: check delivered: %w", err)
}

func (h *Handler) markDelivered(ctx context.Context, conv, eventID string) error {
	if err := h.st.SetValue(ctx, deliveredName(conv, eventID), "1", h.cfg.DeliveredTTL); err != nil {
		// Delivered but not recorded: a later copy of the event would be
		// sent again, with the same idempotency keys. Not worth another
		// delivery now.
		h.log.Warn("delivered, but could not record it", "conversation", conv, "event", eventID, "err", err)
	}
	return nil
}
