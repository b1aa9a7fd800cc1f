// Package texts holds what handoff itself says to a user, per language: the
// status lines (queued, agent joined, transferred, no agent available) and
// the closing lines, and renders a reverse event into one of them. The
// gateway (Dialogflow answers) and the outbound consumer (Google Chat,
// callbacks) both render with it, so a user reads the same words on every
// surface.
package texts

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/handoff-dev/handoff"
)

// ByLanguage maps a language code ("en", "pt-br"; case-insensitive) to a
// text; the "" key is the fallback.
type ByLanguage map[string]string

// Parse reads plain text (the fallback language) or a JSON object of
// language code to text, the form every per-language flag takes. Text
// counts as JSON when it opens an object with a key ('{' then '"') or is
// "{}", so a text that starts with a placeholder ("{agent} joined") stays
// text.
func Parse(s string) (ByLanguage, error) {
	if looksLikeObject(s) {
		var m map[string]string
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, fmt.Errorf("want a JSON object of language to text: %w", err)
		}
		out := make(ByLanguage, len(m))
		for k, v := range m {
			out[normLang(k)] = v
		}
		return out, nil
	}
	return ByLanguage{"": s}, nil
}

func looksLikeObject(s string) bool {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "{")
	if !ok {
		return false
	}
	rest = strings.TrimSpace(rest)
	return strings.HasPrefix(rest, `"`) || rest == "}"
}

// String is the JSON form Parse reads (for flag defaults).
func (b ByLanguage) String() string {
	if len(b) == 1 {
		if v, ok := b[""]; ok {
			return v
		}
	}
	out, _ := json.Marshal(map[string]string(b))
	return string(out)
}

// normLang writes a language code the one way keys are stored: lower case,
// '-' between parts ("pt_BR" and "pt-BR" are "pt-br").
func normLang(lang string) string {
	return strings.ReplaceAll(strings.ToLower(lang), "_", "-")
}

// For finds the text of a language: the exact code (case and '-'/'_'
// ignored), then the base language before '-', then the "" fallback.
func (b ByLanguage) For(lang string) string {
	lang = normLang(lang)
	if v, ok := b[lang]; ok {
		return v
	}
	if i := strings.IndexByte(lang, '-'); i > 0 {
		if v, ok := b[lang[:i]]; ok {
			return v
		}
	}
	return b[""]
}

// Set is every text handoff says on its own behalf. Texts may hold
// placeholders: {position} and {wait_minutes} (Queued; wait rounded up, 0
// when LiveChat gave none) and {agent} (AgentJoined, Transferred: the
// agent's name, or "an agent" when unknown). An empty text says nothing.
type Set struct {
	// Queued: the chat waits and LiveChat said at which position.
	Queued ByLanguage
	// Waiting: the chat waits and LiveChat gave no position.
	Waiting ByLanguage
	// AgentJoined: an agent took the chat.
	AgentJoined ByLanguage
	// Transferred: the chat moved to another agent or group.
	Transferred ByLanguage
	// NoAgents: no agent is available and the user keeps waiting
	// (--when-no-agents=wait).
	NoAgents ByLanguage
	// NoAgentsBot: no agent is available and the bot has the user again
	// (--when-no-agents=bot).
	NoAgentsBot ByLanguage
	// NoAgentsMessage: no agent picked the chat up in time, and it was
	// closed and left for an agent to follow up (--pickup-action
	// message); the bot has the user again.
	NoAgentsMessage ByLanguage
	// Closed: the agent ended the chat; ClosedInactive: LiveChat ended it
	// after inactivity. Either way the bot answers again.
	Closed         ByLanguage
	ClosedInactive ByLanguage
}

// Defaults returns the English texts documented in the README.
func Defaults() Set {
	return Set{
		Queued:          ByLanguage{"": "You are number {position} in the queue. An agent will be with you soon."},
		Waiting:         ByLanguage{"": "All our agents are busy. Please wait, an agent will be with you soon."},
		AgentJoined:     ByLanguage{"": "{agent} joined the chat."},
		Transferred:     ByLanguage{"": "Your chat was transferred to {agent}."},
		NoAgents:        ByLanguage{"": "No agent is available right now. Please stay: your message is waiting for the next free agent."},
		NoAgentsBot:     ByLanguage{"": "Sorry, no agent is available right now. You are back with the bot."},
		NoAgentsMessage: ByLanguage{"": "No agent could take your chat in time. We kept your messages and an agent will follow up. You are back with the bot."},
		Closed:          ByLanguage{"": "The agent ended the chat. You are back with the bot."},
		ClosedInactive:  ByLanguage{"": "The chat ended after a period of inactivity. You are back with the bot."},
	}
}

// Line returns what a text surface (Google Chat, a Dialogflow answer)
// shows for a reverse event, or "" when the event has nothing for the
// user: an agent's message prefixed with the agent's name, so the user
// knows a person is writing and who, and the status and closing kinds as
// Render words them.
func (s Set) Line(ev handoff.Event, lang string) string {
	if ev.Type == handoff.TypeMessageAgent {
		var m handoff.AgentMessage
		if err := json.Unmarshal(ev.Data, &m); err != nil || strings.TrimSpace(m.Text) == "" {
			return ""
		}
		name := strings.TrimSpace(m.AgentName)
		if name == "" {
			name = "Agent"
		}
		return name + ": " + m.Text
	}
	t, _ := s.Render(ev, lang)
	return t
}

// Render returns the text a user reads for a reverse event, in lang (or,
// when lang is empty, the language the event carries). ok is false for
// events that are not ours to word (message.agent carries the agent's own
// text; bot-side kinds never reach a user) and for texts configured empty.
func (s Set) Render(ev handoff.Event, lang string) (text string, ok bool) {
	p, err := ev.Payload()
	if err != nil {
		return "", false
	}
	var tmpl ByLanguage
	var evLang string
	agent := ""
	pos, wait := 0, 0
	switch d := p.(type) {
	case *handoff.ChatQueued:
		evLang, pos, wait = d.Language, d.Position, d.WaitSeconds
		tmpl = s.Waiting
		if d.Position > 0 {
			tmpl = s.Queued
		}
	case *handoff.AgentJoined:
		evLang, agent, tmpl = d.Language, d.AgentName, s.AgentJoined
	case *handoff.ChatTransferred:
		evLang, agent, tmpl = d.Language, d.AgentName, s.Transferred
	case *handoff.AgentsUnavailable:
		evLang, tmpl = d.Language, s.NoAgents
		switch {
		case d.Reason == handoff.ReasonPickupMessageLeft:
			tmpl = s.NoAgentsMessage
		case d.Back:
			tmpl = s.NoAgentsBot
		}
	case *handoff.ChatClosed:
		evLang, tmpl = d.Language, s.Closed
		if d.ClosedBy == "" {
			tmpl = s.ClosedInactive
		}
	default:
		return "", false
	}
	if lang == "" {
		lang = evLang
	}
	t := tmpl.For(lang)
	if strings.TrimSpace(t) == "" {
		return "", false
	}
	if agent == "" {
		agent = "an agent"
	}
	minutes := (wait + 59) / 60
	r := strings.NewReplacer("{position}", strconv.Itoa(pos), "{wait_minutes}", strconv.Itoa(minutes), "{agent}", agent)
	return r.Replace(t), true
}
