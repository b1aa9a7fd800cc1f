package outbound

import (
	"encoding/json"
	"strings"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/texts"
)

// Render returns what a text surface (Google Chat) shows for an event, or
// "" when the event has nothing for the user. An agent's message is
// prefixed with the agent's name, so the user knows a person is writing;
// status and closing events are the shared texts (package texts), so a
// user reads the same words as a Dialogflow user would.
func Render(ev handoff.Event, lang string, set texts.Set) string {
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
	t, _ := set.Render(ev, lang)
	return t
}
