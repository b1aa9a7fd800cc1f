package handoff

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// EventType names what happened. The values are the CloudEvents `type`.
type EventType string

// The event kinds. The first three travel from the bot to LiveChat; the
// others travel back from LiveChat to the user (see Reverse): an agent's
// message, the chat's end, and the status kinds that tell the user who has
// the conversation (queued, agent joined, transferred, no agent available).
const (
	TypeHandoffRequested  EventType = "handoff.requested"
	TypeMessageUser       EventType = "message.user"
	TypeHandoffCancelled  EventType = "handoff.cancelled"
	TypeMessageAgent      EventType = "message.agent"
	TypeChatClosed        EventType = "chat.closed"
	TypeChatQueued        EventType = "chat.queued"
	TypeAgentJoined       EventType = "agent.joined"
	TypeChatTransferred   EventType = "chat.transferred"
	TypeAgentsUnavailable EventType = "agents.unavailable"
)

// EventTypes lists every known event type, in a stable order.
var EventTypes = []EventType{
	TypeHandoffRequested, TypeMessageUser, TypeHandoffCancelled,
	TypeMessageAgent, TypeChatClosed,
	TypeChatQueued, TypeAgentJoined, TypeChatTransferred, TypeAgentsUnavailable,
}

// Reverse reports whether events of type t travel from LiveChat back to
// the user (stream HANDOFF_OUT) rather than from the bot to LiveChat.
func (t EventType) Reverse() bool {
	switch t {
	case TypeMessageAgent, TypeChatClosed, TypeChatQueued, TypeAgentJoined, TypeChatTransferred, TypeAgentsUnavailable:
		return true
	}
	return false
}

// Status reports whether t is a status kind: news about who has the
// conversation, rendered as text on surfaces without their own status UI.
func (t EventType) Status() bool {
	switch t {
	case TypeChatQueued, TypeAgentJoined, TypeChatTransferred, TypeAgentsUnavailable:
		return true
	}
	return false
}

// Known reports whether t is an event type handoff understands.
func (t EventType) Known() bool {
	for _, k := range EventTypes {
		if t == k {
			return true
		}
	}
	return false
}

// Limits that every event must respect. They keep one event well inside
// NATS's default 1 MiB payload limit and make IDs usable as Redis keys and
// NATS subject tokens.
const (
	SpecVersion       = "1.0"
	ContentTypeJSON   = "application/json"
	MaxIDBytes        = 200
	MaxSubjectBytes   = 256
	MaxDataBytes      = 256 << 10
	MaxTranscriptLen  = 200
	DefaultSource     = "handoff"
	MaxMessageBytes   = 64 << 10
	MaxAttachments    = 10
	MaxCustomerFields = 50
)

// Event is the CloudEvents 1.0 envelope in JSON structured mode. Subject is
// the conversation ID as the bot knows it; ID is globally unique, is sent as
// the Nats-Msg-Id header and is the idempotency key downstream.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            EventType       `json:"type"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

// HandoffRequested is the data of a handoff.requested event: the user asked
// for a person.
type HandoffRequested struct {
	Customer   Customer          `json:"customer,omitzero"`
	Transcript []TranscriptEntry `json:"transcript,omitempty"`
	// Group is the LiveChat group to route to; nil means the default.
	Group    *int    `json:"group,omitempty"`
	Reason   string  `json:"reason,omitempty"`
	Language string  `json:"language,omitempty"`
	ReplyTo  ReplyTo `json:"reply_to,omitzero"`
	// Text is what the user said when asking; while a chat is already open
	// it is forwarded as an ordinary message instead of opening another.
	Text string `json:"text,omitempty"`
}

// UserMessage is the data of a message.user event.
type UserMessage struct {
	Text        string   `json:"text"`
	Attachments []string `json:"attachments,omitempty"`
}

// HandoffCancelled is the data of a handoff.cancelled event: the user leaves
// the agent and returns to the bot.
type HandoffCancelled struct {
	Reason string `json:"reason,omitempty"`
}

// Every reverse kind's data carries ReplyTo and Language, stamped by the
// gateway from the conversation record when it relays the event, so the
// outbound side can deliver and render it without another lookup (it falls
// back to the record when they are empty).

