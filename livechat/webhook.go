package livechat

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
)

// Webhook actions handoff registers for.
const (
	ActionIncomingEvent   = "incoming_event"
	ActionChatDeactivated = "chat_deactivated"
	ActionIncomingChat    = "incoming_chat"
	ActionUserAdded       = "user_added_to_chat"
	ActionChatTransferred = "chat_transferred"
	// ActionUserAddedLegacy is user_added_to_chat's name before API 3.3,
	// still seen in older payloads.
	ActionUserAddedLegacy = "chat_user_added"
)

// WebhookDelivery is one webhook body LiveChat POSTs to us. Payload is
// decoded per action with the methods below.
type WebhookDelivery struct {
	WebhookID, SecretKey, Action, OrganizationID string
	// LicenseID is set by payloads older than API 3.4 instead of
	// OrganizationID.
	LicenseID      int64
	Payload        json.RawMessage
	AdditionalData json.RawMessage
}

type wireDelivery struct {
	WebhookID      string          `json:"webhook_id"`
	SecretKey      string          `json:"secret_key"`
	Action         string          `json:"action"`
	OrganizationID string          `json:"organization_id"`
	LicenseID      int64           `json:"license_id"`
	Payload        json.RawMessage `json:"payload"`
	AdditionalData json.RawMessage `json:"additional_data"`
}

// ParseWebhook decodes a webhook body. It checks the envelope only; the
// caller must still CheckSecret before trusting it.
func ParseWebhook(body []byte) (WebhookDelivery, error) {
	if err := requireObject(body); err != nil {
		return WebhookDelivery{}, fmt.Errorf("livechat: webhook: %w", err)
	}
	var w wireDelivery
	if err := json.Unmarshal(body, &w); err != nil {
		return WebhookDelivery{}, fmt.Errorf("livechat: webhook: %w", err)
	}
	switch {
	case w.Action == "":
		return WebhookDelivery{}, fmt.Errorf("livechat: webhook: %w", errMissing("action"))
	case !isObject(w.Payload):
		return WebhookDelivery{}, fmt.Errorf("livechat: webhook %s: payload is not an object", w.Action)
	}
	return WebhookDelivery(w), nil
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimLeft(raw, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

// CheckSecret reports whether the delivery carries secret, in constant
// time: the body's secret_key is the only proof that LiveChat sent it.
// Both sides are hashed first: comparing the raw bytes returns at once on
// a length mismatch, which would tell a prober the secret's length.
func (d WebhookDelivery) CheckSecret(secret string) bool {
	if secret == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(d.SecretKey)), sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// IncomingEventPayload is the payload of incoming_event.
type IncomingEventPayload struct {
	ChatID, ThreadID string
	Event            Event
}

// ChatDeactivatedPayload is the payload of chat_deactivated. UserID is
// empty when LiveChat's router, not a person, closed the chat.
type ChatDeactivatedPayload struct {
	ChatID, ThreadID, UserID string
}

var errWrongAction = errors.New("wrong action")

// IncomingEvent decodes an incoming_event payload.
func (d WebhookDelivery) IncomingEvent() (IncomingEventPayload, error) {
	if d.Action != ActionIncomingEvent {
		return IncomingEventPayload{}, fmt.Errorf("livechat: webhook %s as %s: %w", d.Action, ActionIncomingEvent, errWrongAction)
	}
	var p struct {
		ChatID   string `json:"chat_id"`
		ThreadID string `json:"thread_id"`
		Event    *Event `json:"event"`
	}
	if err := json.Unmarshal(d.Payload, &p); err != nil {
		return IncomingEventPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, err)
	}
	switch {
	case p.ChatID == "":
		return IncomingEventPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, errMissing("chat_id"))
	case p.Event == nil || p.Event.ID == "":
		return IncomingEventPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, errMissing("event.id"))
	}
	return IncomingEventPayload{ChatID: p.ChatID, ThreadID: p.ThreadID, Event: *p.Event}, nil
}

// ChatDeactivated decodes a chat_deactivated payload.
func (d WebhookDelivery) ChatDeactivated() (ChatDeactivatedPayload, error) {
	if d.Action != ActionChatDeactivated {
		return ChatDeactivatedPayload{}, fmt.Errorf("livechat: webhook %s as %s: %w", d.Action, ActionChatDeactivated, errWrongAction)
	}
	var p struct {
		ChatID   string `json:"chat_id"`
		ThreadID string `json:"thread_id"`
		UserID   string `json:"user_id"`
	}
	if err := json.Unmarshal(d.Payload, &p); err != nil {
		return ChatDeactivatedPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, err)
	}
	if p.ChatID == "" {
		return ChatDeactivatedPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, errMissing("chat_id"))
	}
	return ChatDeactivatedPayload(p), nil
}

