package livechatsim

import (
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"time"
)

// CustomerView is a customer as the control API shows it.
type CustomerView struct {
	ID            string              `json:"id"`
	Name          string              `json:"name,omitempty"`
	Email         string              `json:"email,omitempty"`
	Avatar        string              `json:"avatar,omitempty"`
	SessionFields []map[string]string `json:"session_fields,omitempty"`
	// EventsSeenUpTo is what mark_events_as_seen last recorded.
	EventsSeenUpTo time.Time `json:"events_seen_up_to,omitzero"`
}

type customerView = CustomerView

// EventView is one event of a chat, in the order it was filed.
type EventView struct {
	ID         string    `json:"id"`
	ThreadID   string    `json:"thread_id"`
	CustomID   string    `json:"custom_id,omitempty"`
	Type       string    `json:"type"`
	Text       string    `json:"text,omitempty"`
	AuthorID   string    `json:"author_id"`
	Recipients string    `json:"recipients,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// ChatView is a chat with its customer and every event across threads.
type ChatView struct {
	ID         string                    `json:"id"`
	Customer   CustomerView              `json:"customer"`
	Active     bool                      `json:"active"`
	GroupIDs   []int                     `json:"group_ids"`
	Properties map[string]map[string]any `json:"properties,omitempty"`
	ThreadIDs  []string                  `json:"thread_ids"`
	Events     []EventView               `json:"events"`
	CreatedAt  time.Time                 `json:"created_at"`
}

func (s *Sim) customerView(id string) CustomerView {
	cu, ok := s.customers.get(id)
	if !ok {
		return CustomerView{ID: id}
	}
	cu.mu.Lock()
	defer cu.mu.Unlock()
	return CustomerView{ID: cu.id, Name: cu.name, Email: cu.email, Avatar: cu.avatar,
		SessionFields: slices.Clone(cu.sessionFields), EventsSeenUpTo: cu.seenUpTo}
}

// Chats returns every chat, oldest first.
func (s *Sim) Chats() []ChatView {
	chats := s.chats.values()
	slices.SortFunc(chats, func(a, b *chat) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]ChatView, 0, len(chats))
	for _, ch := range chats {
		v := ChatView{ID: ch.id, Customer: s.customerView(ch.customerID), CreatedAt: ch.createdAt, Events: []EventView{}}
		ch.mu.Lock()
		v.Active = ch.active()
		v.GroupIDs = slices.Clone(ch.groupIDs)
		v.Properties = ch.props
		for _, t := range ch.threads {
			v.ThreadIDs = append(v.ThreadIDs, t.id)
			for _, e := range t.events {
				v.Events = append(v.Events, EventView{ID: e.ID, ThreadID: t.id, CustomID: e.CustomID, Type: e.Type,
					Text: e.Text, AuthorID: e.AuthorID, Recipients: e.Recipients, CreatedAt: e.CreatedAt})
			}
		}
		ch.mu.Unlock()
		out = append(out, v)
	}
	return out
}

// ErrNoChat and ErrChatInactive are what AgentMessage and CloseChat return
// for a chat that does not exist or has no active thread.
var (
	ErrNoChat       = errors.New("livechatsim: no such chat")
	ErrChatInactive = errors.New("livechatsim: chat is inactive")
)

// AgentMessage has the simulated agent write text to everyone in the
// chat's active thread, firing incoming_event webhooks.
func (s *Sim) AgentMessage(chatID, text string) error {
	_, err := s.agentEvent(chatID, text, "all")
	return err
}

// AgentMessageID is AgentMessage returning the new event's ID.
func (s *Sim) AgentMessageID(chatID, text string) (string, error) {
	return s.agentEvent(chatID, text, "all")
}

// AgentNote has the agent write an internal note (visibility "agents"),
// which a correct integration must never show the user.
func (s *Sim) AgentNote(chatID, text string) error {
	_, err := s.agentEvent(chatID, text, "agents")
	return err
}

// agentEvent and closeChat go through the Agent Chat API's own code
// (sendAsAgent, endThread), so what the control API does is what an agent
// in LiveChat's app does.
func (s *Sim) agentEvent(chatID, text, visibility string) (string, error) {
	ch, ok := s.chats.get(chatID)
	if !ok {
		return "", ErrNoChat
	}
	id, e := s.sendAsAgent(ch, AgentID, &inEvent{Type: "message", Text: text, Visibility: visibility}, false)
	if e != nil {
		return "", ErrChatInactive
	}
	return id, nil
}

// CloseChat has the agent end the chat's active thread, firing
// chat_deactivated webhooks.
func (s *Sim) CloseChat(chatID string) error { return s.closeChat(chatID, AgentID) }

// RouterCloseChat ends the thread as LiveChat's router does (no agent
// found, inactivity): chat_deactivated carries no user_id.
func (s *Sim) RouterCloseChat(chatID string) error { return s.closeChat(chatID, "") }

func (s *Sim) closeChat(chatID, by string) error {
	ch, ok := s.chats.get(chatID)
	if !ok {
		return ErrNoChat
	}
	if e := s.endThread(ch, by); e != nil {
		return ErrChatInactive
	}
	return nil
}

func controlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (s *Sim) handleSimChats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Chats())
}

func decodeControl(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func controlStatus(err error) int {
	switch {
	case errors.Is(err, ErrNoChat):
		return http.StatusNotFound
	case errors.Is(err, ErrChatInactive):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func (s *Sim) handleSimAgentMessage(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Text       string `json:"text"`
		Visibility string `json:"visibility"`
	}
	if err := decodeControl(r, &req); err != nil || req.Text == "" {
		controlError(w, http.StatusBadRequest, `body must be {"text":"...","visibility":"all|agents"}`)
		return
	}
	if req.Visibility == "" {
		req.Visibility = "all"
	}
	if req.Visibility != "all" && req.Visibility != "agents" {
		controlError(w, http.StatusBadRequest, "visibility must be all or agents")
		return
	}
	id, err := s.agentEvent(r.PathValue("chat_id"), req.Text, req.Visibility)
	if err != nil {
		controlError(w, controlStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"event_id": id})
}

func (s *Sim) handleSimClose(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ByRouter bool `json:"by_router"`
	}
	if err := decodeControl(r, &req); err != nil {
		controlError(w, http.StatusBadRequest, `body must be empty or {"by_router":true}`)
		return
	}
	by := AgentID
	if req.ByRouter {
		by = ""
	}
	if err := s.closeChat(r.PathValue("chat_id"), by); err != nil {
		controlError(w, controlStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Sim) handleSimFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPut:
		var f Faults
		if err := decodeControl(r, &f); err != nil {
			controlError(w, http.StatusBadRequest, "faults: "+err.Error())
			return
		}
		if err := s.SetFaults(f); err != nil {
			controlError(w, http.StatusBadRequest, "faults: "+err.Error())
			return
		}
	case http.MethodDelete:
		s.ResetFaults()
	}
	writeJSON(w, http.StatusOK, s.Faults())
}

func (s *Sim) handleSimStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Sim) handleSimReset(w http.ResponseWriter, r *http.Request) {
	s.Reset()
	writeJSON(w, http.StatusOK, struct{}{})
}
