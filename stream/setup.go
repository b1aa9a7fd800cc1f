package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the streams and of the workers' durable consumer.
const (
	InStream  = "HANDOFF_IN"
	OutStream = "HANDOFF_OUT"
	DLQStream = "HANDOFF_DLQ"
	// FeedStream keeps the user-facing events of every conversation for a
	// while (limits retention), so SSE and pull readers can resume; the
	// outbound consumer appends to it, the gateway reads it by subject.
	FeedStream = "HANDOFF_FEED"
	Consumer   = "handoff-worker"
)

// Config holds the settings operators may change. The zero value is not
// useful; start from DefaultConfig.
type Config struct {
	// Replicas is the number of copies of each stream: 1 for one server,
	// 3 in a production cluster so one lost node loses no event.
	Replicas int
	// Duplicates is the window in which a repeated Nats-Msg-Id is dropped
	// by the server.
	Duplicates time.Duration
	// MaxBytes bounds the inbound stream; when full, new publishes fail
	// (the gateway answers 503) rather than old events being dropped.
	MaxBytes int64
	// MaxAge bounds how long an unprocessed event may wait (a LiveChat
	// outage longer than this loses events, so it is generous).
	MaxAge time.Duration
	// DLQMaxAge is how long dead letters are kept for inspection and replay.
	DLQMaxAge time.Duration
	// FeedMaxAge is how long user-facing events stay readable in the feed:
	// the longest a stream client may be away and still resume.
	FeedMaxAge time.Duration
	// AckWait is how long a delivered event may go unacknowledged before
	// JetStream gives it to another worker. Workers call InProgress during
	// long calls, so this only needs to cover a crashed worker.
	AckWait time.Duration
	// MaxAckPending bounds the events in flight across all workers.
	MaxAckPending int
}

// DefaultConfig returns the settings documented in ARCHITECTURE.md.
func DefaultConfig() Config {
	return Config{
		Replicas:      1,
		Duplicates:    10 * time.Minute,
		MaxBytes:      1 << 30,
		MaxAge:        7 * 24 * time.Hour,
		DLQMaxAge:     14 * 24 * time.Hour,
		FeedMaxAge:    24 * time.Hour,
		AckWait:       30 * time.Second,
		MaxAckPending: 20000,
	}
}

// InStreamConfig is the inbound stream: every bot-side event, one subject per
// conversation, deleted once a worker acknowledges it (work-queue retention),
// so the oldest message stored on a conversation's subject is always the
// next one to apply.
func InStreamConfig(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        InStream,
		Description: "handoff: bot-side events waiting for LiveChat, one subject per conversation",
		Subjects:    []string{InPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  c.Duplicates,
		MaxBytes:    c.MaxBytes,
		MaxAge:      c.MaxAge,
		MaxMsgSize:  1 << 20,
		Discard:     jetstream.DiscardNew,
	}
}

// OutStreamConfig is the reverse path: agent messages and chat closes on
// their way back to the bot surface.
func OutStreamConfig(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        OutStream,
		Description: "handoff: LiveChat events on their way back to the bot surface",
		Subjects:    []string{OutPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  c.Duplicates,
		MaxBytes:    c.MaxBytes,
		MaxAge:      c.MaxAge,
		MaxMsgSize:  1 << 20,
		Discard:     jetstream.DiscardNew,
	}
}

// DLQStreamConfig keeps events the worker gave up on, with their reason in
// headers, for `handoff dlq list` and `handoff dlq replay`.
func DLQStreamConfig(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DLQStream,
		Description: "handoff: dead letters with their reason, for inspection and replay",
		Subjects:    []string{DLQPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  c.Duplicates,
		MaxAge:      c.DLQMaxAge,
		MaxBytes:    c.MaxBytes,
		MaxMsgSize:  2 << 20,
		Discard:     jetstream.DiscardOld,
	}
}

// FeedStreamConfig is the user-facing feed: every event a user may see, one
// subject per conversation, kept for FeedMaxAge whatever was read
// (limits retention), oldest dropped first when full. Its Nats-Msg-Id is
// the event ID, so an event appended twice inside the duplicate window is
// stored once and a reader never sees it twice.
func FeedStreamConfig(c Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        FeedStream,
		Description: "handoff: user-facing events kept for resumable streams, one subject per conversation",
		Subjects:    []string{FeedPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  c.Duplicates,
		MaxAge:      c.FeedMaxAge,
		MaxBytes:    c.MaxBytes,
		MaxMsgSize:  1 << 20,
		Discard:     jetstream.DiscardOld,
	}
}

// ConsumerSpec names a durable pull consumer and what it reads: the
// workers' on HANDOFF_IN, and any other direction consumed with package
// ordered (e.g. the outbound consumer on HANDOFF_OUT).
type ConsumerSpec struct {
	Stream        string
	Durable       string
	Description   string
	FilterSubject string
}

