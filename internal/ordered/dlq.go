package ordered

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers on a dead letter, saying why and where it came from. The
// original subject tells the direction (handoff.in. or handoff.out.).
const (
	HeaderDLQReason    = "Handoff-Dlq-Reason"
	HeaderDLQError     = "Handoff-Dlq-Error"
	HeaderDLQSubject   = "Handoff-Dlq-Original-Subject"
	HeaderDLQSequence  = "Handoff-Dlq-Original-Sequence"
	HeaderDLQDelivered = "Handoff-Dlq-Delivery-Count"
	HeaderDLQTime      = "Handoff-Dlq-Time"
	HeaderDLQEventID   = "Handoff-Dlq-Event-Id"
)

// deadLetter moves the message to the dead-letter stream with its reason,
// then acknowledges it so the conversation's later events flow. If the
// dead-letter publish fails the message is handed back instead: it is never
// dropped.
func (c *Consumer) deadLetter(ctx context.Context, it *item, ev handoff.Event, reason string, cause error) {
	conv, err := stream.ConversationOf(it.subject)
	if err != nil {
		conv = it.subject
	}
	msg := &nats.Msg{
		Subject: c.cfg.DLQPrefix + stream.Token(conv),
		Data:    it.msg.Data(),
		Header:  nats.Header{},
	}
	copyHeaders(msg.Header, it.msg.Headers(), "Handoff-Dlq-")
	msg.Header.Set(HeaderDLQReason, reason)
	msg.Header.Set(HeaderDLQError, truncate(cause.Error(), 2000))
	msg.Header.Set(HeaderDLQSubject, it.subject)
	msg.Header.Set(HeaderDLQSequence, strconv.FormatUint(it.seq, 10))
	msg.Header.Set(HeaderDLQDelivered, strconv.FormatUint(it.delivered, 10))
	msg.Header.Set(HeaderDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
	if ev.ID != "" {
		msg.Header.Set(HeaderDLQEventID, ev.ID)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The ID makes a repeated dead-lettering of the same delivery (after a
	// lost ack) land once.
	if _, err := c.js.PublishMsg(pctx, msg, jetstream.WithMsgID(fmt.Sprintf("dlq:%s:%d", it.subject, it.seq))); err != nil {
		c.log.Error("dead-letter publish failed; handing the event back", "subject", it.subject, "seq", it.seq, "err", err)
		c.handBack(ctx, it, jitter(c.cfg.OutageDelay))
		c.m.retried("dlq_unavailable")
		return
	}
	if err := c.ack(ctx, it); err != nil {
		c.log.Warn("ack after dead-lettering failed", "seq", it.seq, "err", err)
	}
	c.m.deadLetters.WithLabelValues(reason).Inc()
	c.log.Error("event dead-lettered", "reason", reason, "conversation", conv, "event", ev.ID, "type", ev.Type, "seq", it.seq, "err", cause)
}

// copyHeaders copies the event's own headers; NATS control headers
// (Nats-Msg-Id, Nats-Expected-Stream, ...) belong to the original publish
// and would make the new one fail or be dropped as a duplicate.
func copyHeaders(dst, src nats.Header, skipPrefix string) {
	for k, vs := range src {
		if strings.HasPrefix(k, "Nats-") || strings.HasPrefix(k, skipPrefix) {
			continue
		}
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// DeadLetter is one event in the dead-letter stream.
type DeadLetter struct {
	Sequence         uint64    `json:"sequence"`
	Conversation     string    `json:"conversation"`
	EventID          string    `json:"event_id,omitempty"`
	Type             string    `json:"type,omitempty"`
	Reason           string    `json:"reason"`
	Error            string    `json:"error"`
	OriginalSubject  string    `json:"original_subject"`
	OriginalSequence uint64    `json:"original_sequence"`
	DeliveryCount    uint64    `json:"delivery_count"`
	Time             time.Time `json:"time"`
	Data             []byte    `json:"-"`
}

// String is a one-line summary for logs and test failures (the body is
// left out).
func (d DeadLetter) String() string {
	return fmt.Sprintf("dead letter %d: %s event %s of %q: %s: %s", d.Sequence, d.Type, d.EventID, d.Conversation, d.Reason, d.Error)
}

// ListDeadLetters returns the dead letters of both directions, oldest
// first, at most limit (0: all).
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, limit int) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, stream.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("dlq: open %s: %w", stream.DLQStream, err)
	}
	var out []DeadLetter
	seq := uint64(1)
	for limit <= 0 || len(out) < limit {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(stream.DLQPrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("dlq: read from %d: %w", seq, err)
		}
		out = append(out, toDeadLetter(m))
		seq = m.Sequence + 1
	}
	return out, nil
}

func toDeadLetter(m *jetstream.RawStreamMsg) DeadLetter {
	conv, _ := stream.ConversationOf(m.Subject)
	d := DeadLetter{
		Sequence:        m.Sequence,
		Conversation:    conv,
		EventID:         m.Header.Get(HeaderDLQEventID),
		Type:            m.Header.Get("Ce-Type"),
		Reason:          m.Header.Get(HeaderDLQReason),
		Error:           m.Header.Get(HeaderDLQError),
		OriginalSubject: m.Header.Get(HeaderDLQSubject),
		Data:            m.Data,
	}
	d.OriginalSequence, _ = strconv.ParseUint(m.Header.Get(HeaderDLQSequence), 10, 64)
	d.DeliveryCount, _ = strconv.ParseUint(m.Header.Get(HeaderDLQDelivered), 10, 64)
	d.Time, _ = time.Parse(time.RFC3339Nano, m.Header.Get(HeaderDLQTime))
	return d
}

// ReplayDeadLetter publishes a dead letter back to its original subject (at
// the end of the conversation's queue) and removes it from the dead-letter
// stream. The event keeps its ID, so a downstream idempotency key still
// matches anything an earlier attempt delivered; the Handoff-Replay header
// makes the handler look before it acts. A dead letter without the
// original-subject header predates the outbound direction and goes to the
// inbound subject.
func ReplayDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) (DeadLetter, error) {
	s, err := js.Stream(ctx, stream.DLQStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dlq: open %s: %w", stream.DLQStream, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dlq: get %d: %w", seq, err)
	}
	d := toDeadLetter(m)
	subject := d.OriginalSubject
	if subject == "" {
		subject = stream.InSubject(d.Conversation)
	}
	out := &nats.Msg{Subject: subject, Data: m.Data, Header: nats.Header{}}
	copyHeaders(out.Header, m.Header, "Handoff-Dlq-")
	out.Header.Set(HeaderReplay, strconv.FormatUint(seq, 10))
	if _, err := js.PublishMsg(ctx, out, jetstream.WithMsgID(fmt.Sprintf("replay:%d:%s", seq, d.EventID))); err != nil {
		return d, fmt.Errorf("dlq: replay %d: %w", seq, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		return d, fmt.Errorf("dlq: replayed %d but could not remove it: %w", seq, err)
	}
	return d, nil
}

// FindDeadLetter returns the sequence of the dead letter of an event ID.
func FindDeadLetter(ctx context.Context, js jetstream.JetStream, eventID string) (uint64, error) {
	all, err := ListDeadLetters(ctx, js, 0)
	if err != nil {
		return 0, err
	}
	for _, d := range all {
		if d.EventID == eventID {
			return d.Sequence, nil
		}
	}
	return 0, fmt.Errorf("dlq: no dead letter for event %q", eventID)
}
