package stream_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/stream"
)

var hostileIDs = []string{
	"projects/acme-bot/agent/sessions/5f1c-9a",
	"projects/acme/locations/global/agents/a1/sessions/s-77",
	"spaces/AAAAx/threads/t1",
	"a.b", "a_2Eb", "a b", "a\tb", "*", ">", "a.*.>", "..", "_", "__", "_5F",
	"ünïcødé/会話", "emoji 🙂", "$JS.API", "\x00", "\xff\xfe", "-",
	strings.Repeat("/", 300),
}

func validToken(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func TestTokenHostileIDs(t *testing.T) {
	seen := map[string]string{}
	for _, id := range hostileIDs {
		tok := stream.Token(id)
		if !validToken(tok) {
			t.Errorf("Token(%q) = %q: not a valid subject token", id, tok)
		}
		if other, dup := seen[tok]; dup {
			t.Errorf("Token(%q) and Token(%q) are both %q", id, other, tok)
		}
		seen[tok] = id
		back, err := stream.ConversationID(tok)
		if err != nil || back != id {
			t.Errorf("ConversationID(Token(%q)) = %q, %v", id, back, err)
		}
		subj := stream.InSubject(id)
		if strings.Count(subj, ".") != 2 {
			t.Errorf("InSubject(%q) = %q: the ID leaked extra tokens", id, subj)
		}
		conv, err := stream.ConversationOf(subj)
		if err != nil || conv != id {
			t.Errorf("ConversationOf(%q) = %q, %v", subj, conv, err)
		}
	}
}

func TestTokenKeepsReadableIDsReadable(t *testing.T) {
	if got := stream.Token("projects/acme/agent/sessions/s-1"); got != "projects_2Facme_2Fagent_2Fsessions_2Fs-1" {
		t.Errorf("Token = %q", got)
	}
}

func TestFeedSubjectAndRoutes(t *testing.T) {
	conv := "projects/acme/agent/sessions/s-1"
	if got := stream.FeedSubject(conv); got != "handoff.feed.projects_2Facme_2Fagent_2Fsessions_2Fs-1" {
		t.Errorf("FeedSubject = %q", got)
	}
	if back, err := stream.ConversationOf(stream.FeedSubject(conv)); err != nil || back != conv {
		t.Errorf("ConversationOf(feed subject) = %q, %v", back, err)
	}
	for _, typ := range handoff.EventTypes {
		subj, name := stream.Route(typ, conv)
		want := stream.InStream
		if typ.Reverse() {
			want = stream.OutStream
		}
		if name != want || (want == stream.OutStream) != strings.HasPrefix(subj, stream.OutPrefix) {
			t.Errorf("Route(%s) = %s on %s, want stream %s", typ, subj, name, want)
		}
	}
}

func TestConversationIDRejectsForeignTokens(t *testing.T) {
	for _, tok := range []string{"", "a.b", "_", "_4", "_zz", "a*", "_2f"} {
		if _, err := stream.ConversationID(tok); err == nil {
			t.Errorf("ConversationID(%q) accepted a token Token cannot produce", tok)
		}
	}
}

// FuzzToken checks the mapping's properties on arbitrary IDs: every token is
// valid, and the mapping is reversible, hence no two IDs share a subject.
func FuzzToken(f *testing.F) {
	for _, id := range hostileIDs {
		f.Add(id, id+"x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if a == "" {
			return
		}
		ta := stream.Token(a)
		if !validToken(ta) {
			t.Fatalf("Token(%q) = %q is not a valid token", a, ta)
		}
		back, err := stream.ConversationID(ta)
		if err != nil || back != a {
			t.Fatalf("round trip of %q gave %q, %v", a, back, err)
		}
		if b != "" && a != b && ta == stream.Token(b) {
			t.Fatalf("%q and %q map to one token %q", a, b, ta)
		}
		if !utf8.ValidString(ta) {
			t.Fatalf("token %q is not UTF-8", ta)
		}
	})
}
