package gateway

import (
	"net/http"
	"slices"
	"strings"

	"github.com/handoff-dev/handoff"
)

type chatUser struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName"`
	Email       string `json:"email"`
	Type        string `json:"type"`
}

type chatThread struct {
	Name string `json:"name"`
}

type chatSpace struct {
	Name string `json:"name"`
	// Type is the 2019 field (DM, ROOM); SpaceType the current one
	// (DIRECT_MESSAGE, SPACE, GROUP_CHAT).
	Type                string `json:"type"`
	SpaceType           string `json:"spaceType"`
	SpaceThreadingState string `json:"spaceThreadingState"`
	Threaded            bool   `json:"threaded"`
	SingleUserBotDm     bool   `json:"singleUserBotDm"`
}

type chatMessage struct {
	Name         string      `json:"name"`
	Text         string      `json:"text"`
	ArgumentText string      `json:"argumentText"`
	Thread       *chatThread `json:"thread"`
	Sender       *chatUser   `json:"sender"`
	Space        *chatSpace  `json:"space"`
}

type chatPayload struct {
	Space   *chatSpace   `json:"space"`
	Message *chatMessage `json:"message"`
	User    *chatUser    `json:"user"`
}

// chatEvent holds both live event shapes: classic (top-level type) and
// Google Workspace add-on (everything under chat, with
// commonEventObject). Unknown fields are ignored.
type chatEvent struct {
	Type      string       `json:"type"`
	EventTime string       `json:"eventTime"`
	Space     *chatSpace   `json:"space"`
	Message   *chatMessage `json:"message"`
	User      *chatUser    `json:"user"`
	Action    *struct {
		ActionMethodName string `json:"actionMethodName"`
	} `json:"action"`
	Common *struct {
		UserLocale      string `json:"userLocale"`
		InvokedFunction string `json:"invokedFunction"`
	} `json:"common"`

	CommonEventObject *struct {
		UserLocale      string `json:"userLocale"`
		InvokedFunction string `json:"invokedFunction"`
	} `json:"commonEventObject"`
	Chat *struct {
		User                    *chatUser    `json:"user"`
		EventTime               string       `json:"eventTime"`
		MessagePayload          *chatPayload `json:"messagePayload"`
		ButtonClickedPayload    *chatPayload `json:"buttonClickedPayload"`
		AddedToSpacePayload     *chatPayload `json:"addedToSpacePayload"`
		RemovedFromSpacePayload *chatPayload `json:"removedFromSpacePayload"`
	} `json:"chat"`
}

// chatInteraction is a chatEvent of either shape, flattened.
type chatInteraction struct {
	addon     bool
	kind      string // MESSAGE, ADDED_TO_SPACE, REMOVED_FROM_SPACE, CARD_CLICKED or other
	eventTime string
	space     chatSpace
	message   chatMessage
	user      chatUser
	action    string
	locale    string
}

func decodeChat(body []byte) (chatInteraction, error) {
	var ev chatEvent
	if err := decodeJSON(body, &ev, false); err != nil {
		return chatInteraction{}, err
	}
	var in chatInteraction
	var p chatPayload
	switch {
	case ev.Chat != nil:
		in.addon = true
		in.eventTime = ev.Chat.EventTime
		if ev.CommonEventObject != nil {
			in.locale = ev.CommonEventObject.UserLocale
			in.action = ev.CommonEventObject.InvokedFunction
		}
		switch c := ev.Chat; {
		case c.MessagePayload != nil:
			in.kind, p = "MESSAGE", *c.MessagePayload
		case c.ButtonClickedPayload != nil:
			in.kind, p = "CARD_CLICKED", *c.ButtonClickedPayload
		case c.AddedToSpacePayload != nil:
			in.kind, p = "ADDED_TO_SPACE", *c.AddedToSpacePayload
		case c.RemovedFromSpacePayload != nil:
			in.kind, p = "REMOVED_FROM_SPACE", *c.RemovedFromSpacePayload
		default:
			in.kind = "OTHER"
		}
		if ev.Chat.User != nil {
			in.user = *ev.Chat.User
		}
	case ev.Type != "":
		in.kind, in.eventTime = ev.Type, ev.EventTime
		p = chatPayload{Space: ev.Space, Message: ev.Message, User: ev.User}
		if ev.Action != nil {
			in.action = ev.Action.ActionMethodName
		}
		if ev.Common != nil {
			in.locale = ev.Common.UserLocale
			if in.action == "" {
				in.action = ev.Common.InvokedFunction
			}
		}
	default:
		return in, badRequest("not a Google Chat event: neither a classic event (type) nor an add-on event (chat)")
	}
	if p.Space != nil {
		in.space = *p.Space
	} else if p.Message != nil && p.Message.Space != nil {
		in.space = *p.Message.Space
	}
	if p.Message != nil {
		in.message = *p.Message
	}
	if in.user.Name == "" {
		switch {
		case p.User != nil:
			in.user = *p.User
		case in.message.Sender != nil:
			in.user = *in.message.Sender
		}
	}
	switch in.kind {
	case "MESSAGE", "CARD_CLICKED", "ADDED_TO_SPACE", "REMOVED_FROM_SPACE":
		if in.space.Name == "" {
			return in, badRequest("space.name is missing")
		}
	}
	return in, nil
}