// AgentMessage is the data of a message.agent event: an agent wrote to the
// user.
type AgentMessage struct {
	Text      string `json:"text"`
	AgentID   string `json:"agent_id,omitempty"`
	AgentName string `json:"agent_name,omitempty"`
	ChatID    string `json:"chat_id"`
	// LiveChatEventID is LiveChat's own event ID, unique per chat.
	LiveChatEventID string `json:"livechat_event_id,omitempty"`
	// ReplyTo and Language are stamped by the gateway from the
	// conversation record when it relays the event, so delivery goes
	// where the user was at that moment even if the record changes later.
	ReplyTo  ReplyTo `json:"reply_to,omitzero"`
	Language string  `json:"language,omitempty"`
}

// ChatClosed is the data of a chat.closed event: the agent (or LiveChat's
// router) ended the chat and the bot owns the conversation again.
type ChatClosed struct {
	ChatID   string `json:"chat_id"`
	ThreadID string `json:"thread_id,omitempty"`
	// ClosedBy is the LiveChat user who closed it; empty when LiveChat's
	// router closed it (the thread went idle).
	ClosedBy string `json:"closed_by,omitempty"`
	// ReplyTo and Language: as in AgentMessage.
	ReplyTo  ReplyTo `json:"reply_to,omitzero"`
	Language string  `json:"language,omitempty"`
}

// ChatQueued is the data of a chat.queued event: the chat waits for a free
// agent. Position (1 is next) and WaitSeconds (LiveChat's estimate) are
// zero when LiveChat did not say.
type ChatQueued struct {
	ChatID      string  `json:"chat_id"`
	Position    int     `json:"position,omitempty"`
	WaitSeconds int     `json:"wait_seconds,omitempty"`
	ReplyTo     ReplyTo `json:"reply_to,omitzero"`
	Language    string  `json:"language,omitempty"`
}

// AgentJoined is the data of an agent.joined event: an agent took the chat.
type AgentJoined struct {
	ChatID    string  `json:"chat_id"`
	AgentID   string  `json:"agent_id"`
	AgentName string  `json:"agent_name,omitempty"`
	ReplyTo   ReplyTo `json:"reply_to,omitzero"`
	Language  string  `json:"language,omitempty"`
}

// ChatTransferred is the data of a chat.transferred event: the chat moved
// to another group or agent (AgentID set when LiveChat named one).
type ChatTransferred struct {
	ChatID    string  `json:"chat_id"`
	Group     *int    `json:"group,omitempty"`
	AgentID   string  `json:"agent_id,omitempty"`
	AgentName string  `json:"agent_name,omitempty"`
	Reason    string  `json:"reason,omitempty"`
	ReplyTo   ReplyTo `json:"reply_to,omitzero"`
	Language  string  `json:"language,omitempty"`
}

// AgentsUnavailable is the data of an agents.unavailable event: LiveChat
// found no agent for the chat (everyone offline), or none picked it up
// in time (the worker's pickup timeout). Reason is LiveChat's word for it
// (e.g. "routing.archived_offline") or one of the Reason constants below.
// Whether the user keeps waiting or goes back to the bot is the gateway's
// --when-no-agents or the worker's --pickup-action; Back says which
// happened.
type AgentsUnavailable struct {
	ChatID   string  `json:"chat_id"`
	Reason   string  `json:"reason,omitempty"`
	Back     bool    `json:"back_to_bot,omitempty"`
	ReplyTo  ReplyTo `json:"reply_to,omitzero"`
	Language string  `json:"language,omitempty"`
}

// Reasons of an agents.unavailable the worker publishes when no agent
// picked a chat up within --pickup-timeout: the user keeps waiting or is
// back with the bot (ReasonPickupTimeout), or the chat was closed and
// left in LiveChat's archive for an agent to follow up
// (ReasonPickupMessageLeft, --pickup-action message).
const (
	ReasonPickupTimeout     = "pickup_timeout"
	ReasonPickupMessageLeft = "pickup_timeout_message_left"
)

// ValidationError says which field of an event is wrong and why.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid event: %s: %s", e.Field, e.Reason)
}

// ErrInvalid matches every ValidationError with errors.Is.
var ErrInvalid = errors.New("invalid event")

