// Package handoff holds the domain model shared by every part of the
// service: conversations, their modes, customers, transcripts and the
// events that move a conversation between a Google chatbot and a human agent
// in LiveChat.
//
// The packages below it each wrap one outside dependency: publisher (the bot
// side and NATS JetStream publishing), gateway (the HTTP ingress for
// Dialogflow, Google Chat, REST and LiveChat webhooks), stream (JetStream subjects, streams and
// the consumer), worker (the consumers that call LiveChat), livechat (the
// LiveChat API and its simulator) and store (Redis). They speak to each other
// only in the types defined here.
package handoff

import (
	"time"
)

// Mode is where a conversation currently lives.
type Mode string

// The modes a conversation moves through. A conversation starts with the bot;
// a handoff request makes it pending until LiveChat has a chat for it; it is
// queued while LiveChat waits for a free agent and agent once an agent has
// joined; closed when the agent ends the chat, after which the bot owns it
// again (closed behaves like bot for routing).
const (
	ModeBot     Mode = "bot"
	ModePending Mode = "pending"
	ModeQueued  Mode = "queued"
	ModeAgent   Mode = "agent"
	ModeClosed  Mode = "closed"
)

// Valid reports whether m is one of the known modes.
func (m Mode) Valid() bool {
	switch m {
	case ModeBot, ModePending, ModeQueued, ModeAgent, ModeClosed:
		return true
	}
	return false
}

// WithAgent reports whether a human owns the conversation (or is about to),
// so user turns must be forwarded to LiveChat instead of answered by the bot.
func (m Mode) WithAgent() bool {
	return m == ModePending || m == ModeQueued || m == ModeAgent
}

// Customer is what we tell the agent about the person behind a conversation.
type Customer struct {
	Name   string            `json:"name,omitempty"`
	Email  string            `json:"email,omitempty"`
	Fields map[string]string `json:"fields,omitempty"`
}

// Author says who wrote a transcript entry.
type Author string

// The authors of transcript entries.
const (
	AuthorBot   Author = "bot"
	AuthorUser  Author = "user"
	AuthorAgent Author = "agent"
)

// Valid reports whether a is one of the known authors.
func (a Author) Valid() bool {
	return a == AuthorBot || a == AuthorUser || a == AuthorAgent
}

// TranscriptEntry is one turn of the conversation, as the agent will see it
// when the chat opens.
type TranscriptEntry struct {
	Author Author    `json:"author"`
	Text   string    `json:"text"`
	Time   time.Time `json:"time,omitzero"`
}

// ReplyTo says where messages from the agent go back to: the surface the
// user is on and its address there (a Google Chat space/thread name, a
// Dialogflow session, a callback URL for the REST API).
type ReplyTo struct {
	Channel Channel `json:"channel"`
	Address string  `json:"address,omitempty"`
}

// Channel names a bot surface.
type Channel string

// The bot surfaces handoff accepts.
const (
	ChannelDialogflowES Channel = "dialogflow-es"
	ChannelDialogflowCX Channel = "dialogflow-cx"
	ChannelGoogleChat   Channel = "google-chat"
	ChannelREST         Channel = "rest"
)

// MaxAgents bounds Conversation.Agents: a chat transferred around more
// often than this forgets its oldest names (the message still arrives,
// without a name).
const MaxAgents = 16

// SetAgent records an agent's name. It reports whether the record changed.
func (c *Conversation) SetAgent(id, name string) bool {
	if id == "" || name == "" || c.Agents[id] == name {
		return false
	}
	if c.Agents == nil {
		c.Agents = map[string]string{}
	}
	if _, ok := c.Agents[id]; !ok && len(c.Agents) >= MaxAgents {
		// No order is kept; any old name may go, the newest must stay.
		for k := range c.Agents {
			delete(c.Agents, k)
			break
		}
	}
	c.Agents[id] = name
	return true
}

