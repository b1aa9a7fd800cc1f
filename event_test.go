package handoff_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
)

func group(n int) *int { return &n }

func TestEventRoundTripEveryType(t *testing.T) {
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		typ  handoff.EventType
		data any
	}{
		{handoff.TypeHandoffRequested, &handoff.HandoffRequested{
			Customer:   handoff.Customer{Name: "Ana Souza", Email: "ana@example.com", Fields: map[string]string{"plan": "pro"}},
			Transcript: []handoff.TranscriptEntry{{Author: handoff.AuthorUser, Text: "hi", Time: at}, {Author: handoff.AuthorBot, Text: "hello", Time: at}},
			Group:      group(2), Reason: "billing", Language: "pt-BR",
			ReplyTo: handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: "spaces/AAA/threads/t1"},
			Text:    "agent please",
		}},
		{handoff.TypeMessageUser, &handoff.UserMessage{Text: "my order is late", Attachments: []string{"https://example.com/a.png"}}},
		{handoff.TypeHandoffCancelled, &handoff.HandoffCancelled{Reason: "user went back to bot"}},
		{handoff.TypeMessageAgent, &handoff.AgentMessage{Text: "Hi, I'm Tom", AgentID: "a1", AgentName: "Tom", ChatID: "PS0X0L086G", LiveChatEventID: "PZ070E0W1B_3"}},
		{handoff.TypeChatClosed, &handoff.ChatClosed{ChatID: "PS0X0L086G", ThreadID: "PZ070E0W1B", ClosedBy: "agent@example.com", Language: "pt"}},
		{handoff.TypeChatQueued, &handoff.ChatQueued{ChatID: "PS0X0L086G", Position: 3, WaitSeconds: 120,
			ReplyTo: handoff.ReplyTo{Channel: handoff.ChannelREST}, Language: "en"}},
		{handoff.TypeAgentJoined, &handoff.AgentJoined{ChatID: "PS0X0L086G", AgentID: "agent@example.com", AgentName: "Agent Smith"}},
		{handoff.TypeChatTransferred, &handoff.ChatTransferred{ChatID: "PS0X0L086G", Group: group(3), AgentID: "b@example.com", Reason: "manual"}},
		{handoff.TypeAgentsUnavailable, &handoff.AgentsUnavailable{ChatID: "PS0X0L086G", Reason: "routing.archived_offline", Back: true}},
	}
	if len(cases) != len(handoff.EventTypes) {
		t.Fatalf("test covers %d types, domain has %d", len(cases), len(handoff.EventTypes))
	}
	for _, c := range cases {
		t.Run(string(c.typ), func(t *testing.T) {
			ev, err := handoff.NewEvent(c.typ, "projects/acme/agent/sessions/s 1", c.data)
			if err != nil {
				t.Fatal(err)
			}
			ev.Time = at
			b, err := ev.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			var wire map[string]any
			if err := json.Unmarshal(b, &wire); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"} {
				if _, ok := wire[k]; !ok {
					t.Errorf("wire form lacks CloudEvents attribute %q: %s", k, b)
				}
			}
			if wire["specversion"] != "1.0" || wire["type"] != string(c.typ) {
				t.Errorf("wire attributes wrong: %s", b)
			}
			back, err := handoff.UnmarshalEvent(b)
			if err != nil {
				t.Fatal(err)
			}
			if back.ID != ev.ID || back.Subject != ev.Subject || back.Type != ev.Type || !back.Time.Equal(at) {
				t.Errorf("envelope changed: %+v vs %+v", back, ev)
			}
			p, err := back.Payload()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, c.data) {
				t.Errorf("data changed:\n got %#v\nwant %#v", p, c.data)
			}
		})
	}
}

