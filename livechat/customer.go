package livechat

import (
	"context"
	"fmt"
	"maps"
	"time"
)

// StartChatRequest opens a customer's chat. A customer has at most one
// chat: later handoffs use ResumeChat.
type StartChatRequest struct {
	// GroupID routes the chat; nil leaves it to LiveChat (group 0, all
	// agents).
	GroupID *int
	// Properties are chat properties ({"namespace":{"key":value}}).
	Properties map[string]map[string]any
	// Events open the thread: the bot transcript, each with its CustomID.
	Events []Event
	// Continuous creates the chat even when no agent is online.
	Continuous bool
	// ThreadProperties default to {"routing":{"ignore_bots":true}} so
	// LiveChat's own bots stay out; a caller's map is kept and that
	// property added unless the caller set it.
	ThreadProperties map[string]map[string]any
}

// StartChatResponse says where the chat went. EventIDs are in the order of
// the request's events.
type StartChatResponse struct {
	ChatID, ThreadID string
	EventIDs         []string
}

// ResumeChatRequest opens a new thread in an existing, inactive chat.
type ResumeChatRequest struct {
	ChatID     string
	GroupID    *int
	Events     []Event
	Continuous bool
	// ThreadProperties as in StartChatRequest (added here: a resumed
	// thread is routed again, so bots must be kept out again).
	ThreadProperties map[string]map[string]any
}

// ResumeChatResponse names the new thread.
type ResumeChatResponse struct {
	ThreadID string
	EventIDs []string
}

type wireThreadIn struct {
	Events     []Event                   `json:"events,omitempty"`
	Properties map[string]map[string]any `json:"properties,omitempty"`
}

type wireChatIn struct {
	ID         string                    `json:"id,omitempty"`
	Access     *access                   `json:"access,omitempty"`
	Properties map[string]map[string]any `json:"properties,omitempty"`
	Thread     *wireThreadIn             `json:"thread,omitempty"`
}

type startChatBody struct {
	Chat       wireChatIn `json:"chat"`
	Active     bool       `json:"active"`
	Continuous bool       `json:"continuous"`
}

// threadProperties returns p with routing.ignore_bots defaulted to true,
// copying so the caller's maps are never changed.
func threadProperties(p map[string]map[string]any) map[string]map[string]any {
	out := make(map[string]map[string]any, len(p)+1)
	for k, v := range p {
		out[k] = v
	}
	routing := maps.Clone(out["routing"])
	if routing == nil {
		routing = map[string]any{}
	}
	if _, set := routing["ignore_bots"]; !set {
		routing["ignore_bots"] = true
	}
	out["routing"] = routing
	return out
}

func groupAccess(g *int) *access {
	if g == nil {
		return nil
	}
	return &access{GroupIDs: []int{*g}}
}

// StartChat starts the customer's chat with the bot transcript as its
// opening events. With Continuous false and nobody online it fails with
// groups_offline / group_offline.
func (c *Client) StartChat(ctx context.Context, customerToken string, req StartChatRequest) (StartChatResponse, error) {
	body := startChatBody{
		Chat: wireChatIn{
			Access:     groupAccess(req.GroupID),
			Properties: req.Properties,
			Thread:     &wireThreadIn{Events: outgoingEvents(req.Events), Properties: threadProperties(req.ThreadProperties)},
		},
		Active:     true,
		Continuous: req.Continuous,
	}
	var out StartChatResponse
	err := c.call(ctx, "customer", "start_chat", customerToken, body, func(b []byte) (err error) {
		out, err = decodeStartChat(b)
		return err
	})
	return out, err
}

// ResumeChat opens a new thread in the chat; use it after send_event
// answered chat_inactive.
func (c *Client) ResumeChat(ctx context.Context, customerToken string, req ResumeChatRequest) (ResumeChatResponse, error) {
	if req.ChatID == "" {
		return ResumeChatResponse{}, fmt.Errorf("livechat: resume_chat: empty chat id")
	}
	body := startChatBody{
		Chat: wireChatIn{
			ID:     req.ChatID,
			Access: groupAccess(req.GroupID),
			Thread: &wireThreadIn{Events: outgoingEvents(req.Events), Properties: threadProperties(req.ThreadProperties)},
		},
		Active:     true,
		Continuous: req.Continuous,
	}
	var out ResumeChatResponse
	err := c.call(ctx, "customer", "resume_chat", customerToken, body, func(b []byte) (err error) {
		out, err = decodeResumeChat(b)
		return err
	})
	return out, err
}

type sendEventBody struct {
	ChatID             string `json:"chat_id"`
	Event              Event  `json:"event"`
	AttachToLastThread bool   `json:"attach_to_last_thread"`
}