// Conversation is the state of one conversation as the worker and the
// gateway share it. Version increases by one on every change and fences
// concurrent writers: a write that does not name the current version fails.
type Conversation struct {
	ID   string `json:"id"`
	Mode Mode   `json:"mode"`
	// CustomerID is LiveChat's customer (entity) ID, created once and reused
	// so the agent always sees one customer per conversation.
	CustomerID string `json:"customer_id,omitempty"`
	ChatID     string `json:"chat_id,omitempty"`
	ThreadID   string `json:"thread_id,omitempty"`
	// LastEventID is the ID of the last event fully applied to LiveChat.
	LastEventID string `json:"last_event_id,omitempty"`
	// LastSeq is the inbound stream sequence of that event. Sequences grow
	// in publish order, so a worker may only write an event's outcome when
	// its sequence is above LastSeq: a worker whose message was redelivered
	// elsewhere can never overwrite newer state.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// StreamEpoch names the inbound stream LastSeq belongs to (its creation
	// time, Unix nanoseconds): a stream deleted and created again restarts
	// its sequences at 1, and an old LastSeq must then not fence new events.
	StreamEpoch int64 `json:"stream_epoch,omitempty"`
	// Group is the LiveChat group the chat was routed to.
	Group *int `json:"group,omitempty"`
	// Pending holds user messages that arrived while no chat was open, so
	// the next handoff opens with them. It is bounded by the writer.
	Pending []TranscriptEntry `json:"pending,omitempty"`
	// Applied holds the IDs of the inbound events applied to this
	// conversation within the idempotency window. The worker writes it in
	// the same compare-and-swap as the state change, so a copy of an
	// applied event (a publish retried after a NATS restart, or under
	// another Nats-Msg-Id) is recognised whatever JetStream remembers.
	Applied AppliedEvents `json:"applied,omitempty"`
	// Touched holds the IDs of inbound events an attempt left unrecorded
	// after it had called LiveChat: the next attempt, in whichever
	// process, looks the event up in LiveChat before it sends. JetStream's
	// delivery count says the same in most cases, but a nats-server killed
	// abruptly forgets the deliveries of its last moments (it writes
	// consumer state about ten times a second) and delivers such an event
	// again as if for the first time. Bounded by MaxTouchedEvents; the
	// commit of the event removes it.
	Touched []string `json:"touched,omitempty"`
	ReplyTo ReplyTo  `json:"reply_to,omitzero"`
	// Language is the user's language code as the bot surface said it at
	// the handoff, for the texts told to the user.
	Language string `json:"language,omitempty"`
	// Agents maps the LiveChat agents seen in the chat (ID to name), so an
	// agent's message can carry the name although LiveChat's message
	// webhook does not. At most MaxAgents entries; SetAgent keeps it so.
	Agents map[string]string `json:"agents,omitempty"`
	// Funnel is the current (or last) handoff's way through the funnel
	// stages, for the handoff_funnel_* metrics; nil before the first
	// handoff.
	Funnel  *Funnel   `json:"funnel,omitempty"`
	Version int64     `json:"version"`
	Updated time.Time `json:"updated,omitzero"`
}

// MaxAppliedEvents caps the event IDs a conversation remembers: at about
// 60 bytes per UUIDv7 entry it bounds the record's growth at 6 KB, however
// busy the conversation. A copy of an event arriving after more than this
// many later events of the same conversation is not recognised; retries
// come within minutes, long before that.
const MaxAppliedEvents = 100

// MaxTouchedEvents caps Conversation.Touched. Only events whose attempt
// failed after calling LiveChat and have not been applied since are in it,
// a handful at most; past the cap the oldest is forgotten and left to
// JetStream's delivery count.
const MaxTouchedEvents = 16

// AppliedEvent is one event ID a conversation remembers as applied.
type AppliedEvent struct {
	ID string `json:"id"`
	// At is when it was applied, in Unix seconds (the applier's clock, not
	// the event's time, which the publisher sets): compact, and precise
	// enough for a window of hours.
	At int64 `json:"at"`
}

// AppliedEvents is the bounded memory of applied event IDs, oldest first.
type AppliedEvents []AppliedEvent

// Has reports whether id is remembered as applied.
func (a AppliedEvents) Has(id string) bool {
	for _, e := range a {
		if e.ID == id {
			return true
		}
	}
	return false
}

// Add remembers id as applied at now and forgets what the window and the
// cap no longer require: entries applied before now-window, then the oldest
// beyond MaxAppliedEvents. An entry is kept for at least the window unless
// the cap pushes it out. A window of zero or less keeps entries by the cap
// alone.
func (a *AppliedEvents) Add(id string, now time.Time, window time.Duration) {
	kept := make(AppliedEvents, 0, min(len(*a)+1, MaxAppliedEvents+1))
	cutoff := now.Add(-window).Unix()
	for _, e := range *a {
		if e.ID == id || (window > 0 && e.At < cutoff) {
			continue
		}
		kept = append(kept, e)
	}
	kept = append(kept, AppliedEvent{ID: id, At: now.Unix()})
	if n := len(kept) - MaxAppliedEvents; n > 0 {
		kept = kept[n:]
	}
	*a = kept
}