func TestValidateNamesTheField(t *testing.T) {
	valid := func() handoff.Event {
		ev, err := handoff.NewEvent(handoff.TypeMessageUser, "conv-1", handoff.UserMessage{Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	cases := []struct {
		name  string
		edit  func(*handoff.Event)
		field string
	}{
		{"missing id", func(e *handoff.Event) { e.ID = "" }, "id"},
		{"missing subject", func(e *handoff.Event) { e.Subject = "" }, "subject"},
		{"missing type", func(e *handoff.Event) { e.Type = "" }, "type"},
		{"unknown type", func(e *handoff.Event) { e.Type = "message.bogus" }, "type"},
		{"missing source", func(e *handoff.Event) { e.Source = "" }, "source"},
		{"wrong specversion", func(e *handoff.Event) { e.SpecVersion = "0.3" }, "specversion"},
		{"missing time", func(e *handoff.Event) { e.Time = time.Time{} }, "time"},
		{"id too long", func(e *handoff.Event) { e.ID = strings.Repeat("x", handoff.MaxIDBytes+1) }, "id"},
		{"subject with newline", func(e *handoff.Event) { e.Subject = "a\nb" }, "subject"},
		{"subject invalid UTF-8", func(e *handoff.Event) { e.Subject = "a\xffb" }, "subject"},
		{"oversized data", func(e *handoff.Event) {
			e.Data = json.RawMessage(`{"text":"` + strings.Repeat("a", handoff.MaxDataBytes) + `"}`)
		}, "data"},
		{"data invalid UTF-8", func(e *handoff.Event) { e.Data = json.RawMessage("{\"text\":\"\xff\xfe\"}") }, "data"},
		{"data not an object", func(e *handoff.Event) { e.Data = json.RawMessage(`[1,2]`) }, "data"},
		{"empty message", func(e *handoff.Event) { e.Data = json.RawMessage(`{"text":"  "}`) }, "data.text"},
		{"attachment not a URL", func(e *handoff.Event) { e.Data = json.RawMessage(`{"text":"x","attachments":["file:///etc/passwd"]}`) }, "data.attachments[0]"},
		{"wrong content type", func(e *handoff.Event) { e.DataContentType = "text/xml" }, "datacontenttype"},
		{"bad transcript author", func(e *handoff.Event) {
			e.Type = handoff.TypeHandoffRequested
			e.Data = json.RawMessage(`{"transcript":[{"author":"robot","text":"x"}]}`)
		}, "data.transcript[0].author"},
		{"agent message without chat", func(e *handoff.Event) {
			e.Type = handoff.TypeMessageAgent
			e.Data = json.RawMessage(`{"text":"x"}`)
		}, "data.chat_id"},
		{"queued without chat", func(e *handoff.Event) {
			e.Type = handoff.TypeChatQueued
			e.Data = json.RawMessage(`{"position":2}`)
		}, "data.chat_id"},
		{"queued at a negative position", func(e *handoff.Event) {
			e.Type = handoff.TypeChatQueued
			e.Data = json.RawMessage(`{"chat_id":"C1","position":-1}`)
		}, "data.position"},
		{"queued with a negative wait", func(e *handoff.Event) {
			e.Type = handoff.TypeChatQueued
			e.Data = json.RawMessage(`{"chat_id":"C1","wait_seconds":-5}`)
		}, "data.wait_seconds"},
		{"agent joined without agent", func(e *handoff.Event) {
			e.Type = handoff.TypeAgentJoined
			e.Data = json.RawMessage(`{"chat_id":"C1","agent_name":"Tom"}`)
		}, "data.agent_id"},
		{"transferred to a negative group", func(e *handoff.Event) {
			e.Type = handoff.TypeChatTransferred
			e.Data = json.RawMessage(`{"chat_id":"C1","group":-2}`)
		}, "data.group"},
		{"agents unavailable without chat", func(e *handoff.Event) {
			e.Type = handoff.TypeAgentsUnavailable
			e.Data = json.RawMessage(`{"reason":"routing.archived_offline"}`)
		}, "data.chat_id"},
		{"position is not a number", func(e *handoff.Event) {
			e.Type = handoff.TypeChatQueued
			e.Data = json.RawMessage(`{"chat_id":"C1","position":"first"}`)
		}, "data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := valid()
			c.edit(&ev)
			err := ev.Validate()
			var ve *handoff.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want a ValidationError, got %v", err)
			}
			if ve.Field != c.field {
				t.Errorf("error names field %q, want %q (%v)", ve.Field, c.field, err)
			}
			if !errors.Is(err, handoff.ErrInvalid) || !strings.Contains(err.Error(), c.field) {
				t.Errorf("error %q should match ErrInvalid and name %q", err, c.field)
			}
		})
	}
}

func TestReverseKindsAreTheOnesFromLiveChat(t *testing.T) {
	for _, typ := range handoff.EventTypes {
		inbound := typ == handoff.TypeHandoffRequested || typ == handoff.TypeMessageUser || typ == handoff.TypeHandoffCancelled
		if typ.Reverse() == inbound {
			t.Errorf("%s: Reverse() = %v", typ, typ.Reverse())
		}
		status := typ == handoff.TypeChatQueued || typ == handoff.TypeAgentJoined || typ == handoff.TypeChatTransferred || typ == handoff.TypeAgentsUnavailable
		if typ.Status() != status {
			t.Errorf("%s: Status() = %v", typ, typ.Status())
		}
	}
}

func TestUnmarshalEventRejectsGarbage(t *testing.T) {
	for _, in := range []string{``, `{`, `null`, `[]`, "{\"id\":\"\xff\"}", `{"specversion":"1.0"}`} {
		if _, err := handoff.UnmarshalEvent([]byte(in)); !errors.Is(err, handoff.ErrInvalid) {
			t.Errorf("UnmarshalEvent(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

func FuzzUnmarshalEvent(f *testing.F) {
	ev, _ := handoff.NewEvent(handoff.TypeHandoffRequested, "c", handoff.HandoffRequested{Reason: "x"})
	b, _ := ev.Marshal()
	f.Add(b)
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"message.user","subject":"c","time":"2026-01-01T00:00:00Z","data":{"text":"hi"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := handoff.UnmarshalEvent(b)
		if err != nil {
			return
		}
		// Whatever decodes must survive its own round trip.
		out, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handoff.UnmarshalEvent(out); err != nil {
			t.Fatalf("re-decoding a valid event failed: %v", err)
		}
	})
}