// threaded reports whether each thread of the space is its own
// conversation: named spaces with threads (explicitly threaded, or a SPACE
// / old ROOM that says nothing else). DMs and unthreaded or in-line
// (GROUPED_MESSAGES) spaces are one conversation per space.
func (s chatSpace) threaded() bool {
	if s.SpaceType == "DIRECT_MESSAGE" || s.Type == "DM" || s.SingleUserBotDm {
		return false
	}
	switch s.SpaceThreadingState {
	case "THREADED_MESSAGES":
		return true
	case "GROUPED_MESSAGES", "UNTHREADED_MESSAGES":
		return false
	}
	return s.Threaded || s.SpaceType == "SPACE" || (s.SpaceType == "" && s.Type == "ROOM")
}

// conversation is the space name, or the thread name in a threaded space
// (only a thread of that same space is believed).
func (in chatInteraction) conversation() string {
	if in.space.threaded() && in.message.Thread != nil {
		th := in.message.Thread.Name
		if strings.HasPrefix(th, in.space.Name+"/threads/") {
			return th
		}
	}
	return in.space.Name
}

func (g *Gateway) chatTurn(in chatInteraction) turn {
	conv := in.conversation()
	text := strings.TrimSpace(in.message.ArgumentText)
	if text == "" {
		text = strings.TrimSpace(in.message.Text)
	}
	t := turn{
		channel:      handoff.ChannelGoogleChat,
		conversation: conv,
		replyTo:      conv,
		lang:         in.locale,
		customer:     handoff.Customer{Name: clip(in.user.DisplayName, 256), Email: clip(in.user.Email, 256)},
	}
	switch in.kind {
	case "MESSAGE":
		t.text = text
		t.turnID = in.message.Name
	case "CARD_CLICKED":
		if in.message.Name != "" {
			t.turnID = "card\x00" + in.message.Name + "\x00" + in.eventTime + "\x00" + in.action
		}
		switch {
		case in.action != "" && slices.Contains(g.cfg.ChatCancelActions, in.action):
			t.cancel, t.cancelReason = true, TriggerCard
		case in.action != "" && slices.Contains(g.cfg.ChatHandoffActions, in.action):
			t.trigger = TriggerCard
		}
	}
	return t
}

func (g *Gateway) serveChat(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	in, err := decodeChat(body)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	var text string
	switch in.kind {
	case "MESSAGE", "CARD_CLICKED":
		t := g.chatTurn(in)
		if in.kind == "CARD_CLICKED" && t.trigger == "" && !t.cancel {
			break // a card of some other app feature: nothing to say
		}
		out, err := g.process(r.Context(), t)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		switch out.kind {
		case outcomeHandoff:
			text = g.reply(g.cfg.HandoffReply, t.lang)
		case outcomeForwarded:
			text = g.reply(g.cfg.AckReply, t.lang)
		case outcomeCancelled:
			text = g.reply(g.cfg.CancelReply, t.lang)
		case outcomeLimited:
			text = out.text
		default:
			text = g.reply(g.cfg.ChatBotReply, t.lang)
		}
	case "ADDED_TO_SPACE":
		text = g.reply(g.cfg.ChatBotReply, in.locale)
	case "REMOVED_FROM_SPACE":
		// The app can no longer answer in this space: end a handoff that
		// is under way so the agent is not left talking to nobody.
		conv, err := g.st.Conversation(r.Context(), in.space.Name)
		if err != nil {
			g.fail(w, r, err)
			return
		}
		if conv.Mode.WithAgent() {
			t := turn{channel: handoff.ChannelGoogleChat, conversation: in.space.Name, cancel: true, cancelReason: "removed_from_space", turnID: "removed\x00" + in.eventTime}
			if _, err := g.process(r.Context(), t); err != nil {
				g.fail(w, r, err)
				return
			}
		}
	}
	writeJSON(w, http.StatusOK, chatReply(in, text))
}

// chatReply is the synchronous answer in the shape of the event: a Chat
// Message for classic events, a hostAppDataAction for add-ons; {} says
// nothing.
func chatReply(in chatInteraction, text string) any {
	if text == "" {
		return struct{}{}
	}
	if in.addon {
		type msg struct {
			Text string `json:"text"`
		}
		type create struct {
			Message msg `json:"message"`
		}
		type data struct {
			CreateMessageAction create `json:"createMessageAction"`
		}
		type host struct {
			ChatDataAction data `json:"chatDataAction"`
		}
		return struct {
			HostAppDataAction host `json:"hostAppDataAction"`
		}{host{data{create{msg{text}}}}}
	}
	reply := struct {
		Text   string      `json:"text"`
		Thread *chatThread `json:"thread,omitempty"`
	}{Text: text}
	if in.message.Thread != nil && in.message.Thread.Name != "" {
		reply.Thread = &chatThread{Name: in.message.Thread.Name}
	}
	return reply
}
