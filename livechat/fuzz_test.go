package livechat

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Seeds are the answers the reference shows, plus bodies that must fail.
// Each Fuzz target's seeds run as ordinary tests with go test.

var malformed = []string{"", "null", "[]", "{", `{"a":`, "\x00\xff", `"str"`, "42", `{"chat_id":1}`}

func seed(f *testing.F, bodies ...string) {
	for _, b := range append(bodies, malformed...) {
		f.Add([]byte(b))
	}
}

func FuzzDecodeToken(f *testing.F) {
	seed(f,
		`{"access_token":"dal:abc","account_id":"acc","expires_in":28800,"organization_id":"org","refresh_token":"r","scope":"s","token_type":"Bearer"}`,
		`{"access_token":"dal%3Aabc","client_id":"c","entity_id":"cust","expires_in":28800,"token_type":"Bearer","organization_id":"org"}`,
		`{"access_token":"dal:abc","expires_in":-1}`,
		`{"access_token":"dal:abc","expires_in":99999999999999999}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := decodeTokenResponse(b, time.Unix(0, 0))
		if err == nil && (tok.AccessToken == "" || !tok.ExpiresAt.After(time.Unix(0, 0))) {
			t.Errorf("accepted a token without value or expiry: %+v", tok)
		}
	})
}

func FuzzDecodeOrganizationID(f *testing.F) {
	seed(f, `{"organization_id":"390e44e6-f1e6-0368-c1ff-ae1fe5fd5b0a"}`,
		`{"organization_id":"o","livechat":{"online_group_ids":[0]}}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		if org, err := decodeOrganizationID(b); err == nil && org == "" {
			t.Error("empty organization accepted")
		}
	})
}

func FuzzDecodeStartChat(f *testing.F) {
	seed(f, `{"chat_id":"PJ0MRSHTDG","thread_id":"PGDGHT5G","event_ids":["PGDGHT5G_1"]}`, `{"chat_id":"PJ0MRSHTDG","thread_id":"PGDGHT5G"}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeStartChat(b); err == nil && r.ChatID == "" {
			t.Error("empty chat id accepted")
		}
	})
}

func FuzzDecodeResumeChat(f *testing.F) {
	seed(f, `{"thread_id":"K600PKZON8","event_ids":["K600PKZON8_1"]}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeResumeChat(b); err == nil && r.ThreadID == "" {
			t.Error("empty thread id accepted")
		}
	})
}

func FuzzDecodeSendEvent(f *testing.F) {
	seed(f, `{"event_id":"K600PKZON8_3"}`, `{"event_id":""}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, err := decodeSendEvent(b); err == nil && id == "" {
			t.Error("empty event id accepted")
		}
	})
}

func FuzzDecodeEmpty(f *testing.F) {
	seed(f, `{}`, ` { } `)
	f.Fuzz(func(t *testing.T, b []byte) { _ = decodeEmpty(b) })
}

const chatSeed = `{"id":"PJ0MRSHTDG","users":[{"id":"cust","type":"customer","name":"Ana","present":true},{"id":"agent@example.com","type":"agent","name":"Agent Smith","present":true}],
"access":{"group_ids":[0]},"properties":{"routing":{"continuous":false}},
"thread":{"id":"K600PKZON8","active":true,"events":[{"id":"K600PKZON8_1","custom_id":"t-1","type":"message","text":"hi","author_id":"cust","created_at":"2019-10-11T09:41:00.877000Z","recipients":"all"}],
"queue":{"position":42,"wait_time":1337,"queued_at":"2019-12-09T12:01:18.909000Z"},"created_at":"2019-12-09T12:01:18.909000Z"}}`

func FuzzDecodeChat(f *testing.F) {
	seed(f, chatSeed, `{"id":"X","thread":{"events":[{"created_at":"yesterday"}]}}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := decodeChat(b); err == nil && c.ID == "" {
			t.Error("chat without id accepted")
		}
	})
}

func FuzzDecodeListThreads(f *testing.F) {
	seed(f, `{"threads":[`+chatSeed[strings.Index(chatSeed, `{"id":"K600PKZON8"`):len(chatSeed)-1]+`],"found_threads":1,"next_page_id":"n","previous_page_id":"p"}`,
		`{"threads":[],"found_threads":0}`)
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = decodeListThreads(b) })
}

