package livechat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event is a chat event as both directions carry it. Customers address
// events with Recipients ("all", "agents"); the agent side and webhooks
// say Visibility instead, with the same values.
type Event struct {
	ID         string    `json:"id,omitempty"`
	CustomID   string    `json:"custom_id,omitempty"`
	Type       string    `json:"type"`
	Text       string    `json:"text,omitempty"`
	AuthorID   string    `json:"author_id,omitempty"`
	Recipients string    `json:"recipients,omitempty"`
	Visibility string    `json:"visibility,omitempty"`
	CreatedAt  time.Time `json:"created_at,omitzero"`
	// Properties are namespaced ({"namespace":{"key":value}}).
	Properties map[string]any `json:"properties,omitempty"`
	// URL is the file address of a "file" event; the other file fields
	// describe it (width, height and thumbnails for images).
	URL          string `json:"url,omitempty"`
	Name         string `json:"name,omitempty"`
	ContentType  string `json:"content_type,omitempty"`
	Size         int64  `json:"size,omitempty"`
	Width        int    `json:"width,omitempty"`
	Height       int    `json:"height,omitempty"`
	ThumbnailURL string `json:"thumbnail_url,omitempty"`
	// SystemMessageType is set on "system_message" events
	// ("routing.archived_offline", "agent_joined", ...).
	SystemMessageType string `json:"system_message_type,omitempty"`
	// TemplateID and Elements make up a "rich_message" (cards, a carousel,
	// quick replies); such an event has no Text of its own.
	TemplateID string       `json:"template_id,omitempty"`
	Elements   RichElements `json:"elements,omitempty"`
	// Fields are a "filled_form"'s answers.
	Fields []FormField `json:"fields,omitempty"`
}

// FormField is one answer of a filled form (a pre-chat survey, say).
type FormField struct {
	Type  string `json:"type,omitempty"`
	Label string `json:"label,omitempty"`
	Value string `json:"value,omitempty"`
}

// RichElements are a rich message's cards. They decode leniently: the
// worker reads whole threads to find its own events, and one card in a shape
// we did not expect must not make a thread unreadable; such cards decode as
// none.
type RichElements []RichElement

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (r *RichElements) UnmarshalJSON(b []byte) error {
	var els []RichElement
	if err := json.Unmarshal(b, &els); err != nil {
		*r = nil
		return nil
	}
	*r = els
	return nil
}

// RichElement is one card of a rich message. Every part is optional.
type RichElement struct {
	Title    string       `json:"title,omitempty"`
	Subtitle string       `json:"subtitle,omitempty"`
	Image    *RichImage   `json:"image,omitempty"`
	Buttons  []RichButton `json:"buttons,omitempty"`
}

// RichImage is a card's picture.
type RichImage struct {
	URL             string `json:"url,omitempty"`
	AlternativeText string `json:"alternative_text,omitempty"`
}

// RichButton is a card's button. Value is the address of a "url" button
// and the number of a "phone" one.
type RichButton struct {
	Text       string `json:"text,omitempty"`
	Type       string `json:"type,omitempty"`
	Value      string `json:"value,omitempty"`
	PostbackID string `json:"postback_id,omitempty"`
}

// Event types the Customer Chat API accepts.
const (
	EventMessage       = "message"
	EventFile          = "file"
	EventRichMessage   = "rich_message"
	EventFilledForm    = "filled_form"
	EventSystemMessage = "system_message"
	EventCustom        = "custom"
)

// outgoing fills the defaults a customer event needs: a message to
// everyone unless the caller said otherwise.
func (e Event) outgoing() Event {
	if e.Type == "" {
		e.Type = EventMessage
	}
	if e.Recipients == "" && e.Visibility == "" {
		e.Recipients = "all"
	}
	return e
}

func outgoingEvents(evs []Event) []Event {
	if len(evs) == 0 {
		return nil
	}
	out := make([]Event, len(evs))
	for i, e := range evs {
		out[i] = e.outgoing()
	}
	return out
}

// Queue is where a thread waits for an agent.
type Queue struct {
	Position int       `json:"position"`
	WaitTime int       `json:"wait_time"` // seconds, LiveChat's estimate
	QueuedAt time.Time `json:"queued_at,omitzero"`
}