// Is makes errors.Is(err, ErrInvalid) true for validation errors.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// derivedNamespace makes derived event IDs (UUIDv5) distinct from any other
// UUIDv5 use.
var derivedNamespace = uuid.MustParse("6d1a4c52-0d0c-4b8e-9a36-5f8f2b0c7e11")

// DerivedID returns a deterministic event ID for the given parts, so a
// retried request produces the same Nats-Msg-Id and JetStream stores the
// event once. The parts are joined with NUL so no two part lists collide.
func DerivedID(parts ...string) string {
	return uuid.NewSHA1(derivedNamespace, []byte(strings.Join(parts, "\x00"))).String()
}

// AgentMessageID is the event ID of the message.agent relaying LiveChat
// event eventID of chatID. The gateway's webhook relay and the worker's
// reconciliation sweep both use it, so a message relayed by both is one
// event (stored once, delivered once).
func AgentMessageID(chatID, eventID string) string { return DerivedID("livechat", chatID, eventID) }

// ChatClosedID is the event ID of the chat.closed for thread threadID of
// chatID, shared the same way.
func ChatClosedID(chatID, threadID string) string {
	return DerivedID("livechat", "chat_deactivated", chatID, threadID)
}

// ChatQueuedID is the event ID of the chat.queued telling that thread
// threadID of chatID waits at position: the gateway (incoming_chat) and
// the worker's queue poll derive the same one, so a position told by
// both reaches the user once.
func ChatQueuedID(chatID, threadID string, position int) string {
	return DerivedID("livechat", "queued", chatID, threadID, strconv.Itoa(position))
}

// NewID returns a fresh event ID: a UUIDv7, so IDs sort by creation time.
func NewID() string {
	return uuid.Must(uuid.NewV7()).String()
}

// NewEvent builds a valid event of type t for conversation with data
// marshalled as JSON. A fresh ID and the current time are used unless the
// caller sets them afterwards; callers that retry must reuse the event (and
// so its ID) rather than call NewEvent again.
func NewEvent(t EventType, conversation string, data any) (Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("new %s event: %w", t, err)
	}
	ev := Event{
		SpecVersion:     SpecVersion,
		ID:              NewID(),
		Source:          DefaultSource,
		Type:            t,
		Subject:         conversation,
		Time:            time.Now().UTC(),
		DataContentType: ContentTypeJSON,
		Data:            raw,
	}
	if err := ev.Validate(); err != nil {
		return Event{}, err
	}
	return ev, nil
}

// Validate checks the envelope and the data of its type. The error is a
// *ValidationError naming the first wrong field.
func (e Event) Validate() error {
	if e.SpecVersion != SpecVersion {
		return invalid("specversion", "must be %q, got %q", SpecVersion, e.SpecVersion)
	}
	if err := checkString("id", e.ID, MaxIDBytes); err != nil {
		return err
	}
	if err := checkString("source", e.Source, MaxIDBytes); err != nil {
		return err
	}
	if e.Type == "" {
		return invalid("type", "is required")
	}
	if !e.Type.Known() {
		return invalid("type", "unknown event type %q", string(e.Type))
	}
	if err := checkString("subject", e.Subject, MaxSubjectBytes); err != nil {
		return err
	}
	if e.Time.IsZero() {
		return invalid("time", "is required")
	}
	if e.DataContentType != "" && !strings.HasPrefix(e.DataContentType, ContentTypeJSON) {
		return invalid("datacontenttype", "must be %q", ContentTypeJSON)
	}
	if len(e.Data) > MaxDataBytes {
		return invalid("data", "is %d bytes, more than the limit of %d", len(e.Data), MaxDataBytes)
	}
	if !utf8.Valid(e.Data) {
		return invalid("data", "is not valid UTF-8")
	}
	_, err := e.Payload()
	return err
}

func checkString(field, v string, max int) error {
	switch {
	case v == "":
		return invalid(field, "is required")
	case len(v) > max:
		return invalid(field, "is %d bytes, more than the limit of %d", len(v), max)
	case !utf8.ValidString(v):
		return invalid(field, "is not valid UTF-8")
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return invalid(field, "contains control characters")
	}
	return nil
}

