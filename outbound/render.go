package outbound

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/handoff-dev/handoff"
)

// Texts are the words a text surface (Google Chat) shows for events that
// carry no text of their own, per language. Placeholders: {agent} (the
// agent's name, or Agent), {position}, {minutes}.
type Texts struct {
	// Agent names an agent whose name LiveChat did not give.
	Agent string `json:"agent"`
	// Closed: the chat ended; the bot answers again.
	Closed string `json:"closed"`
	// Queued, and QueuedPosition when LiveChat says where the user is.
	Queued         string `json:"queued"`
	QueuedPosition string `json:"queued_position"`
	// QueuedWait is appended when LiveChat estimates the wait.
	QueuedWait  string `json:"queued_wait"`
	Joined      string `json:"joined"`
	Transferred string `json:"transferred"`
	Unavailable string `json:"unavailable"`
}

// DefaultTexts are the built-in texts, keyed by language code ("" is the
// fallback). A deployment overrides or adds languages with its own JSON
// (--outbound-texts); missing fields fall back to these.
func DefaultTexts() map[string]Texts {
	return map[string]Texts{
		"": {
			Agent: "Agent", Closed: "The agent has ended the chat. You are talking to the bot again.",
			Queued: "You are in the queue for an agent.", QueuedPosition: "You are number {position} in the queue for an agent.",
			QueuedWait: " Expected wait: about {minutes} min.", Joined: "{agent} has joined the chat.",
			Transferred: "You are being transferred to another agent.", Unavailable: "No agent is available right now.",
		},
		"de": {
			Agent: "Mitarbeiter", Closed: "Der Mitarbeiter hat den Chat beendet. Sie sprechen wieder mit dem Bot.",
			Queued: "Sie warten auf einen Mitarbeiter.", QueuedPosition: "Sie sind Nummer {position} in der Warteschlange.",
			QueuedWait: " Wartezeit: etwa {minutes} Min.", Joined: "{agent} ist dem Chat beigetreten.",
			Transferred: "Sie werden an einen anderen Mitarbeiter weitergeleitet.", Unavailable: "Im Moment ist kein Mitarbeiter verfügbar.",
		},
		"es": {
			Agent: "Agente", Closed: "El agente ha cerrado el chat. Vuelves a hablar con el bot.",
			Queued: "Estás en la cola para hablar con un agente.", QueuedPosition: "Eres el número {position} en la cola.",
			QueuedWait: " Espera estimada: unos {minutes} min.", Joined: "{agent} se ha unido al chat.",
			Transferred: "Te estamos transfiriendo a otro agente.", Unavailable: "Ahora mismo no hay ningún agente disponible.",
		},
		"fr": {
			Agent: "Conseiller", Closed: "Le conseiller a terminé la conversation. Vous parlez de nouveau avec le bot.",
			Queued: "Vous êtes en attente d'un conseiller.", QueuedPosition: "Vous êtes numéro {position} dans la file d'attente.",
			QueuedWait: " Attente estimée : environ {minutes} min.", Joined: "{agent} a rejoint la conversation.",
			Transferred: "Vous êtes transféré à un autre conseiller.", Unavailable: "Aucun conseiller n'est disponible pour le moment.",
		},
		"pt": {
			Agent: "Atendente", Closed: "O atendente encerrou o chat. Você está falando com o bot novamente.",
			Queued: "Você está na fila para falar com um atendente.", QueuedPosition: "Você é o número {position} na fila.",
			QueuedWait: " Espera estimada: cerca de {minutes} min.", Joined: "{agent} entrou no chat.",
			Transferred: "Você está sendo transferido para outro atendente.", Unavailable: "Nenhum atendente está disponível no momento.",
		},
	}
}

// MergeTexts lays overrides over the defaults field by field.
func MergeTexts(over map[string]Texts) map[string]Texts {
	out := DefaultTexts()
	for lang, t := range over {
		lang = strings.ToLower(lang)
		base, ok := out[lang]
		if !ok {
			base = out[""]
		}
		for _, f := range []struct {
			dst *string
			src string
		}{
			{&base.Agent, t.Agent}, {&base.Closed, t.Closed}, {&base.Queued, t.Queued}, {&base.QueuedPosition, t.QueuedPosition},
			{&base.QueuedWait, t.QueuedWait}, {&base.Joined, t.Joined}, {&base.Transferred, t.Transferred}, {&base.Unavailable, t.Unavailable},
		} {
			if f.src != "" {
				*f.dst = f.src
			}
		}
		out[lang] = base
	}
	return out
}

// textsFor picks the texts of a language code: exact ("pt-br"), then the
// base language ("pt"), then the fallback.
func textsFor(all map[string]Texts, lang string) Texts {
	lang = strings.ToLower(lang)
	if t, ok := all[lang]; ok {
		return t
	}
	if i := strings.IndexAny(lang, "-_"); i > 0 {
		if t, ok := all[lang[:i]]; ok {
			return t
		}
	}
	return all[""]
}

// statusData holds the fields of the status kinds a text needs. It is
// read from the event's JSON rather than from the Go types, so a field the
// gateway adds later does not need a change here.
type statusData struct {
	AgentName   string `json:"agent_name"`
	Position    int    `json:"position"`
	WaitSeconds int    `json:"wait_seconds"`
}

// Render returns what a text surface shows for an event, or "" when the
// event has nothing for the user. An agent's message is prefixed with the
// agent's name, so the user knows a person is writing.
func Render(ev handoff.Event, lang string, all map[string]Texts) string {
	t := textsFor(all, lang)
	var d statusData
	_ = json.Unmarshal(ev.Data, &d)
	agent := strings.TrimSpace(d.AgentName)
	if agent == "" {
		agent = t.Agent
	}
	fill := func(s string) string {
		return strings.NewReplacer("{agent}", agent, "{position}", strconv.Itoa(d.Position),
			"{minutes}", strconv.Itoa(max(1, (d.WaitSeconds+59)/60))).Replace(s)
	}
	switch ev.Type {
	case handoff.TypeMessageAgent:
		var m handoff.AgentMessage
		if err := json.Unmarshal(ev.Data, &m); err != nil || strings.TrimSpace(m.Text) == "" {
			return ""
		}
		return fmt.Sprintf("%s: %s", agent, m.Text)
	case handoff.TypeChatClosed:
		return fill(t.Closed)
	case "chat.queued":
		s := t.Queued
		if d.Position > 0 {
			s = t.QueuedPosition
		}
		if d.WaitSeconds > 0 {
			s += t.QueuedWait
		}
		return fill(s)
	case "agent.joined":
		return fill(t.Joined)
	case "chat.transferred":
		return fill(t.Transferred)
	case "agents.unavailable":
		return fill(t.Unavailable)
	}
	return ""
}
