package handoff

import "time"

// FunnelStage names a step a handoff reaches on its way from the user's
// request to the end of the chat with an agent. The handoff funnel metrics
// count each stage once per handoff; the times it was reached live in the
// conversation record (Conversation.Funnel), written by the same
// compare-and-swap that decides it was reached, so a redelivered or
// repeated event cannot count it twice.
type FunnelStage string

// The stages, in the order a handoff that goes well reaches them. Queued
// and AgentJoined may be skipped (LiveChat assigned an agent at once, or
// a missed webhook); the others follow from the events that pass.
const (
	StageRequested       FunnelStage = "requested"
	StageChatStarted     FunnelStage = "chat_started"
	StageQueued          FunnelStage = "queued"
	StageAgentJoined     FunnelStage = "agent_joined"
	StageFirstAgentReply FunnelStage = "first_agent_reply"
	StageClosed          FunnelStage = "closed"
)

// FunnelStages lists the stages in order.
var FunnelStages = []FunnelStage{StageRequested, StageChatStarted, StageQueued, StageAgentJoined, StageFirstAgentReply, StageClosed}

// Why a handoff ended before an agent replied (Funnel.Abandoned).
const (
	// AbandonUserCancelled: the user went back to the bot
	// (handoff.cancelled) before any agent's reply.
	AbandonUserCancelled = "user_cancelled"
	// AbandonPickupTimeout: no agent took the chat within the pickup
	// timeout and the sweep closed it (pickup action bot or message).
	AbandonPickupTimeout = "pickup_timeout"
	// AbandonNoAgents: LiveChat found no agent and archived the chat
	// (agents.unavailable, or the cancel the gateway sends for it).
	AbandonNoAgents = "no_agents"
	// AbandonClosedWithoutReply: the chat ended (an agent or LiveChat's
	// router closed it) before any agent's reply reached the user.
	AbandonClosedWithoutReply = "closed_without_reply"
	// AbandonNotOpened: no chat was ever opened for the handoff (its
	// handoff.requested was dead-lettered, say) before the next one began.
	AbandonNotOpened = "not_opened"
)

// AbandonReasons lists every abandonment reason.
var AbandonReasons = []string{AbandonUserCancelled, AbandonPickupTimeout, AbandonNoAgents, AbandonClosedWithoutReply, AbandonNotOpened}

// CancelReasonNoAgents is the reason of the handoff.cancelled the gateway
// publishes when LiveChat found no agent and the user goes back to the bot
// (--when-no-agents=bot): the worker tells it from a user's own cancel.
const CancelReasonNoAgents = "no agent available"

// Funnel is one handoff's way through the stages: opened by the worker
// when it takes a handoff.requested with no chat live, and ended by the
// chat's close after an agent replied or by an abandonment. The times are
// Unix milliseconds, zero until reached. Channel and Group are the metric
// labels, fixed (and bounded) when the handoff begins so every process
// counts the handoff under the same ones.
type Funnel struct {
	// Handoff is the ID of the handoff.requested event that began it.
	Handoff         string `json:"handoff"`
	Channel         string `json:"channel,omitempty"`
	Group           string `json:"group,omitempty"`
	Requested       int64  `json:"requested"`
	ChatStarted     int64  `json:"chat_started,omitempty"`
	Queued          int64  `json:"queued,omitempty"`
	AgentJoined     int64  `json:"agent_joined,omitempty"`
	FirstAgentReply int64  `json:"first_agent_reply,omitempty"`
	Closed          int64  `json:"closed,omitempty"`
	// Abandoned is why the handoff ended without an agent's reply.
	Abandoned string `json:"abandoned,omitempty"`
}

func (f *Funnel) at(s FunnelStage) *int64 {
	switch s {
	case StageRequested:
		return &f.Requested
	case StageChatStarted:
		return &f.ChatStarted
	case StageQueued:
		return &f.Queued
	case StageAgentJoined:
		return &f.AgentJoined
	case StageFirstAgentReply:
		return &f.FirstAgentReply
	case StageClosed:
		return &f.Closed
	}
	return nil
}

// Reached reports whether the handoff reached stage s.
func (f *Funnel) Reached(s FunnelStage) bool {
	if f == nil {
		return false
	}
	p := f.at(s)
	return p != nil && *p != 0
}

// Ended reports whether the handoff is over: closed after an agent's reply,
// or abandoned. An ended handoff reaches no further stage.
func (f *Funnel) Ended() bool {
	return f != nil && (f.Closed != 0 || f.Abandoned != "")
}

// RequestedAt is when the handoff was requested.
func (f *Funnel) RequestedAt() time.Time { return time.UnixMilli(f.Requested) }

// Reach records that the handoff reached stage s at the given time and
// returns the time since the request. ok is false, and nothing changes,
// when there is no handoff, it already reached s, or it ended.
func (f *Funnel) Reach(s FunnelStage, at time.Time) (sinceRequest time.Duration, ok bool) {
	if f == nil || f.Handoff == "" || f.Ended() {
		return 0, false
	}
	p := f.at(s)
	if p == nil || *p != 0 {
		return 0, false
	}
	ms := max(at.UnixMilli(), f.Requested, 1)
	*p = ms
	return time.Duration(ms-f.Requested) * time.Millisecond, true
}

// End records the end of the handoff at the given time. After an agent's
// reply the end is the closed stage (stage set); before it, the handoff is
// abandoned for reason (reason set). Both are empty, and nothing changes,
// when there is no handoff or it ended already.
func (f *Funnel) End(at time.Time, reason string) (stage FunnelStage, sinceRequest time.Duration, abandoned string) {
	if f == nil || f.Handoff == "" || f.Ended() {
		return "", 0, ""
	}
	if f.FirstAgentReply != 0 {
		d, _ := f.Reach(StageClosed, at)
		return StageClosed, d, ""
	}
	f.Abandoned = reason
	return "", 0, reason
}
