package outbound

import (
	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/texts"
)

// Render returns what a text surface (Google Chat) shows for an event, or
// "" when the event has nothing for the user: texts.Line, shared with the
// gateway's Dialogflow answers, so a user reads the same words anywhere.
func Render(ev handoff.Event, lang string, set texts.Set) string { return set.Line(ev, lang) }