// SendEvent posts ev (a message to everyone unless set otherwise) to the
// chat's active thread. Give ev a CustomID: after an error for which
// IsUncertain holds, FindEvent with that ID tells whether it arrived.
// Text longer than MaxTextBytes must be split by the caller (SplitText) so
// each part keeps its own CustomID.
func (c *Client) SendEvent(ctx context.Context, customerToken, chatID string, ev Event, attachToLastThread bool) (string, error) {
	if len(ev.Text) > MaxTextBytes {
		return "", fmt.Errorf("livechat: send_event: text is %d bytes, over %d: split it with SplitText", len(ev.Text), MaxTextBytes)
	}
	var id string
	err := c.call(ctx, "customer", "send_event", customerToken,
		sendEventBody{ChatID: chatID, Event: ev.outgoing(), AttachToLastThread: attachToLastThread},
		func(b []byte) (err error) {
			id, err = decodeSendEvent(b)
			return err
		})
	return id, err
}

// DeactivateChat closes the chat's active thread (the customer leaves).
func (c *Client) DeactivateChat(ctx context.Context, customerToken, chatID string) error {
	return c.call(ctx, "customer", "deactivate_chat", customerToken, map[string]string{"id": chatID}, decodeEmpty)
}

type getChatBody struct {
	ChatID   string `json:"chat_id"`
	ThreadID string `json:"thread_id,omitempty"`
}

// GetChat returns the chat with one thread: threadID, or the latest when
// empty. A queued thread carries Queue.
func (c *Client) GetChat(ctx context.Context, customerToken, chatID, threadID string) (Chat, error) {
	var out Chat
	err := c.call(ctx, "customer", "get_chat", customerToken, getChatBody{ChatID: chatID, ThreadID: threadID},
		func(b []byte) (err error) {
			out, err = decodeChat(b)
			return err
		})
	return out, err
}

// ListThreadsRequest pages through a chat's threads.
type ListThreadsRequest struct {
	ChatID         string
	SortOrder      string // "desc" (LiveChat's default) or "asc"
	Limit          int    // at most 100
	PageID         string
	MinEventsCount int
}

// ListThreadsResponse is one page of threads.
type ListThreadsResponse struct {
	Threads                    []Thread
	FoundThreads               int
	NextPageID, PreviousPageID string
}

type listThreadsBody struct {
	ChatID         string `json:"chat_id"`
	SortOrder      string `json:"sort_order,omitempty"`
	Limit          int    `json:"limit,omitempty"`
	PageID         string `json:"page_id,omitempty"`
	MinEventsCount int    `json:"min_events_count,omitempty"`
}

// ListThreads returns a page of the chat's threads with their events.
func (c *Client) ListThreads(ctx context.Context, customerToken string, req ListThreadsRequest) (ListThreadsResponse, error) {
	var out ListThreadsResponse
	err := c.call(ctx, "customer", "list_threads", customerToken, listThreadsBody(req), func(b []byte) (err error) {
		out, err = decodeListThreads(b)
		return err
	})
	return out, err
}

// ListChats returns the customer's chats, newest first (a customer has at
// most one per license). It answers "did my uncertain start_chat go
// through?".
func (c *Client) ListChats(ctx context.Context, customerToken string, limit int) ([]ChatSummary, error) {
	var out []ChatSummary
	err := c.call(ctx, "customer", "list_chats", customerToken, map[string]int{"limit": limit}, func(b []byte) (err error) {
		out, err = decodeListChats(b)
		return err
	})
	return out, err
}

// findThreads is how many of the newest threads FindEvent scans beyond the
// latest: an uncertain send is reconciled right away, so it can only have
// landed in the thread that was active then, which at most a resume or two
// has pushed back since.
const findThreads = 3

// FindEvent looks for the event with customID in the chat's newest threads
// and reports whether it exists. LiveChat stores custom_id but offers no
// lookup, so this is a scan: first the latest thread (get_chat), then the
// few before it (list_threads).
func (c *Client) FindEvent(ctx context.Context, customerToken, chatID, customID string) (Event, bool, error) {
	if customID == "" {
		return Event{}, false, fmt.Errorf("livechat: find_event: empty custom id")
	}
	chat, err := c.GetChat(ctx, customerToken, chatID, "")
	if err != nil {
		return Event{}, false, err
	}
	if ev, ok := findCustomID(chat.Thread.Events, customID); ok {
		return ev, true, nil
	}
	page, err := c.ListThreads(ctx, customerToken, ListThreadsRequest{ChatID: chatID, SortOrder: "desc", Limit: findThreads, MinEventsCount: 1})
	if err != nil {
		return Event{}, false, err
	}
	for _, t := range page.Threads {
		if t.ID == chat.Thread.ID {
			continue
		}
		if ev, ok := findCustomID(t.Events, customID); ok {
			return ev, true, nil
		}
	}
	return Event{}, false, nil
}

