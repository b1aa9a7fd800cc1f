package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/handoff-dev/handoff"
)

// Conversation IDs are shared by every surface: the store and the streams
// know a conversation only by its ID. So each surface may only name IDs of
// its own shape, and no surface can reach another's conversations:
//
//	google-chat    spaces/...                       (a space or thread name)
//	dialogflow-cx  projects/.../agents/.../sessions/...
//	dialogflow-es  any other projects/...           (an ES session path)
//	rest           anything else
//
// Dialogflow and Chat name their own sessions and spaces, which always
// have those shapes; a body that names another shape is refused. A REST
// API key reaches the rest shape only, unless it is bound to other
// channels, and may be bound to an ID prefix.

// channelOf is the channel whose conversation the ID names.
func channelOf(id string) handoff.Channel {
	switch {
	case strings.HasPrefix(id, "spaces/"):
		return handoff.ChannelGoogleChat
	case strings.HasPrefix(id, "projects/") && strings.Contains(id, "/agents/"):
		return handoff.ChannelDialogflowCX
	case strings.HasPrefix(id, "projects/"):
		return handoff.ChannelDialogflowES
	}
	return handoff.ChannelREST
}

// checkChannel refuses a turn whose conversation ID is not of its
// surface's shape (a Dialogflow session "spaces/AAA" names a Chat space).
func checkChannel(t turn) error {
	if got := channelOf(t.conversation); got != t.channel {
		return badRequest("conversation %q is not a %s conversation name", clip(t.conversation, 64), t.channel)
	}
	return nil
}

// apiKey is one entry of --api-keys: the secret, and what it may address.
type apiKey struct {
	secret   string
	prefix   string
	channels []handoff.Channel
}

// defaultScope is what a key without options, or any caller in insecure
// mode, may address: REST conversations only.
var defaultScope = apiKey{channels: []handoff.Channel{handoff.ChannelREST}}

// parseAPIKey reads "KEY", or "KEY;prefix=P", "KEY;channels=rest|google-chat",
// or both options.
func parseAPIKey(entry string) (apiKey, error) {
	parts := strings.Split(entry, ";")
	k := defaultScope
	k.secret = strings.TrimSpace(parts[0])
	if k.secret == "" {
		return k, errors.New("an API key is empty")
	}
	for _, opt := range parts[1:] {
		name, val, _ := strings.Cut(strings.TrimSpace(opt), "=")
		switch name {
		case "prefix":
			k.prefix = val
		case "channels":
			k.channels = nil
			for _, c := range strings.Split(val, "|") {
				ch := handoff.Channel(strings.TrimSpace(c))
				switch ch {
				case handoff.ChannelREST, handoff.ChannelDialogflowES, handoff.ChannelDialogflowCX, handoff.ChannelGoogleChat:
					k.channels = append(k.channels, ch)
				default:
					return k, fmt.Errorf("API key option channels: unknown channel %q (want rest, dialogflow-es, dialogflow-cx, google-chat)", c)
				}
			}
		default:
			return k, fmt.Errorf("API key option %q: want prefix=... or channels=...", name)
		}
	}
	return k, nil
}

// allows reports whether the key may address the conversation.
func (k apiKey) allows(id string) bool {
	return slices.Contains(k.channels, channelOf(id)) && strings.HasPrefix(id, k.prefix)
}

// scopeOf is the scope of the request's API key (defaultScope when none
// matches: insecure mode).
func (g *Gateway) scopeOf(r *http.Request) apiKey {
	tok, _ := bearer(r)
	scope := defaultScope
	for _, k := range g.keys { // compare with every key: no early exit
		if secretEqual(tok, k.secret) {
			scope = k
		}
	}
	return scope
}

// scopeAllows reports whether the request may address the conversation:
// its API key's scope allows it, or it carries that conversation's own
// stream token (which names exactly one conversation).
func (g *Gateway) scopeAllows(r *http.Request, id string) bool {
	tok, ok := bearer(r)
	if !ok {
		tok = r.URL.Query().Get("token")
	}
	if strings.HasPrefix(tok, "st1.") {
		want := g.StreamToken(id)
		return want != "" && secretEqual(tok, want)
	}
	return g.scopeOf(r).allows(id)
}

// reasonForbidden is the answer to a REST call for a conversation outside
// its key's scope. It says nothing of whether the conversation exists.
const reasonForbidden = "this API key may not address this conversation"
