package livechat

import (
	"context"
	"fmt"
	"time"
)

// The Agent Chat Web API (POST /v{version}/agent/action/{action}, bearer =
// agent token): what an agent sees and does. handoff reads with it where a
// customer token cannot see across chats (the reconciliation sweep lists
// every chat at once), and tests drive the agent's side with it.

// ChatsFilters narrow the Agent Chat API's list_chats. LiveChat takes them
// only with the first page; later pages carry them in the page ID.
type ChatsFilters struct {
	// IncludeActive nil means true (LiveChat's default): active chats are
	// listed beside inactive ones. false lists inactive chats only.
	IncludeActive *bool `json:"include_active,omitempty"`
	GroupIDs      []int `json:"group_ids,omitempty"`
	// Properties match chat properties: namespace → key → condition.
	Properties map[string]map[string]PropertyFilter `json:"properties,omitempty"`
}

// PropertyFilter is one chat property's condition: it exists (or not),
// has one of Values, or none of ExcludeValues.
type PropertyFilter struct {
	Exists        *bool `json:"exists,omitempty"`
	Values        []any `json:"values,omitempty"`
	ExcludeValues []any `json:"exclude_values,omitempty"`
}

// AgentListChatsRequest asks for one page of chats.
type AgentListChatsRequest struct {
	Filters   *ChatsFilters `json:"filters,omitempty"`
	SortOrder string        `json:"sort_order,omitempty"` // "desc" (default) or "asc"
	Limit     int           `json:"limit,omitempty"`      // at most 100; LiveChat's default 10
	PageID    string        `json:"page_id,omitempty"`
}

// ThreadSummary is the last thread of a chat as list_chats shows it.
type ThreadSummary struct {
	ID        string    `json:"id"`
	Active    bool      `json:"active"`
	UserIDs   []string  `json:"user_ids"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	Queue     *Queue    `json:"queue,omitempty"`
}

// LastEvent is the latest event of one type in a chat.
type LastEvent struct {
	ThreadID string `json:"thread_id"`
	Event    Event  `json:"event"`
}

// AgentChatSummary is one chat of the Agent Chat API's list_chats.
type AgentChatSummary struct {
	ID                string                    `json:"id"`
	Users             []User                    `json:"users"`
	Properties        map[string]map[string]any `json:"properties,omitempty"`
	Access            ChatAccess                `json:"access"`
	LastThreadSummary *ThreadSummary            `json:"last_thread_summary,omitempty"`
	// LastEventPerType holds the latest event of each type ("message",
	// "file", ...), so a caller can tell whether anything is new without
	// reading the thread.
	LastEventPerType map[string]LastEvent `json:"last_event_per_type,omitempty"`
}

// ChatAccess says which groups' agents may see a chat.
type ChatAccess struct {
	GroupIDs []int `json:"group_ids"`
}

// AgentChatsPage is one page of list_chats.
type AgentChatsPage struct {
	Chats                      []AgentChatSummary
	FoundChats                 int
	NextPageID, PreviousPageID string
}

// AgentListChats returns one page of the license's chats the agent can
// see, newest first unless SortOrder says "asc".
func (c *Client) AgentListChats(ctx context.Context, agentToken string, req AgentListChatsRequest) (AgentChatsPage, error) {
	var out AgentChatsPage
	err := c.call(ctx, "agent", "list_chats", agentToken, req, func(b []byte) error {
		if err := requireObject(b); err != nil {
			return err
		}
		var r struct {
			ChatsSummary   []AgentChatSummary `json:"chats_summary"`
			ChatsInfo      []AgentChatSummary `json:"chats_info"`
			FoundChats     int                `json:"found_chats"`
			NextPageID     string             `json:"next_page_id"`
			PreviousPageID string             `json:"previous_page_id"`
		}
		if err := decodeObject(b, &r); err != nil {
			return err
		}
		out = AgentChatsPage{Chats: r.ChatsSummary, FoundChats: r.FoundChats, NextPageID: r.NextPageID, PreviousPageID: r.PreviousPageID}
		if out.Chats == nil {
			out.Chats = r.ChatsInfo
		}
		for _, ch := range out.Chats {
			if ch.ID == "" {
				return errMissing("chat id")
			}
		}
		return nil
	})
	return out, err
}

// AgentGetChat returns the chat with one thread (threadID, or the latest
// when empty) as an agent sees it: every event, with its visibility.
func (c *Client) AgentGetChat(ctx context.Context, agentToken, chatID, threadID string) (Chat, error) {
	var out Chat
	err := c.call(ctx, "agent", "get_chat", agentToken, getChatBody{ChatID: chatID, ThreadID: threadID},
		func(b []byte) (err error) {
			out, err = decodeChat(b)
			return err
		})
	return out, err
}

// AgentListThreads returns a page of the chat's threads as an agent sees
// them.
func (c *Client) AgentListThreads(ctx context.Context, agentToken string, req ListThreadsRequest) (ListThreadsResponse, error) {
	var out ListThreadsResponse
	err := c.call(ctx, "agent", "list_threads", agentToken, listThreadsBody(req), func(b []byte) (err error) {
		out, err = decodeListThreads(b)
		return err
	})
	return out, err
}

type agentSendEventBody struct {
	ChatID             string `json:"chat_id"`
	Event              Event  `json:"event"`
	AttachToLastThread bool   `json:"attach_to_last_thread,omitempty"`
}

// AgentSendEvent posts ev as the agent. Agents address events with
// Visibility ("all" unless set; "agents" is an internal note).
func (c *Client) AgentSendEvent(ctx context.Context, agentToken, chatID string, ev Event, attachToLastThread bool) (string, error) {
	if ev.Type == "" {
		ev.Type = EventMessage
	}
	if ev.Visibility == "" {
		ev.Visibility = "all"
	}
	ev.Recipients = ""
	var id string
	err := c.call(ctx, "agent", "send_event", agentToken,
		agentSendEventBody{ChatID: chatID, Event: ev, AttachToLastThread: attachToLastThread},
		func(b []byte) (err error) {
			id, err = decodeSendEvent(b)
			return err
		})
	return id, err
}

// TransferTarget is where transfer_chat sends a chat: Type "group" with
// group numbers, or "agent" with agent IDs.
type TransferTarget struct {
	Type string `json:"type"`
	IDs  []any  `json:"ids"`
}

// TransferChat moves the chat's active thread to a group's queue or to an
// agent.
func (c *Client) TransferChat(ctx context.Context, agentToken, chatID string, target TransferTarget) error {
	if chatID == "" {
		return fmt.Errorf("livechat: transfer_chat: empty chat id")
	}
	return c.call(ctx, "agent", "transfer_chat", agentToken,
		map[string]any{"id": chatID, "target": target}, decodeEmpty)
}

// AgentDeactivateChat ends the chat's active thread as the agent.
func (c *Client) AgentDeactivateChat(ctx context.Context, agentToken, chatID string) error {
	return c.call(ctx, "agent", "deactivate_chat", agentToken, map[string]string{"id": chatID}, decodeEmpty)
}

// AddUserToChat adds the agent userID to the chat's active thread;
// visibility "all" shows the agent to the customer, "agents" does not.
func (c *Client) AddUserToChat(ctx context.Context, agentToken, chatID, userID, visibility string) error {
	if visibility == "" {
		visibility = "all"
	}
	return c.call(ctx, "agent", "add_user_to_chat", agentToken,
		map[string]string{"chat_id": chatID, "user_id": userID, "user_type": "agent", "visibility": visibility}, decodeEmpty)
}
