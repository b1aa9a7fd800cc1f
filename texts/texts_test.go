package texts_test

import (
	"testing"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/texts"
)

func event(t *testing.T, typ handoff.EventType, data any) handoff.Event {
	t.Helper()
	ev, err := handoff.NewEvent(typ, "conv-1", data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestRenderEveryStatusInTheUsersLanguage(t *testing.T) {
	s := texts.Defaults()
	s.Queued = texts.ByLanguage{"": "#{position}, ~{wait_minutes} min", "pt": "Você é o número {position} (cerca de {wait_minutes} min)"}
	s.AgentJoined = texts.ByLanguage{"": "{agent} joined", "pt": "{agent} entrou"}
	cases := []struct {
		name string
		ev   handoff.Event
		lang string
		want string
	}{
		{"queued with position", event(t, handoff.TypeChatQueued, handoff.ChatQueued{ChatID: "C", Position: 3, WaitSeconds: 61}), "en", "#3, ~2 min"},
		{"queued in the event's language", event(t, handoff.TypeChatQueued, handoff.ChatQueued{ChatID: "C", Position: 2, WaitSeconds: 30, Language: "pt-BR"}), "", "Você é o número 2 (cerca de 1 min)"},
		{"queued without position", event(t, handoff.TypeChatQueued, handoff.ChatQueued{ChatID: "C"}), "en", texts.Defaults().Waiting[""]},
		{"agent joined", event(t, handoff.TypeAgentJoined, handoff.AgentJoined{ChatID: "C", AgentID: "a", AgentName: "Anna"}), "pt", "Anna entrou"},
		{"agent without a name", event(t, handoff.TypeAgentJoined, handoff.AgentJoined{ChatID: "C", AgentID: "a"}), "en", "an agent joined"},
		{"transferred", event(t, handoff.TypeChatTransferred, handoff.ChatTransferred{ChatID: "C", AgentName: "Bob"}), "en", "Your chat was transferred to Bob."},
		{"no agents, waiting", event(t, handoff.TypeAgentsUnavailable, handoff.AgentsUnavailable{ChatID: "C"}), "en", texts.Defaults().NoAgents[""]},
		{"no agents, back to bot", event(t, handoff.TypeAgentsUnavailable, handoff.AgentsUnavailable{ChatID: "C", Back: true}), "en", texts.Defaults().NoAgentsBot[""]},
		{"pickup timeout, message left", event(t, handoff.TypeAgentsUnavailable, handoff.AgentsUnavailable{ChatID: "C", Back: true, Reason: handoff.ReasonPickupMessageLeft}), "en", texts.Defaults().NoAgentsMessage[""]},
		{"closed by the agent", event(t, handoff.TypeChatClosed, handoff.ChatClosed{ChatID: "C", ClosedBy: "a@example.com"}), "en", texts.Defaults().Closed[""]},
		{"closed by inactivity", event(t, handoff.TypeChatClosed, handoff.ChatClosed{ChatID: "C"}), "en", texts.Defaults().ClosedInactive[""]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := s.Render(c.ev, c.lang)
			if !ok || got != c.want {
				t.Errorf("Render = %q, %v; want %q", got, ok, c.want)
			}
		})
	}
}

func TestRenderLeavesAgentTextAndEmptyTextsAlone(t *testing.T) {
	s := texts.Defaults()
	if got, ok := s.Render(event(t, handoff.TypeMessageAgent, handoff.AgentMessage{ChatID: "C", Text: "hi"}), "en"); ok {
		t.Errorf("message.agent rendered as %q; its text is the agent's", got)
	}
	s.AgentJoined = texts.ByLanguage{"": ""}
	if got, ok := s.Render(event(t, handoff.TypeAgentJoined, handoff.AgentJoined{ChatID: "C", AgentID: "a"}), "en"); ok {
		t.Errorf("an empty text rendered as %q; empty must say nothing", got)
	}
}

func TestParseTakesTextOrJSON(t *testing.T) {
	b, err := texts.Parse("Hello")
	if err != nil || b.For("fr") != "Hello" {
		t.Errorf("plain text: %v %v", b, err)
	}
	b, err = texts.Parse(`{"":"Hi","PT-BR":"Olá"}`)
	if err != nil || b.For("pt-br") != "Olá" || b.For("pt_BR") != "Olá" || b.For("de") != "Hi" {
		t.Errorf("JSON: %v %v", b, err)
	}
	if p, err := texts.Parse("{agent} joined"); err != nil || p.For("en") != "{agent} joined" {
		t.Errorf("a text opening with a placeholder: %v %v", p, err)
	}
	if _, err := texts.Parse(`{"":1}`); err == nil {
		t.Error("a JSON object of numbers was accepted")
	}
	back, err := texts.Parse(b.String())
	if err != nil || back.For("pt-br") != "Olá" {
		t.Errorf("String does not round-trip: %q", b.String())
	}
}