func FuzzDecodeListChats(f *testing.F) {
	seed(f, `{"chats_summary":[{"id":"PJ0MRSHTDG","last_thread_id":"K600PKZON8","active":true,"last_event_per_type":{}}],"total_chats":1}`,
		`{"chats_info":[{"id":"PJ0MRSHTDG","last_thread_summary":{"id":"K600PKZON8","active":false}}],"total_chats":1}`,
		`{"chats_summary":[{"active":true}]}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		list, err := decodeListChats(b)
		for _, c := range list {
			if err == nil && c.ID == "" {
				t.Error("chat without id accepted")
			}
		}
	})
}

func FuzzDecodeGroupStatuses(f *testing.F) {
	seed(f, `{"groups_status":{"0":"online","19":"offline","7":"online_for_queue"}}`, `{"groups_status":{"x":"online"}}`)
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = decodeGroupStatuses(b) })
}

func FuzzDecodeWebhookID(f *testing.F) {
	seed(f, `{"id":"1188f559c4bae6c4b9a87a1b32d78202"}`)
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = decodeWebhookID(b) })
}

func FuzzDecodeWebhooks(f *testing.F) {
	seed(f, `[{"id":"1188f559c4bae6c4b9a87a1b32d78202","url":"https://example.com/livechat/webhook","description":"handoff","action":"incoming_event","secret_key":"k","owner_client_id":"c","type":"license","filters":{"author_type":"agent"},"additional_data":["chat_properties"]}]`, `[]`)
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = decodeWebhooks(b) })
}

func FuzzDecodeError(f *testing.F) {
	seed(f, `{"error":{"type":"chat_inactive","message":"Chat is inactive"}}`,
		`{"error":{"type":"misdirected_request","message":"Wrong region","data":{"region":"fra"}}}`,
		`{"oauth_exception":"invalid_grant","exception_description":"refresh token expired"}`,
		`{"error":"invalid_request","error_description":"bad"}`, `<html>502 Bad Gateway</html>`)
	f.Fuzz(func(t *testing.T, b []byte) {
		e := decodeError("send_event", 500, b, 0)
		if e == nil || e.Status != 500 || !strings.HasPrefix(e.Error(), "livechat: send_event: ") {
			t.Errorf("decodeError = %+v", e)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "1", "120", "-5", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, time.Unix(1_700_000_000, 0)); d < 0 {
			t.Errorf("negative Retry-After %v from %q", d, v)
		}
	})
}

// webhookSeeds are the sample bodies from LiveChat's SDK test data and the
// reference's documented body.
func webhookSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "webhooks", "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no webhook samples: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(f, `{"webhook_id":"1188f559c4bae6c4b9a87a1b32d78202","secret_key":"k","action":"incoming_event","organization_id":"o",
"payload":{"chat_id":"PS0X0L086G","thread_id":"PZ070E0W1B","event":{"id":"PZ070E0W1B_3","custom_id":"1dnepb4z00t","type":"message","text":"Hi, I'm Tom","author_id":"a","created_at":"2019-10-11T09:41:00.877000Z","visibility":"all"}},"additional_data":{}}`,
		`{"action":"chat_deactivated","payload":{"chat_id":"C","thread_id":"T"}}`,
		`{"action":"incoming_event","payload":[]}`, `{"action":"incoming_event","payload":{"chat_id":"C","event":{"created_at":1}}}`)
}

func FuzzParseWebhook(f *testing.F) {
	webhookSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseWebhook(b)
		if err != nil {
			return
		}
		if d.Action == "" {
			t.Error("delivery without action accepted")
		}
		if p, err := d.IncomingEvent(); err == nil && (p.ChatID == "" || p.Event.ID == "") {
			t.Errorf("incoming_event without ids accepted: %+v", p)
		}
		if p, err := d.ChatDeactivated(); err == nil && p.ChatID == "" {
			t.Errorf("chat_deactivated without chat accepted: %+v", p)
		}
		_ = d.CheckSecret("dummy_key")
	})
}

func FuzzSplitText(f *testing.F) {
	for _, s := range []string{"", "hello world", strings.Repeat("ação ", 100), strings.Repeat("字", 50), "\xff\xfe\xfd", strings.Repeat("x", 100)} {
		f.Add(s, 7)
	}
	f.Fuzz(func(t *testing.T, s string, limit int) {
		if limit > 1<<20 || limit < -1<<20 {
			return
		}
		parts := SplitText(s, limit)
		want := max(limit, utf8.UTFMax)
		if strings.Join(parts, "") != s {
			t.Fatalf("parts do not join back to the text")
		}
		for _, p := range parts {
			if len(p) > want || p == "" {
				t.Fatalf("part of %d bytes (limit %d)", len(p), want)
			}
			if utf8.ValidString(s) && !utf8.ValidString(p) {
				t.Fatalf("part %q cut a rune", p)
			}
		}
	})
}
