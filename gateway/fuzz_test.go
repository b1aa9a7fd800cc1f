package gateway

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzGateway has the default rules but no publisher or store: the fuzz
// targets exercise decoding, rule evaluation and reply building, which
// need neither.
func fuzzGateway() *Gateway {
	cfg := DefaultConfig()
	cfg.ESHandoffIntents = []string{"live-agent"}
	cfg.ESCancelIntents = []string{"back-to-bot"}
	return &Gateway{cfg: cfg, handoff: newPhraseSet(cfg.HandoffPhrases, true), cancel: newPhraseSet(cfg.CancelPhrases, false)}
}

func addSeeds(f *testing.F, dir string, extra ...string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

// checkTurn asserts what any decoded turn must satisfy.
func checkTurn(t *testing.T, g *Gateway, tr turn) {
	t.Helper()
	if tr.conversation == "" {
		t.Fatal("decoded a turn without conversation")
	}
	_, _ = g.handoff.match(tr.lang, tr.text)
	_, _ = g.cancel.match(tr.lang, tr.text)
	_ = checkConversationID(tr.conversation)
	_ = tr.eventID()
	for _, e := range tr.entries(fixedNow) {
		if !e.Author.Valid() {
			t.Fatalf("bad author %q", e.Author)
		}
	}
}

func FuzzDecodeES(f *testing.F) {
	addSeeds(f, "es", esHandoff, esTurnBody("r", "agent", "pt-BR"), `{"session":"s","queryResult":{"parameters":{"name":{"name":1}}}}`, `{}`, `null`, `[]`)
	g := fuzzGateway()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeES(body)
		if err != nil {
			return
		}
		tr := g.esTurn(req)
		checkTurn(t, g, tr)
		for _, k := range []outcomeKind{outcomeBot, outcomeHandoff, outcomeForwarded, outcomeCancelled} {
			if _, err := json.Marshal(g.esReply(req, tr, outcome{kind: k})); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzDecodeCX(f *testing.F) {
	addSeeds(f, "cx", cxHandoff, cxTurnBody("d", "human", "live-agent-cancel"), `{"sessionInfo":{"session":"s"},"messages":[{"liveAgentHandoff":{"metadata":{"reason":{"x":1}}}},null]}`, `{}`)
	g := fuzzGateway()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeCX(body)
		if err != nil {
			return
		}
		tr := g.cxTurn(req)
		checkTurn(t, g, tr)
		if tr.trigger == TriggerLiveAgentHandoff && !utf8.ValidString(tr.reason) && utf8.ValidString(string(body)) {
			t.Fatalf("reason %q", tr.reason)
		}
		for _, k := range []outcomeKind{outcomeBot, outcomeHandoff, outcomeForwarded, outcomeCancelled} {
			if _, err := json.Marshal(g.cxReply(tr, outcome{kind: k})); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzDecodeChat(f *testing.F) {
	addSeeds(f, "chat-classic", chatDM, chatCard)
	addSeeds(f, "chat-addon", `{"chat":{"messagePayload":{"message":{"space":{"name":"spaces/x"},"thread":{"name":"spaces/y/threads/z"}}}}}`,
		`{"chat":{}}`, `{"type":"CARD_CLICKED","space":{"name":"spaces/a","spaceThreadingState":"THREADED_MESSAGES"},"message":{"thread":{"name":"spaces/a/threads/b"}}}`)
	g := fuzzGateway()
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := decodeChat(body)
		if err != nil {
			return
		}
		if in.kind == "MESSAGE" || in.kind == "CARD_CLICKED" {
			tr := g.chatTurn(in)
			checkTurn(t, g, tr)
			if tr.conversation != in.space.Name && !strings.HasPrefix(tr.conversation, in.space.Name+"/threads/") {
				t.Fatalf("conversation %q outside space %q", tr.conversation, in.space.Name)
			}
		}
		if _, err := json.Marshal(chatReply(in, "x")); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzPhraseMatch(f *testing.F) {
	for _, s := range []string{"talk to an agent", "Falar com um ATENDENTE!", "agents of shield", "ﬁ ǅ İ", "\xff\xfe", "e\u0301", ""} {
		f.Add(s, "pt-BR")
	}
	g := fuzzGateway()
	f.Fuzz(func(t *testing.T, text, lang string) {
		n := normalize(text)
		if normalize(n) != n {
			t.Fatalf("normalize not idempotent: %q -> %q -> %q", text, n, normalize(n))
		}
		if strings.HasPrefix(n, " ") || strings.HasSuffix(n, " ") || strings.Contains(n, "  ") {
			t.Fatalf("normalize(%q) = %q has stray spaces", text, n)
		}
		_, _ = g.handoff.match(lang, text)
		_, _ = g.cancel.match(lang, text)
	})
}
