// Package publisher is what the bot side uses to hand a conversation to a
// person: a small library that validates handoff events and publishes them to
// NATS JetStream. It holds no HTTP server and no token code, so a bot that
// imports it pulls in only NATS; the HTTP ingress lives in package gateway.
package publisher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes handoff events. It is safe for concurrent use.
type Publisher struct {
	js      jetstream.JetStream
	source  string
	timeout time.Duration
	now     func() time.Time
}

// Option configures a Publisher.
type Option func(*Publisher)

// WithSource sets the CloudEvents source of events built by the typed
// methods (default "handoff"). Use something that names your bot.
func WithSource(source string) Option { return func(p *Publisher) { p.source = source } }

// WithTimeout bounds each publish when the caller's context has no
// deadline (default 5 s).
func WithTimeout(d time.Duration) Option { return func(p *Publisher) { p.timeout = d } }

// WithClock sets the clock that stamps events built by the typed methods
// (default time.Now); tests use it to get stable event times.
func WithClock(now func() time.Time) Option { return func(p *Publisher) { p.now = now } }

// New returns a Publisher on js.
func New(js jetstream.JetStream, opts ...Option) *Publisher {
	p := &Publisher{js: js, source: handoff.DefaultSource, timeout: 5 * time.Second, now: time.Now}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Receipt says where JetStream stored an event.
type Receipt struct {
	Stream   string
	Sequence uint64
	// Duplicate is true when an event with this ID was already stored
	// inside the stream's duplicate window; nothing new was stored.
	Duplicate bool
}

// EventOption adjusts an event built by the typed methods.
type EventOption func(*handoff.Event)

// WithID sets the event ID. Give the same ID when retrying a publish so the
// event is applied once (stored once inside the duplicate window; a copy
// stored after a NATS restart is dropped by the worker); an Idempotency-Key
// from a caller belongs here.
func WithID(id string) EventOption { return func(e *handoff.Event) { e.ID = id } }

// WithTime sets the event time (default now).
func WithTime(t time.Time) EventOption { return func(e *handoff.Event) { e.Time = t.UTC() } }

// ErrUnavailable wraps failures to reach JetStream, as opposed to invalid
// events; HTTP callers map it to 503.
var ErrUnavailable = errors.New("event store unavailable")

// Publish validates ev, publishes it with its ID as Nats-Msg-Id and waits
// for JetStream's acknowledgement.
func (p *Publisher) Publish(ctx context.Context, ev handoff.Event) (Receipt, error) {
	if ev.SpecVersion == "" {
		ev.SpecVersion = handoff.SpecVersion
	}
	if ev.DataContentType == "" {
		ev.DataContentType = handoff.ContentTypeJSON
	}
	if err := ev.Validate(); err != nil {
		return Receipt{}, fmt.Errorf("publish: %w", err)
	}
	body, err := ev.Marshal()
	if err != nil {
		return Receipt{}, fmt.Errorf("publish: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	subject, streamName := stream.Route(ev.Type, ev.Subject)
	msg := &nats.Msg{
		Subject: subject,
		Data:    body,
		Header:  nats.Header{},
	}
	msg.Header.Set("Ce-Type", string(ev.Type))
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID), jetstream.WithExpectStream(streamName))
	if err != nil {
		return Receipt{}, fmt.Errorf("publish %s %s: %w: %w", ev.Type, ev.ID, ErrUnavailable, err)
	}
	return Receipt{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

func (p *Publisher) publishData(ctx context.Context, t handoff.EventType, conversation string, data any, opts []EventOption) (Receipt, error) {
	ev, err := handoff.NewEvent(t, conversation, data)
	if err != nil {
		return Receipt{}, fmt.Errorf("publish: %w", err)
	}
	ev.Source = p.source
	ev.Time = p.now().UTC()
	for _, o := range opts {
		o(&ev)
	}
	return p.Publish(ctx, ev)
}

// RequestHandoff asks for a human agent for conversation.
func (p *Publisher) RequestHandoff(ctx context.Context, conversation string, req handoff.HandoffRequested, opts ...EventOption) (Receipt, error) {
	return p.publishData(ctx, handoff.TypeHandoffRequested, conversation, req, opts)
}

// SendUserMessage forwards a user's message to the agent.
func (p *Publisher) SendUserMessage(ctx context.Context, conversation string, msg handoff.UserMessage, opts ...EventOption) (Receipt, error) {
	return p.publishData(ctx, handoff.TypeMessageUser, conversation, msg, opts)
}

// CancelHandoff returns the conversation to the bot and ends the chat.
func (p *Publisher) CancelHandoff(ctx context.Context, conversation string, c handoff.HandoffCancelled, opts ...EventOption) (Receipt, error) {
	return p.publishData(ctx, handoff.TypeHandoffCancelled, conversation, c, opts)
}

// ErrNotConnected is returned by Ready while the NATS connection is down.
var ErrNotConnected = errors.New("nats not connected")

// Ready reports whether the NATS connection under the publisher is up, for
// readiness probes. It does not prove JetStream accepts writes.
func (p *Publisher) Ready() error {
	nc := p.js.Conn()
	if nc == nil || !nc.IsConnected() {
		return fmt.Errorf("publisher: %w", ErrNotConnected)
	}
	return nil
}
