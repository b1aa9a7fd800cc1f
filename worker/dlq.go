package worker

import (
	"context"

	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers on a dead letter, saying why and where it came from (defined by
// package ordered, which writes them for both directions).
const (
	HeaderDLQReason    = ordered.HeaderDLQReason
	HeaderDLQError     = ordered.HeaderDLQError
	HeaderDLQSubject   = ordered.HeaderDLQSubject
	HeaderDLQSequence  = ordered.HeaderDLQSequence
	HeaderDLQDelivered = ordered.HeaderDLQDelivered
	HeaderDLQTime      = ordered.HeaderDLQTime
	HeaderDLQEventID   = ordered.HeaderDLQEventID
)

// DeadLetter is one event in the dead-letter stream.
type DeadLetter = ordered.DeadLetter

// ListDeadLetters returns the dead letters, oldest first, at most limit
// (0: all).
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, limit int) ([]DeadLetter, error) {
	return ordered.ListDeadLetters(ctx, js, limit)
}

// ReplayDeadLetter publishes a dead letter back to its conversation's
// subject and removes it from the dead-letter stream (see
// ordered.ReplayDeadLetter).
func ReplayDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) (DeadLetter, error) {
	return ordered.ReplayDeadLetter(ctx, js, seq)
}

// FindDeadLetter returns the sequence of the dead letter of an event ID.
func FindDeadLetter(ctx context.Context, js jetstream.JetStream, eventID string) (uint64, error) {
	return ordered.FindDeadLetter(ctx, js, eventID)
}
