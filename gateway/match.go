package gateway

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalize folds text for phrase matching: accents removed (NFD, then
// combining marks dropped), lower case, and every run of characters that is
// not a letter or digit turned into one space. "Falar com um Atendente!"
// becomes "falar com um atendente", so configured phrases need no
// punctuation, case or accent variants.
func normalize(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := true // drop leading separators
	for _, r := range norm.NFD.String(s) {
		switch {
		case unicode.Is(unicode.Mn, r):
			continue
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToLower(r))
			space = false
		default:
			if !space {
				b.WriteByte(' ')
				space = true
			}
		}
	}
	return strings.TrimSuffix(b.String(), " ")
}

// phraseSet matches user text against configured phrases, per language.
//
// Matching policy: text and phrases are normalised (see normalize) and
// compared as sequences of whole words. With contains=true a phrase matches
// when it appears anywhere in the text as whole words: "I want to talk to an
// agent please" matches "talk to an agent" and "agent", but "agents of
// shield" and "reagent" do not match "agent". With contains=false the whole
// utterance must equal a phrase ("Cancel!" matches "cancel", "cancel my
// order" does not). Handoff phrases use contains (a missed request for a
// person is worse than a rare spurious handoff); cancel phrases use the
// whole utterance, because while an agent owns the chat a user saying
// "cancel my subscription" is talking to the agent, not leaving.
type phraseSet struct {
	contains bool
	byLang   map[string][]string // normalised phrases; key "" is the fallback
}

func newPhraseSet(phrases map[string][]string, contains bool) phraseSet {
	ps := phraseSet{contains: contains, byLang: map[string][]string{}}
	for lang, list := range phrases {
		key := strings.ToLower(lang)
		for _, p := range list {
			if n := normalize(p); n != "" {
				ps.byLang[key] = append(ps.byLang[key], n)
			}
		}
	}
	return ps
}

// forLang returns the phrases of a language code such as "pt-BR": the exact
// code, else its base language ("pt"), else the fallback list.
func (ps phraseSet) forLang(lang string) []string {
	return lookupLang(ps.byLang, lang)
}

// match reports the first phrase of the language that text matches.
func (ps phraseSet) match(lang, text string) (string, bool) {
	t := normalize(text)
	if t == "" {
		return "", false
	}
	padded := " " + t + " "
	for _, p := range ps.forLang(lang) {
		if ps.contains && strings.Contains(padded, " "+p+" ") || !ps.contains && t == p {
			return p, true
		}
	}
	return "", false
}

// lookupLang finds a per-language setting: the exact (lower-cased) code,
// then the base language before '-' or '_', then the "" fallback.
func lookupLang[V any](m map[string]V, lang string) V {
	lang = strings.ToLower(lang)
	if v, ok := m[lang]; ok {
		return v
	}
	if i := strings.IndexAny(lang, "-_"); i > 0 {
		if v, ok := m[lang[:i]]; ok {
			return v
		}
	}
	return m[""]
}

// lowerKeys copies a per-language map with its keys lower-cased, so
// configuration may say "pt-BR" and Dialogflow "pt-br".
func lowerKeys[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}
