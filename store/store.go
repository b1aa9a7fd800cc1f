// Package store keeps handoff's shared state: conversation records, the
// chat → conversation index, LiveChat tokens, the organization ID, the bot
// turns the gateway has seen, idempotency records and short locks.
//
// Store is a small interface so that more than one backend can exist: Redis
// (redis.go, the default) and NATS JetStream key-value buckets (package
// store/natskv, for deployments that run NATS and would rather not run
// Redis). Every backend must pass the conformance suite in storetest.
package store

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"time"

	"github.com/handoff-dev/handoff"
)

// Errors every backend returns (wrapped) so callers can tell them apart.
var (
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("not found")
	// ErrConflict: an update lost a compare-and-swap race too many times.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the backend could not be reached; retry later.
	ErrUnavailable = errors.New("store unavailable")
	// ErrAbort is returned by an update function to leave the record
	// unchanged; Update then returns the current record and nil.
	ErrAbort = errors.New("update aborted")
)

// Token is an access token with its expiry.
type Token struct {
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	// IssuedAt lets readers re-issue a token ahead of its expiry, at a
	// share of its lifetime; zero for tokens saved without it.
	IssuedAt time.Time `json:"issued_at,omitzero"`
}

// Fresh reports whether the token exists and more than the share ahead
// (e.g. 0.2) of its lifetime remains, so callers re-issue it before it
// expires. Without IssuedAt, an 8-hour
// lifetime is assumed, LiveChat's.
func (t Token) Fresh(now time.Time, ahead float64) bool {
	if t.AccessToken == "" {
		return false
	}
	issued := t.IssuedAt
	if issued.IsZero() {
		issued = t.ExpiresAt.Add(-8 * time.Hour)
	}
	life := t.ExpiresAt.Sub(issued)
	return now.Add(time.Duration(float64(life) * ahead)).Before(t.ExpiresAt)
}

// Valid reports whether the token exists and is good for at least margin.
func (t Token) Valid(now time.Time, margin time.Duration) bool {
	return t.AccessToken != "" && now.Add(margin).Before(t.ExpiresAt)
}

// Store is the state shared by gateway and worker processes.
type Store interface {
	// Conversation returns the record of id; a conversation never seen is
	// returned as {ID: id, Mode: bot, Version: 0} with a nil error.
	Conversation(ctx context.Context, id string) (handoff.Conversation, error)
	// UpdateConversation reads the record, calls fn on a copy, and writes
	// it back only if nobody wrote in between (the Version fences the
	// write); on a lost race it reads again and calls fn again, so fn must
	// be a pure function of the record. fn returning ErrAbort leaves the
	// record as it is. The written record (Version+1) is returned. When
	// the record's ChatID changes, the chat index follows right after the
	// record (see Redis for the order and why readers can trust it).
	UpdateConversation(ctx context.Context, id string, fn func(*handoff.Conversation) error) (handoff.Conversation, error)
	// UpdateConversationFrom is UpdateConversation for a caller that has
	// just read the record: the first attempt starts from cur (whose
	// Version fences the write) instead of reading it again.
	UpdateConversationFrom(ctx context.Context, cur handoff.Conversation, fn func(*handoff.Conversation) error) (handoff.Conversation, error)
	// ConversationByChat returns the conversation a LiveChat chat belongs
	// to, or ErrNotFound.
	ConversationByChat(ctx context.Context, chatID string) (string, error)

	// CountByMode counts the live conversations in each mode, for the
	// handoff_conversations metric.
	CountByMode(ctx context.Context) (map[handoff.Mode]int64, error)
	// ConversationsInMode lists the conversations in mode m (those that
	// entered it within the conversation TTL and have not left it), in no
	// particular order: the worker's reconciliation sweep reads every
	// conversation with a live chat from it. The record is the truth: a
	// listed conversation may have moved on since.
	ConversationsInMode(ctx context.Context, m handoff.Mode) ([]string, error)

	// AppendTurn adds an entry to the bot-side transcript of a
	// conversation, keeping only the newest max entries.
	AppendTurn(ctx context.Context, id string, e handoff.TranscriptEntry, max int) error
	// Turns returns the stored transcript, oldest first.
	Turns(ctx context.Context, id string) ([]handoff.TranscriptEntry, error)

	// CustomerToken returns the cached LiveChat token of a customer, or
	// ErrNotFound.
	CustomerToken(ctx context.Context, customerID string) (Token, error)
	// SaveCustomerToken caches a customer's token until it expires.
	SaveCustomerToken(ctx context.Context, customerID string, t Token) error
	// AgentToken returns the deployment's cached agent access token, or
	// ErrNotFound.
	AgentToken(ctx context.Context) (Token, error)
	// SaveAgentToken caches the agent access token until it expires.
	SaveAgentToken(ctx context.Context, t Token) error
	// Value and SetValue keep small settings learned at run time (the
	// LiveChat organization ID); ttl 0 keeps them forever.
	Value(ctx context.Context, name string) (string, error)
	SetValue(ctx context.Context, name, value string, ttl time.Duration) error

	// Remember records key as seen for ttl and reports whether this call
	// was the first to see it (idempotency of webhooks and API calls).
	Remember(ctx context.Context, key string, ttl time.Duration) (first bool, err error)
	// Forget removes a key recorded by Remember, so a failed attempt can be
	// retried.
	Forget(ctx context.Context, key string) error

	// Lock takes a short lock that expires after ttl. It returns a release
	// function, or ok=false when someone else holds it.
	Lock(ctx context.Context, name string, ttl time.Duration) (release func(), ok bool, err error)

	// Ping checks the backend is reachable.
	Ping(ctx context.Context) error
	// Close releases the backend's connections.
	Close() error
}

// WaitAfterConflict waits before attempt n+1 of a compare-and-swap that
// lost a race: a full-jitter exponential delay (1 ms doubling, capped at
// 50 ms), so writers that collided spread out instead of colliding again.
// Every backend's update loop uses it. It returns ctx's error if ctx ends
// first.
func WaitAfterConflict(ctx context.Context, attempt int) error {
	d := time.Millisecond << min(attempt, 6)
	t := time.NewTimer(mrand.N(min(d, 50*time.Millisecond)) + time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