// Thread is one stretch of a chat; only a chat's last thread can be
// active.
type Thread struct {
	ID        string    `json:"id"`
	Active    bool      `json:"active"`
	Events    []Event   `json:"events"`
	Queue     *Queue    `json:"queue,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// User is a chat participant (customer or agent).
type User struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Name    string `json:"name,omitempty"`
	Email   string `json:"email,omitempty"`
	Present bool   `json:"present"`
	// Avatar and JobTitle are what the user sees of an agent.
	Avatar         string    `json:"avatar,omitempty"`
	JobTitle       string    `json:"job_title,omitempty"`
	EventsSeenUpTo time.Time `json:"events_seen_up_to,omitzero"`
}

// Chat is a chat with one of its threads, as get_chat returns it.
type Chat struct {
	ID         string
	Users      []User
	Properties map[string]map[string]any
	Thread     Thread
	Access     struct{ GroupIDs []int }
}

// ChatSummary is one entry of list_chats.
type ChatSummary struct {
	ID                  string
	LastThreadID        string
	Active              bool
	LastThreadCreatedAt time.Time
}

type access struct {
	GroupIDs []int `json:"group_ids"`
}

type wireChat struct {
	ID         string                    `json:"id"`
	Users      []User                    `json:"users"`
	Properties map[string]map[string]any `json:"properties"`
	Thread     *Thread                   `json:"thread"`
	Access     access                    `json:"access"`
}

// errMissing reports a 200 answer missing the one field that makes it useful.
func errMissing(field string) error { return fmt.Errorf("answer lacks %s", field) }

// decodeObject unmarshals a JSON object; other JSON values are refused so
// "null" or "[]" cannot pass as an empty success.
func decodeObject(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

func requireObject(body []byte) error {
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("decode answer: not a JSON object")
	}
	return nil
}

type tokenResponse struct {
	AccessToken    string `json:"access_token"`
	AccountID      string `json:"account_id"`
	EntityID       string `json:"entity_id"`
	ExpiresIn      int64  `json:"expires_in"`
	OrganizationID string `json:"organization_id"`
	TokenType      string `json:"token_type"`
	RefreshToken   string `json:"refresh_token"`
	Scope          string `json:"scope"`
}

// decodeTokenResponse reads either token answer (agent or customer).
func decodeTokenResponse(body []byte, now time.Time) (Token, error) {
	if err := requireObject(body); err != nil {
		return Token{}, err
	}
	var r tokenResponse
	if err := decodeObject(body, &r); err != nil {
		return Token{}, err
	}
	if r.AccessToken == "" {
		return Token{}, errMissing("access_token")
	}
	if r.ExpiresIn <= 0 || r.ExpiresIn > 10*365*24*3600 {
		return Token{}, fmt.Errorf("answer has expires_in %d", r.ExpiresIn)
	}
	return Token{
		AccessToken:    DecodeToken(r.AccessToken),
		ExpiresAt:      now.Add(time.Duration(r.ExpiresIn) * time.Second),
		EntityID:       r.EntityID,
		OrganizationID: r.OrganizationID,
		AccountID:      r.AccountID,
		RefreshToken:   r.RefreshToken,
		Scopes:         splitScopes(r.Scope),
	}, nil
}

// splitScopes reads a scope answer: LiveChat separates scopes with commas;
// OAuth's usual separator, a space, is taken too.
func splitScopes(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

func decodeOrganizationID(body []byte) (string, error) {
	if err := requireObject(body); err != nil {
		return "", err
	}
	var r struct {
		OrganizationID string `json:"organization_id"`
	}
	if err := decodeObject(body, &r); err != nil {
		return "", err
	}
	if r.OrganizationID == "" {
		return "", errMissing("organization_id")
	}
	return r.OrganizationID, nil
}

func decodeStartChat(body []byte) (StartChatResponse, error) {
	if err := requireObject(body); err != nil {
		return StartChatResponse{}, err
	}
	var r struct {
		ChatID   string   `json:"chat_id"`
		ThreadID string   `json:"thread_id"`
		EventIDs []string `json:"event_ids"`
	}
	if err := decodeObject(body, &r); err != nil {
		return StartChatResponse{}, err
	}
	if r.ChatID == "" {
		return StartChatResponse{}, errMissing("chat_id")
	}
	return StartChatResponse{ChatID: r.ChatID, ThreadID: r.ThreadID, EventIDs: r.EventIDs}, nil
}

func decodeResumeChat(body []byte) (ResumeChatResponse, error) {
	if err := requireObject(body); err != nil {
		return ResumeChatResponse{}, err
	}
	var r struct {
		ThreadID string   `json:"thread_id"`
		EventIDs []string `json:"event_ids"`
	}
	if err := decodeObject(body, &r); err != nil {
		return ResumeChatResponse{}, err
	}
	if r.ThreadID == "" {
		return ResumeChatResponse{}, errMissing("thread_id")
	}
	return ResumeChatResponse{ThreadID: r.ThreadID, EventIDs: r.EventIDs}, nil
}

func decodeSendEvent(body []byte) (string, error) {
	if err := requireObject(body); err != nil {
		return "", err
	}
	var r struct {
		EventID string `json:"event_id"`
	}
	if err := decodeObject(body, &r); err != nil {
		return "", err
	}
	if r.EventID == "" {
		return "", errMissing("event_id")
	}
	return r.EventID, nil
}

// decodeEmpty accepts any JSON object ({} in practice) for actions whose
// answer carries nothing.
func decodeEmpty(body []byte) error {
	if err := requireObject(body); err != nil {
		return err
	}
	var m map[string]json.RawMessage
	return decodeObject(body, &m)
}

func decodeChat(body []byte) (Chat, error) {
	if err := requireObject(body); err != nil {
		return Chat{}, err
	}
	var w wireChat
	if err := decodeObject(body, &w); err != nil {
		return Chat{}, err
	}
	if w.ID == "" {
		return Chat{}, errMissing("id")
	}
	c := Chat{ID: w.ID, Users: w.Users, Properties: w.Properties}
	if w.Thread != nil {
		c.Thread = *w.Thread
	}
	c.Access = struct{ GroupIDs []int }(w.Access)
	return c, nil
}

func decodeListThreads(body []byte) (ListThreadsResponse, error) {
	if err := requireObject(body); err != nil {
		return ListThreadsResponse{}, err
	}
	var r struct {
		Threads        []Thread `json:"threads"`
		FoundThreads   int      `json:"found_threads"`
		NextPageID     string   `json:"next_page_id"`
		PreviousPageID string   `json:"previous_page_id"`
	}
	if err := decodeObject(body, &r); err != nil {
		return ListThreadsResponse{}, err
	}
	return ListThreadsResponse(r), nil
}

type wireChatSummary struct {
	ID                  string    `json:"id"`
	LastThreadID        string    `json:"last_thread_id"`
	Active              *bool     `json:"active"`
	LastThreadCreatedAt time.Time `json:"last_thread_created_at"`
	LastThreadSummary   *struct {
		ID        string    `json:"id"`
		Active    bool      `json:"active"`
		CreatedAt time.Time `json:"created_at"`
	} `json:"last_thread_summary"`
}

// decodeListChats reads list_chats in both spellings: chats_summary (3.5,
// 3.6) and chats_info (3.7). The thread fields are taken from the flat
// names the reference shows, or from last_thread_summary when that is what
// the answer carries.
func decodeListChats(body []byte) ([]ChatSummary, error) {
	if err := requireObject(body); err != nil {
		return nil, err
	}
	var r struct {
		ChatsSummary []wireChatSummary `json:"chats_summary"`
		ChatsInfo    []wireChatSummary `json:"chats_info"`
	}
	if err := decodeObject(body, &r); err != nil {
		return nil, err
	}
	list := r.ChatsSummary
	if list == nil {
		list = r.ChatsInfo
	}
	out := make([]ChatSummary, 0, len(list))
	for _, w := range list {
		if w.ID == "" {
			return nil, errMissing("chat id")
		}
		s := ChatSummary{ID: w.ID, LastThreadID: w.LastThreadID, LastThreadCreatedAt: w.LastThreadCreatedAt}
		if w.Active != nil {
			s.Active = *w.Active
		}
		if w.LastThreadSummary != nil {
			if s.LastThreadID == "" {
				s.LastThreadID = w.LastThreadSummary.ID
			}
			if w.Active == nil {
				s.Active = w.LastThreadSummary.Active
			}
			if s.LastThreadCreatedAt.IsZero() {
				s.LastThreadCreatedAt = w.LastThreadSummary.CreatedAt
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func decodeGroupStatuses(body []byte) (map[int]string, error) {
	if err := requireObject(body); err != nil {
		return nil, err
	}
	var r struct {
		GroupsStatus map[string]string `json:"groups_status"`
	}
	if err := decodeObject(body, &r); err != nil {
		return nil, err
	}
	if r.GroupsStatus == nil {
		return nil, errMissing("groups_status")
	}
	out := make(map[int]string, len(r.GroupsStatus))
	for k, v := range r.GroupsStatus {
		id, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("groups_status has group %q: %w", k, err)
		}
		out[id] = v
	}
	return out, nil
}

func decodeWebhookID(body []byte) (string, error) {
	if err := requireObject(body); err != nil {
		return "", err
	}
	var r struct {
		ID string `json:"id"`
	}
	if err := decodeObject(body, &r); err != nil {
		return "", err
	}
	if r.ID == "" {
		return "", errMissing("id")
	}
	return r.ID, nil
}

// decodeWebhooks reads list_webhooks: a JSON array of registrations.
func decodeWebhooks(body []byte) ([]Webhook, error) {
	var ws []Webhook
	if err := json.Unmarshal(body, &ws); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if ws == nil {
		return nil, errors.New("decode answer: not a JSON array")
	}
	return ws, nil
}
