package livechat

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSplitText(t *testing.T) {
	tests := []struct {
		name string
		text string
		max  int
		want []string
	}{
		{"empty", "", 10, nil},
		{"fits", "hello", 10, []string{"hello"}},
		{"exact", "hello", 5, []string{"hello"}},
		{"prefers whitespace", "hello brave world", 12, []string{"hello brave ", "world"}},
		{"long word is cut", "abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"never splits a rune", "ééééé", 5, []string{"éé", "éé", "é"}},
		{"cjk", "字字字", 4, []string{"字", "字", "字"}},
		{"max below a rune", "字字", 1, []string{"字", "字"}},
		{"space too early is ignored", "a bcdefghijkl", 8, []string{"a bcdefg", "hijkl"}},
		{"newline counts", "line one\nline two", 10, []string{"line one\n", "line two"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := SplitText(tc.text, tc.max)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
				t.Errorf("SplitText(%q, %d) = %q, want %q", tc.text, tc.max, got, tc.want)
			}
		})
	}
	big := strings.Repeat("palavra ", 5000)
	for _, p := range SplitText(big, MaxTextBytes) {
		if len(p) > MaxTextBytes {
			t.Fatalf("part of %d bytes", len(p))
		}
	}
}

func TestWebhookSamples(t *testing.T) {
	tests := []struct {
		file, action string
		license      int64
		check        func(t *testing.T, d WebhookDelivery)
	}{
		{"incoming_event.json", ActionIncomingEvent, 21377312, func(t *testing.T, d WebhookDelivery) {
			p, err := d.IncomingEvent()
			if err != nil || p.ChatID != "PS0X0L086G" || p.ThreadID != "PZ070E0W1B" || p.Event.ID != "PZ070E0W1B_3" ||
				p.Event.CustomID != "1dnepb4z00t" || p.Event.Text != "14" || p.Event.Recipients != "all" ||
				!p.Event.CreatedAt.Equal(time.Date(2019, 10, 11, 9, 41, 0, 877000000, time.UTC)) {
				t.Errorf("IncomingEvent = %+v, %v", p, err)
			}
			if _, err := d.ChatDeactivated(); err == nil {
				t.Error("incoming_event decoded as chat_deactivated")
			}
		}},
		{"chat_deactivated.json", ActionChatDeactivated, 21377312, func(t *testing.T, d WebhookDelivery) {
			p, err := d.ChatDeactivated()
			if err != nil || p != (ChatDeactivatedPayload{ChatID: "PS0X0L086G", ThreadID: "PZ070E0W1B", UserID: "agent@example.com"}) {
				t.Errorf("ChatDeactivated = %+v, %v", p, err)
			}
		}},
		{"incoming_chat.json", ActionIncomingChat, 21377312, nil},
		{"chat_user_added.json", "chat_user_added", 21377312, nil},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "webhooks", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			d, err := ParseWebhook(b)
			if err != nil {
				t.Fatal(err)
			}
			if d.Action != tc.action || d.LicenseID != tc.license || !d.CheckSecret("dummy_key") || d.CheckSecret("") || d.CheckSecret("dummy_ke") {
				t.Errorf("delivery = %+v", d)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}

func TestDecodeErrorEnvelopes(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		typ, msg   string
	}{
		{"web api", `{"error":{"type":"chat_inactive","message":"Chat is inactive"}}`, 422, ErrTypeChatInactive, "Chat is inactive"},
		{"accounts", `{"oauth_exception":"invalid_grant","exception_description":"expired"}`, 400, OAuthInvalidGrant, "expired"},
		{"rfc 6749", `{"error":"invalid_client","error_description":"who?"}`, 401, OAuthInvalidClient, "who?"},
		{"html 429", `<html>slow down</html>`, 429, ErrTypeTooManyRequests, "<html>slow down</html>"},
		{"empty 502", ``, 502, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := decodeError("x", tc.status, []byte(tc.body), time.Second)
			if e.Type != tc.typ || e.Message != tc.msg || e.Status != tc.status || e.RetryAfter != time.Second {
				t.Errorf("got %+v", e)
			}
		})
	}
	var wrapped error = &Error{Action: "send_event", Status: 401, Type: OAuthInvalidGrant}
	wrapped = errors.Join(errors.New("outer"), wrapped)
	if !IsAuthentication(wrapped) {
		t.Error("a wrapped 401 accounts error is not an authentication error")
	}
}

func TestRedact(t *testing.T) {
	in := `{"access_token":"dal:SECRET1","refresh_token": "SECRET2","secret_key":"SECRET3","text":"keep"}` +
		` grant_type=refresh_token&refresh_token=SECRET4&client_id=c&client_secret=SECRET5`
	out := string(redact([]byte(in)))
	if strings.Contains(out, "SECRET") || !strings.Contains(out, "keep") || !strings.Contains(out, "client_id=c") {
		t.Errorf("redact = %s", out)
	}
}

func TestRichText(t *testing.T) {
	tests := []struct {
		name     string
		elements []RichElement
		want     string
	}{
		{"none", nil, ""},
		{"empty card", []RichElement{{}}, ""},
		{"picture only", []RichElement{{Image: &RichImage{URL: "https://cdn.example/a.png"}}}, "https://cdn.example/a.png"},
		{"card with buttons", []RichElement{{Title: "Order 1", Subtitle: " shipped ", Buttons: []RichButton{
			{Text: "Track", Type: "url", Value: "https://t.example/1"},
			{Text: "Call us", Type: "phone", Value: "+48 123"},
			{Text: "Thanks", Type: "message", Value: "thanks"},
		}}}, "Order 1\nshipped\n[Track] https://t.example/1\n[Call us] +48 123\n[Thanks]"},
		{"carousel", []RichElement{{Title: "A"}, {}, {Title: "B"}}, "A\n\nB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RichText(tt.elements); got != tt.want {
				t.Errorf("RichText = %q, want %q", got, tt.want)
			}
		})
	}
}

// A card in a shape we do not know must not make an event (and so a whole
// thread the worker reads) undecodable; it decodes as no cards.
func TestRichElementsDecodeLeniently(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
	}{
		{"cards", `{"type":"rich_message","elements":[{"title":"A","image":{"url":"u","width":10},"buttons":[{"text":"b","user_ids":["x"]}]}]}`, 1},
		{"unknown shape", `{"type":"rich_message","elements":[{"title":{"en":"A"},"image":"u"}]}`, 0},
		{"not a list", `{"type":"rich_message","elements":"cards"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var th Thread
			if err := json.Unmarshal([]byte(`{"id":"T","events":[`+tt.body+`,{"id":"e2","type":"message","text":"after"}]}`), &th); err != nil {
				t.Fatalf("thread with %s: %v", tt.name, err)
			}
			if len(th.Events) != 2 || len(th.Events[0].Elements) != tt.want || th.Events[1].Text != "after" {
				t.Errorf("decoded %+v, want %d cards and the next event intact", th.Events, tt.want)
			}
		})
	}
}