// WorkerConsumer is the one durable pull consumer every worker process
// shares.
var WorkerConsumer = ConsumerSpec{
	Stream:        InStream,
	Durable:       Consumer,
	Description:   "handoff workers",
	FilterSubject: InPrefix + ">",
}

// OutboundDurable names the outbound delivery's durable consumer.
const OutboundDurable = "handoff-outbound"

// OutboundConsumer is the durable pull consumer the outbound delivery
// shares on HANDOFF_OUT (package outbound, inside every worker by default).
var OutboundConsumer = ConsumerSpec{
	Stream:        OutStream,
	Durable:       OutboundDurable,
	Description:   "handoff outbound delivery",
	FilterSubject: OutPrefix + ">",
}

// ConsumerConfig is the workers' consumer (WorkerConsumer).
func ConsumerConfig(c Config) jetstream.ConsumerConfig {
	return DurableConfig(c, WorkerConsumer)
}

// DurableConfig is a durable pull consumer as package ordered needs it:
// explicit acks, unlimited deliveries (the consumer dead-letters by its own
// budget so nothing silently stays behind), and no server-side BackOff
// because the consumer chooses its own delays with NakWithDelay.
func DurableConfig(c Config, s ConsumerSpec) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       s.Durable,
		Description:   s.Description,
		FilterSubject: s.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: c.MaxAckPending,
		Replicas:      c.Replicas,
	}
}

// Change says what Setup did to one stream or consumer.
type Change struct {
	Kind   string // "stream" or "consumer"
	Name   string
	Action string // "created", "updated" or "unchanged"
}

// Setup creates or updates the streams and the durable consumers (the
// workers' on HANDOFF_IN, the outbound delivery's on HANDOFF_OUT). It is
// idempotent: run on an up-to-date server it changes nothing and reports
// every item unchanged.
func Setup(ctx context.Context, js jetstream.JetStream, c Config) ([]Change, error) {
	var changes []Change
	for _, sc := range []jetstream.StreamConfig{InStreamConfig(c), OutStreamConfig(c), DLQStreamConfig(c), FeedStreamConfig(c)} {
		ch, err := ensureStream(ctx, js, sc)
		if err != nil {
			return changes, err
		}
		changes = append(changes, ch)
	}
	for _, spec := range []ConsumerSpec{WorkerConsumer, OutboundConsumer} {
		ch, err := EnsureConsumer(ctx, js, c, spec)
		if err != nil {
			return changes, err
		}
		changes = append(changes, ch)
	}
	return changes, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (Change, error) {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return Change{}, fmt.Errorf("setup: create stream %s: %w", want.Name, err)
		}
		return Change{"stream", want.Name, "created"}, nil
	}
	if err != nil {
		return Change{}, fmt.Errorf("setup: look up stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	if streamMatches(have, want) {
		return Change{"stream", want.Name, "unchanged"}, nil
	}
	if _, err := js.UpdateStream(ctx, want); err != nil {
		return Change{}, fmt.Errorf("setup: update stream %s: %w", want.Name, err)
	}
	return Change{"stream", want.Name, "updated"}, nil
}

func streamMatches(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description &&
		fmt.Sprint(have.Subjects) == fmt.Sprint(want.Subjects) &&
		have.Retention == want.Retention && have.Storage == want.Storage &&
		have.Replicas == want.Replicas && have.Duplicates == want.Duplicates &&
		have.MaxBytes == want.MaxBytes && have.MaxAge == want.MaxAge &&
		have.MaxMsgSize == want.MaxMsgSize && have.Discard == want.Discard
}

// EnsureConsumer creates or updates the durable consumer of spec (its
// stream must exist), idempotently like Setup.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg Config, spec ConsumerSpec) (Change, error) {
	want := DurableConfig(cfg, spec)
	c, err := js.Consumer(ctx, spec.Stream, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if _, err := js.CreateConsumer(ctx, spec.Stream, want); err != nil {
			return Change{}, fmt.Errorf("setup: create consumer %s: %w", want.Durable, err)
		}
		return Change{"consumer", want.Durable, "created"}, nil
	}
	if err != nil {
		return Change{}, fmt.Errorf("setup: look up consumer %s: %w", want.Durable, err)
	}
	have := c.CachedInfo().Config
	if have.FilterSubject == want.FilterSubject && have.AckWait == want.AckWait &&
		have.MaxDeliver == want.MaxDeliver && have.MaxAckPending == want.MaxAckPending &&
		have.Description == want.Description && have.AckPolicy == want.AckPolicy {
		return Change{"consumer", want.Durable, "unchanged"}, nil
	}
	if _, err := js.UpdateConsumer(ctx, spec.Stream, want); err != nil {
		return Change{}, fmt.Errorf("setup: update consumer %s: %w", want.Durable, err)
	}
	return Change{"consumer", want.Durable, "updated"}, nil
}
