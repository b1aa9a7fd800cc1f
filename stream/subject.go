// Package stream defines how handoff uses NATS JetStream: the subjects a
// conversation's events travel on, the streams that store them, the durable
// consumer the workers share, and the provisioning that creates them.
package stream

import (
	"errors"
	"fmt"
	"strings"

	"github.com/handoff-dev/handoff"
)

// Subject prefixes. Each conversation gets one subject under a prefix, so
// the stream keeps a per-conversation order and the worker can ask for "the
// oldest message still stored on this conversation's subject".
const (
	InPrefix   = "handoff.in."
	OutPrefix  = "handoff.out."
	DLQPrefix  = "handoff.dlq."
	FeedPrefix = "handoff.feed."
)

const hexDigits = "0123456789ABCDEF"

// Token maps a conversation ID to one valid NATS subject token.
//
// Conversation IDs are Dialogflow session paths, Google Chat space and thread
// names or whatever a REST client sends, so they contain '/', '.', spaces,
// '*' and '>' that NATS forbids or treats as wildcards. The mapping keeps
// ASCII letters, digits and '-' as they are (so subjects stay readable in
// `nats stream view`) and writes every other byte as '_' followed by two
// upper-case hex digits; '_' itself is escaped too. The result is injective
// and reversible (see ConversationID), never empty for a non-empty ID and
// uses only characters that are valid in any NATS subject token.
func Token(conversationID string) string {
	var b strings.Builder
	b.Grow(len(conversationID) + 8)
	for i := 0; i < len(conversationID); i++ {
		c := conversationID[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	return b.String()
}

// ErrBadToken is returned for a token Token cannot have produced.
var ErrBadToken = errors.New("not a handoff subject token")

// ConversationID reverses Token.
func ConversationID(token string) (string, error) {
	var b strings.Builder
	b.Grow(len(token))
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-':
			b.WriteByte(c)
		case c == '_' && i+2 < len(token):
			hi, lo := strings.IndexByte(hexDigits, token[i+1]), strings.IndexByte(hexDigits, token[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("%w: bad escape at %d in %q", ErrBadToken, i, token)
			}
			b.WriteByte(byte(hi<<4 | lo))
			i += 2
		default:
			return "", fmt.Errorf("%w: unexpected %q at %d in %q", ErrBadToken, c, i, token)
		}
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("%w: empty", ErrBadToken)
	}
	return b.String(), nil
}

// InSubject is the inbound subject of a conversation.
func InSubject(conversationID string) string { return InPrefix + Token(conversationID) }

// OutSubject is the reverse-path subject of a conversation.
func OutSubject(conversationID string) string { return OutPrefix + Token(conversationID) }

// DLQSubject is the dead-letter subject of a conversation.
func DLQSubject(conversationID string) string { return DLQPrefix + Token(conversationID) }

// FeedSubject is the subject of a conversation's user-facing feed: every
// event the user may see, kept for the feed's retention so a stream reader
// can resume after a disconnect.
func FeedSubject(conversationID string) string { return FeedPrefix + Token(conversationID) }

// ConversationOf returns the conversation ID a handoff subject belongs to.
func ConversationOf(subject string) (string, error) {
	for _, p := range []string{InPrefix, OutPrefix, DLQPrefix, FeedPrefix} {
		if strings.HasPrefix(subject, p) {
			return ConversationID(subject[len(p):])
		}
	}
	return "", fmt.Errorf("%w: subject %q has no handoff prefix", ErrBadToken, subject)
}

// Route returns the subject and stream an event of type t for conversation
// is published to: bot-side events go to the inbound stream, LiveChat-side
// events (message.agent, chat.closed, the status kinds) to the reverse path.
func Route(t handoff.EventType, conversationID string) (subject, streamName string) {
	if t.Reverse() {
		return OutSubject(conversationID), OutStream
	}
	return InSubject(conversationID), InStream
}