// Payload decodes Data into the struct of the event's type (a pointer:
// *HandoffRequested, *UserMessage, ...) and checks it.
func (e Event) Payload() (any, error) {
	var p interface{ validate() error }
	switch e.Type {
	case TypeHandoffRequested:
		p = new(HandoffRequested)
	case TypeMessageUser:
		p = new(UserMessage)
	case TypeHandoffCancelled:
		p = new(HandoffCancelled)
	case TypeMessageAgent:
		p = new(AgentMessage)
	case TypeChatClosed:
		p = new(ChatClosed)
	case TypeChatQueued:
		p = new(ChatQueued)
	case TypeAgentJoined:
		p = new(AgentJoined)
	case TypeChatTransferred:
		p = new(ChatTransferred)
	case TypeAgentsUnavailable:
		p = new(AgentsUnavailable)
	default:
		return nil, invalid("type", "unknown event type %q", string(e.Type))
	}
	data := bytes.TrimSpace(e.Data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		data = []byte("{}")
	}
	if !utf8.Valid(data) {
		return nil, invalid("data", "is not valid UTF-8")
	}
	if err := json.Unmarshal(data, p); err != nil {
		return nil, invalid("data", "is not a %s object: %v", e.Type, err)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

func (h *HandoffRequested) validate() error {
	if len(h.Transcript) > MaxTranscriptLen {
		return invalid("data.transcript", "has %d entries, more than the limit of %d", len(h.Transcript), MaxTranscriptLen)
	}
	for i, t := range h.Transcript {
		if !t.Author.Valid() {
			return invalid(fmt.Sprintf("data.transcript[%d].author", i), "must be bot, user or agent, got %q", string(t.Author))
		}
	}
	if h.Group != nil && *h.Group < 0 {
		return invalid("data.group", "must not be negative")
	}
	if len(h.Customer.Fields) > MaxCustomerFields {
		return invalid("data.customer.fields", "has more than %d fields", MaxCustomerFields)
	}
	return nil
}

func (m *UserMessage) validate() error {
	if strings.TrimSpace(m.Text) == "" && len(m.Attachments) == 0 {
		return invalid("data.text", "is required (or attachments)")
	}
	if len(m.Text) > MaxMessageBytes {
		return invalid("data.text", "is %d bytes, more than the limit of %d", len(m.Text), MaxMessageBytes)
	}
	if len(m.Attachments) > MaxAttachments {
		return invalid("data.attachments", "has more than %d entries", MaxAttachments)
	}
	for i, a := range m.Attachments {
		if !strings.HasPrefix(a, "https://") && !strings.HasPrefix(a, "http://") {
			return invalid(fmt.Sprintf("data.attachments[%d]", i), "must be an http(s) URL")
		}
	}
	return nil
}

func (*HandoffCancelled) validate() error { return nil }

func (m *AgentMessage) validate() error {
	if m.ChatID == "" {
		return invalid("data.chat_id", "is required")
	}
	return nil
}

func (c *ChatClosed) validate() error {
	if c.ChatID == "" {
		return invalid("data.chat_id", "is required")
	}
	return nil
}

func (q *ChatQueued) validate() error {
	if q.ChatID == "" {
		return invalid("data.chat_id", "is required")
	}
	if q.Position < 0 {
		return invalid("data.position", "must not be negative")
	}
	if q.WaitSeconds < 0 {
		return invalid("data.wait_seconds", "must not be negative")
	}
	return nil
}

func (a *AgentJoined) validate() error {
	if a.ChatID == "" {
		return invalid("data.chat_id", "is required")
	}
	if a.AgentID == "" {
		return invalid("data.agent_id", "is required")
	}
	return nil
}

func (c *ChatTransferred) validate() error {
	if c.ChatID == "" {
		return invalid("data.chat_id", "is required")
	}
	if c.Group != nil && *c.Group < 0 {
		return invalid("data.group", "must not be negative")
	}
	return nil
}

func (a *AgentsUnavailable) validate() error {
	if a.ChatID == "" {
		return invalid("data.chat_id", "is required")
	}
	return nil
}

// Marshal encodes the event as CloudEvents JSON.
func (e Event) Marshal() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("marshal event %s: %w", e.ID, err)
	}
	return b, nil
}

// UnmarshalEvent decodes and validates CloudEvents JSON.
func UnmarshalEvent(b []byte) (Event, error) {
	var e Event
	if !utf8.Valid(b) {
		return Event{}, invalid("event", "is not valid UTF-8")
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, invalid("event", "is not a CloudEvents JSON object: %v", err)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}
