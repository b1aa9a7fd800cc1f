package main

import (
	"errors"
	"fmt"

	"github.com/handoff-dev/handoff/texts"
)

// textOptions holds the per-language texts handoff says on its own behalf
// (status and closing lines), as flags. The gateway (Dialogflow answers)
// and the outbound delivery register the same flags, so both surfaces say
// the same words.
type textOptions struct {
	queued, waiting, agentJoined, transferred, noAgents, noAgentsBot, noAgentsMessage, closed, closedInactive string
}

func (o *textOptions) register(f *flags) {
	d := texts.Defaults()
	const form = " (text, or JSON per language)"
	f.String(&o.queued, "queued-text", "HANDOFF_QUEUED_TEXT", d.Queued.String(), "told the user while the chat waits in LiveChat's queue; {position} and {wait_minutes} are filled in"+form)
	f.String(&o.waiting, "waiting-text", "HANDOFF_WAITING_TEXT", d.Waiting.String(), "told the user while the chat waits and LiveChat gives no position"+form)
	f.String(&o.agentJoined, "agent-joined-text", "HANDOFF_AGENT_JOINED_TEXT", d.AgentJoined.String(), "told the user when an agent takes the chat; {agent} is the agent's name"+form)
	f.String(&o.transferred, "transferred-text", "HANDOFF_TRANSFERRED_TEXT", d.Transferred.String(), "told the user when the chat moves to another agent or group; {agent} is the new agent's name"+form)
	f.String(&o.noAgents, "no-agents-text", "HANDOFF_NO_AGENTS_TEXT", d.NoAgents.String(), "told the user when no agent is available and the user keeps waiting"+form)
	f.String(&o.noAgentsBot, "no-agents-bot-text", "HANDOFF_NO_AGENTS_BOT_TEXT", d.NoAgentsBot.String(), "told the user when no agent is available and the bot takes over again"+form)
	f.String(&o.noAgentsMessage, "no-agents-message-text", "HANDOFF_NO_AGENTS_MESSAGE_TEXT", d.NoAgentsMessage.String(), "told the user when no agent picked the chat up in time and it was left for an agent to follow up (--pickup-action message)"+form)
	f.String(&o.closed, "closed-text", "HANDOFF_CLOSED_TEXT", d.Closed.String(), "told the user when the agent ends the chat"+form)
	f.String(&o.closedInactive, "closed-inactive-text", "HANDOFF_CLOSED_INACTIVE_TEXT", d.ClosedInactive.String(), "told the user when LiveChat ends the chat after inactivity"+form)
}

// set parses the flag values.
func (o *textOptions) set() (texts.Set, error) {
	var s texts.Set
	var errs []error
	for _, t := range []struct {
		name string
		raw  string
		dst  *texts.ByLanguage
	}{
		{"--queued-text", o.queued, &s.Queued},
		{"--waiting-text", o.waiting, &s.Waiting},
		{"--agent-joined-text", o.agentJoined, &s.AgentJoined},
		{"--transferred-text", o.transferred, &s.Transferred},
		{"--no-agents-text", o.noAgents, &s.NoAgents},
		{"--no-agents-bot-text", o.noAgentsBot, &s.NoAgentsBot},
		{"--no-agents-message-text", o.noAgentsMessage, &s.NoAgentsMessage},
		{"--closed-text", o.closed, &s.Closed},
		{"--closed-inactive-text", o.closedInactive, &s.ClosedInactive},
	} {
		var err error
		if *t.dst, err = texts.Parse(t.raw); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.name, err))
		}
	}
	return s, errors.Join(errs...)
}