// IncomingChatPayload is the payload of incoming_chat (a chat started or
// resumed): the chat with its users and the new thread, whose Queue is set
// while the chat waits for an agent.
type IncomingChatPayload struct {
	Chat Chat
}

// IncomingChat decodes an incoming_chat payload.
func (d WebhookDelivery) IncomingChat() (IncomingChatPayload, error) {
	if d.Action != ActionIncomingChat {
		return IncomingChatPayload{}, fmt.Errorf("livechat: webhook %s as %s: %w", d.Action, ActionIncomingChat, errWrongAction)
	}
	var p struct {
		Chat json.RawMessage `json:"chat"`
	}
	if err := json.Unmarshal(d.Payload, &p); err != nil {
		return IncomingChatPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, err)
	}
	c, err := decodeChat(p.Chat)
	if err != nil {
		return IncomingChatPayload{}, fmt.Errorf("livechat: webhook %s: chat: %w", d.Action, err)
	}
	return IncomingChatPayload{Chat: c}, nil
}

// UserAddedPayload is the payload of user_added_to_chat: someone joined
// the chat; UserType "agent" means an agent took it.
type UserAddedPayload struct {
	ChatID, ThreadID string
	User             User
	UserType         string
}

// UserAdded decodes a user_added_to_chat (or legacy chat_user_added)
// payload.
func (d WebhookDelivery) UserAdded() (UserAddedPayload, error) {
	if d.Action != ActionUserAdded && d.Action != ActionUserAddedLegacy {
		return UserAddedPayload{}, fmt.Errorf("livechat: webhook %s as %s: %w", d.Action, ActionUserAdded, errWrongAction)
	}
	var p struct {
		ChatID   string `json:"chat_id"`
		ThreadID string `json:"thread_id"`
		User     *User  `json:"user"`
		UserType string `json:"user_type"`
	}
	if err := json.Unmarshal(d.Payload, &p); err != nil {
		return UserAddedPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, err)
	}
	switch {
	case p.ChatID == "":
		return UserAddedPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, errMissing("chat_id"))
	case p.User == nil || p.User.ID == "":
		return UserAddedPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, errMissing("user.id"))
	}
	if p.UserType == "" {
		p.UserType = p.User.Type
	}
	return UserAddedPayload{ChatID: p.ChatID, ThreadID: p.ThreadID, User: *p.User, UserType: p.UserType}, nil
}

// ChatTransferredPayload is the payload of chat_transferred: the chat
// moved to other groups or agents, and waits in Queue when set.
type ChatTransferredPayload struct {
	ChatID, ThreadID, Reason, RequesterID string
	GroupIDs                              []int
	AgentIDs                              []string
	Queue                                 *Queue
}

// ChatTransferred decodes a chat_transferred payload.
func (d WebhookDelivery) ChatTransferred() (ChatTransferredPayload, error) {
	if d.Action != ActionChatTransferred {
		return ChatTransferredPayload{}, fmt.Errorf("livechat: webhook %s as %s: %w", d.Action, ActionChatTransferred, errWrongAction)
	}
	var p struct {
		ChatID        string `json:"chat_id"`
		ThreadID      string `json:"thread_id"`
		Reason        string `json:"reason"`
		RequesterID   string `json:"requester_id"`
		TransferredTo struct {
			GroupIDs []int    `json:"group_ids"`
			AgentIDs []string `json:"agent_ids"`
		} `json:"transferred_to"`
		Queue *Queue `json:"queue"`
	}
	if err := json.Unmarshal(d.Payload, &p); err != nil {
		return ChatTransferredPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, err)
	}
	if p.ChatID == "" {
		return ChatTransferredPayload{}, fmt.Errorf("livechat: webhook %s: %w", d.Action, errMissing("chat_id"))
	}
	return ChatTransferredPayload{
		ChatID: p.ChatID, ThreadID: p.ThreadID, Reason: p.Reason, RequesterID: p.RequesterID,
		GroupIDs: p.TransferredTo.GroupIDs, AgentIDs: p.TransferredTo.AgentIDs, Queue: p.Queue,
	}, nil
}
