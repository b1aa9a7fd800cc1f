package livechat

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxTextBytes is the largest message text LiveChat accepts.
const MaxTextBytes = 16 * 1024

// SplitText cuts text into parts of at most max bytes, never inside a
// UTF-8 sequence, preferring to cut after whitespace so words stay whole.
// Whitespace at a cut stays with the part before it, so joining the parts
// gives text back exactly. Empty text gives no parts; max below 4 is raised
// to 4 so every rune fits.
func SplitText(text string, max int) []string {
	if max < utf8.UTFMax {
		max = utf8.UTFMax
	}
	var parts []string
	for len(text) > max {
		cut := max
		// Step back to a rune boundary.
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		if cut == 0 {
			// Not UTF-8 at all: bytes are all that can be kept intact.
			cut = max
		}
		// Prefer the last whitespace in the second half of the window,
		// so a long word does not produce tiny parts.
		for i := cut; i > max/2; {
			r, size := utf8.DecodeLastRuneInString(text[:i])
			if unicode.IsSpace(r) {
				cut = i
				break
			}
			i -= size
		}
		parts = append(parts, text[:cut])
		text = text[cut:]
	}
	if text != "" {
		parts = append(parts, text)
	}
	return parts
}

// RichText renders a rich message as plain text for surfaces that cannot
// show cards: each card's title, subtitle and picture address on their own
// lines, then its buttons, with the address or number of a url or phone
// button, since that is what the agent meant the user to have. Cards are
// separated by a blank line; an empty card adds nothing.
func RichText(elements []RichElement) string {
	var cards []string
	for _, el := range elements {
		var lines []string
		add := func(s string) {
			if s = strings.TrimSpace(s); s != "" {
				lines = append(lines, s)
			}
		}
		add(el.Title)
		add(el.Subtitle)
		if el.Image != nil {
			add(el.Image.URL)
		}
		for _, b := range el.Buttons {
			switch {
			case (b.Type == "url" || b.Type == "phone") && b.Value != "" && b.Text != "":
				add("[" + b.Text + "] " + b.Value)
			case b.Text != "":
				add("[" + b.Text + "]")
			default:
				add(b.Value)
			}
		}
		if len(lines) > 0 {
			cards = append(cards, strings.Join(lines, "\n"))
		}
	}
	return strings.Join(cards, "\n\n")
}

// AgentText is what the user is shown of an agent's event: a message's
// text, a rich message's cards as words and links, a file's caption and
// address. Other types (system messages, forms) are routing status, not
// words from the agent, and give "".
func AgentText(ev Event) string {
	var text string
	switch ev.Type {
	case EventMessage:
		text = ev.Text
	case EventRichMessage:
		text = ev.Text + "\n" + RichText(ev.Elements)
	case EventFile:
		text = ev.Text + " " + ev.URL
	}
	return strings.TrimSpace(text)
}