func findCustomID(evs []Event, customID string) (Event, bool) {
	for _, ev := range evs {
		if ev.CustomID == customID {
			return ev, true
		}
	}
	return Event{}, false
}

// CustomerUpdate is what the agent sees about the customer. Empty fields
// are left unchanged.
type CustomerUpdate struct {
	Name, Email, Avatar string
	SessionFields       []map[string]string
}

type customerUpdateBody struct {
	Name          string              `json:"name,omitempty"`
	Email         string              `json:"email,omitempty"`
	Avatar        string              `json:"avatar,omitempty"`
	SessionFields []map[string]string `json:"session_fields,omitempty"`
}

// UpdateCustomer sets the customer's name, email, avatar and session
// fields.
func (c *Client) UpdateCustomer(ctx context.Context, customerToken string, u CustomerUpdate) error {
	return c.call(ctx, "customer", "update_customer", customerToken, customerUpdateBody(u), decodeEmpty)
}

// SetCustomerSessionFields replaces the customer's session fields; each
// map holds one key and value.
func (c *Client) SetCustomerSessionFields(ctx context.Context, customerToken string, fields []map[string]string) error {
	if fields == nil {
		fields = []map[string]string{}
	}
	return c.call(ctx, "customer", "set_customer_session_fields", customerToken,
		map[string][]map[string]string{"session_fields": fields}, decodeEmpty)
}

// SendSneakPeek shows the agent what the customer is typing.
func (c *Client) SendSneakPeek(ctx context.Context, customerToken, chatID, text string) error {
	return c.call(ctx, "customer", "send_sneak_peek", customerToken,
		map[string]string{"chat_id": chatID, "sneak_peek_text": text}, decodeEmpty)
}

// Group statuses list_group_statuses answers.
const (
	GroupOnline         = "online"
	GroupOnlineForQueue = "online_for_queue" // agents online but busy: chats queue
	GroupOffline        = "offline"
)

// ListGroupStatuses reports whether agents are available per group; nil
// or empty groupIDs asks for all groups.
func (c *Client) ListGroupStatuses(ctx context.Context, customerToken string, groupIDs []int) (map[int]string, error) {
	var body any = map[string]bool{"all": true}
	if len(groupIDs) > 0 {
		body = map[string][]int{"group_ids": groupIDs}
	}
	var out map[int]string
	err := c.call(ctx, "customer", "list_group_statuses", customerToken, body, func(b []byte) (err error) {
		out, err = decodeGroupStatuses(b)
		return err
	})
	return out, err
}

// MarkEventsAsSeen records that the customer has read the chat up to
// seenUpTo (the agent's app shows it as read).
func (c *Client) MarkEventsAsSeen(ctx context.Context, customerToken, chatID string, seenUpTo time.Time) error {
	return c.call(ctx, "customer", "mark_events_as_seen", customerToken,
		map[string]string{"chat_id": chatID, "seen_up_to": seenUpTo.UTC().Format(time.RFC3339Nano)}, decodeEmpty)
}

type postbackBody struct {
	ChatID   string `json:"chat_id"`
	ThreadID string `json:"thread_id"`
	EventID  string `json:"event_id"`
	Postback struct {
		ID      string `json:"id"`
		Toggled bool   `json:"toggled"`
	} `json:"postback"`
}

// SendRichMessagePostback tells the agent the customer pressed the button
// postbackID of the rich message eventID in threadID.
func (c *Client) SendRichMessagePostback(ctx context.Context, customerToken, chatID, threadID, eventID, postbackID string, toggled bool) error {
	b := postbackBody{ChatID: chatID, ThreadID: threadID, EventID: eventID}
	b.Postback.ID, b.Postback.Toggled = postbackID, toggled
	return c.call(ctx, "customer", "send_rich_message_postback", customerToken, b, decodeEmpty)
}

// Customer is the customer as get_customer shows it.
type Customer struct {
	ID             string              `json:"id"`
	Type           string              `json:"type"`
	Name           string              `json:"name,omitempty"`
	Email          string              `json:"email,omitempty"`
	Avatar         string              `json:"avatar,omitempty"`
	SessionFields  []map[string]string `json:"session_fields,omitempty"`
	EmailVerified  bool                `json:"email_verified"`
	Present        bool                `json:"present"`
	EventsSeenUpTo time.Time           `json:"events_seen_up_to,omitzero"`
}

// GetCustomer returns the customer the token belongs to.
func (c *Client) GetCustomer(ctx context.Context, customerToken string) (Customer, error) {
	var out Customer
	err := c.call(ctx, "customer", "get_customer", customerToken, struct{}{}, func(b []byte) error {
		if err := requireObject(b); err != nil {
			return err
		}
		if err := decodeObject(b, &out); err != nil {
			return err
		}
		if out.ID == "" {
			return errMissing("id")
		}
		return nil
	})
	return out, err
}
