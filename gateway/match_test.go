package gateway

import "testing"

func TestPhraseMatching(t *testing.T) {
	handoffSet := newPhraseSet(map[string][]string{
		"":   {"agent", "human", "talk to an agent"},
		"pt": {"atendente", "falar com um humano"},
	}, true)
	cancelSet := newPhraseSet(map[string][]string{"": {"back to bot", "cancel"}, "pt-BR": {"voltar ao robô"}}, false)
	for _, tc := range []struct {
		set   phraseSet
		lang  string
		text  string
		match bool
	}{
		{handoffSet, "en", "I want to talk to an agent, please", true},
		{handoffSet, "en", "AGENT!!", true},
		{handoffSet, "en-US", "are you a human?", true},
		{handoffSet, "en", "agents of shield", false},
		{handoffSet, "en", "reagent", false},
		{handoffSet, "en", "humanity", false},
		{handoffSet, "pt-BR", "Quero um ATENDENTE", true},
		{handoffSet, "pt-BR", "quero falar com um humano", true},
		{handoffSet, "pt-BR", "quero falar com um agent", false}, // pt has its own list
		{handoffSet, "pt", "Atêndente", true},                    // accents ignored both ways
		{handoffSet, "fr", "un agent svp", true},                 // fallback list
		{handoffSet, "en", "", false},
		{cancelSet, "en", "Cancel.", true},
		{cancelSet, "en", "  back   to BOT ", true},
		{cancelSet, "en", "cancel my subscription", false},
		{cancelSet, "pt-br", "Voltar ao robo", true},
		{cancelSet, "pt-PT", "voltar ao robo", false}, // pt-BR only; pt-PT falls back to ""
	} {
		if _, got := tc.set.match(tc.lang, tc.text); got != tc.match {
			t.Errorf("match(%q, %q) = %v, want %v", tc.lang, tc.text, got, tc.match)
		}
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"Falar com um Atendente!": "falar com um atendente",
		"  São   Paulo—já ":       "sao paulo ja",
		"e\u0301":                 "e",
		"A1-b2":                   "a1 b2",
		"!!!":                     "",
	} {
		if got := normalize(in); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
}
