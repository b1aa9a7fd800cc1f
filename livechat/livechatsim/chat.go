package livechatsim

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// wireEvent is an event as the Chat APIs write it. Each type keeps its
// own fields: a file its metadata, a rich message its template and
// elements, a filled form its fields.
type wireEvent struct {
	ID                string         `json:"id"`
	CustomID          string         `json:"custom_id,omitempty"`
	Type              string         `json:"type"`
	Text              string         `json:"text,omitempty"`
	AuthorID          string         `json:"author_id"`
	CreatedAt         string         `json:"created_at"`
	Recipients        string         `json:"recipients,omitempty"`
	Visibility        string         `json:"visibility,omitempty"`
	Properties        map[string]any `json:"properties,omitempty"`
	URL               string         `json:"url,omitempty"`
	SystemMessageType string         `json:"system_message_type,omitempty"`
	fileMeta
	TemplateID string `json:"template_id,omitempty"`
	Elements   []any  `json:"elements,omitempty"`
	Fields     []any  `json:"fields,omitempty"`
}

func (e *event) wire() wireEvent {
	return wireEvent{ID: e.ID, CustomID: e.CustomID, Type: e.Type, Text: e.Text, AuthorID: e.AuthorID,
		CreatedAt: fmtTime(e.CreatedAt), Recipients: e.Recipients, Properties: e.Properties,
		URL: e.URL, SystemMessageType: e.SystemMessageType, fileMeta: e.file,
		TemplateID: e.TemplateID, Elements: e.Elements, Fields: e.Fields}
}

// agentWire is the agent-side shape (Agent Chat API and webhooks):
// visibility, not recipients.
func (e *event) agentWire() wireEvent {
	w := e.wire()
	w.Visibility, w.Recipients = w.Recipients, ""
	return w
}

// inEvent is an event in a request. Customers address it with recipients,
// agents with visibility.
type inEvent struct {
	CustomID          string         `json:"custom_id"`
	Type              string         `json:"type"`
	Text              string         `json:"text"`
	Recipients        string         `json:"recipients"`
	Visibility        string         `json:"visibility"`
	Properties        map[string]any `json:"properties"`
	URL               string         `json:"url"`
	SystemMessageType string         `json:"system_message_type"`
	fileMeta
	TemplateID string `json:"template_id"`
	// Fields of a filled_form and elements of a rich_message are kept
	// opaque: the sim stores and returns them as sent.
	Fields   []any `json:"fields"`
	Elements []any `json:"elements"`
}

func validateEvent(e *inEvent, i int) *apiError {
	where := "event"
	if i >= 0 {
		where = "events[" + strconv.Itoa(i) + "]"
	}
	switch e.Type {
	case "":
		return errValidation("`" + where + ".type` is required")
	case "message":
		if e.Text == "" {
			return errValidation("`" + where + ".text` is required")
		}
		if len(e.Text) > maxTextBytes {
			return errValidation(fmt.Sprintf("`%s.text` is too long: %d bytes, at most %d", where, len(e.Text), maxTextBytes))
		}
		if !utf8.ValidString(e.Text) {
			return errValidation("`" + where + ".text` is not valid UTF-8")
		}
	case "file":
		if e.URL == "" {
			return errValidation("`" + where + ".url` is required")
		}
	case "system_message":
		// LiveChat requires the type of a system message; its text is
		// optional (https://platform.text.com/docs/messaging/customer-chat-api/data-structures#system-message).
		if e.SystemMessageType == "" {
			return errValidation("`" + where + ".system_message_type` is required")
		}
	case "rich_message", "filled_form", "custom":
	default:
		return errValidation("`" + where + ".type` is not supported: " + e.Type)
	}
	switch e.Recipients {
	case "", "all", "agents":
	default:
		return errValidation("`" + where + ".recipients` must be all or agents")
	}
	switch e.Visibility {
	case "", "all", "agents":
	default:
		return errValidation("`" + where + ".visibility` must be all or agents")
	}
	return nil
}

// addEvent files e in t as written by author. Call with the chat locked.
func (s *Sim) addEvent(t *thread, e *inEvent, author string) *event {
	rec := e.Recipients
	if rec == "" {
		rec = e.Visibility
	}
	if rec == "" {
		rec = "all"
	}
	ev := &event{
		ID:       t.id + "_" + strconv.Itoa(len(t.events)+1),
		CustomID: e.CustomID, Type: e.Type, Text: e.Text, AuthorID: author, Recipients: rec,
		CreatedAt: s.now(), Properties: e.Properties, URL: e.URL, SystemMessageType: e.SystemMessageType,
		file: e.fileMeta, TemplateID: e.TemplateID, Elements: e.Elements, Fields: e.Fields,
	}
	t.events = append(t.events, ev)
	return ev
}

type inThread struct {
	Events     []inEvent                 `json:"events"`
	Properties map[string]map[string]any `json:"properties"`
}

type inChat struct {
	ID     string `json:"id"`
	Access *struct {
		GroupIDs []int `json:"group_ids"`
	} `json:"access"`
	Properties map[string]map[string]any `json:"properties"`
	Thread     *inThread                 `json:"thread"`
}

type startChatRequest struct {
	Chat       *inChat `json:"chat"`
	Active     *bool   `json:"active"`
	Continuous bool    `json:"continuous"`
}

// newThread starts a thread, waiting in the queue until an agent takes
// it. Call with its chat locked.
func (s *Sim) newThread(props map[string]map[string]any) *thread {
	now := s.now()
	t := &thread{id: s.ids.chatID(), active: true, createdAt: now, props: props, queuedAt: now}
	s.queue.update(t)
	return t
}

func (s *Sim) customerOf(c *call) (*customer, *apiError) {
	cu, ok := s.customers.get(c.customer)
	if !ok {
		// The token outlived a reset.
		return nil, &apiError{Type: "authentication", Message: "Unknown customer"}
	}
	return cu, nil
}

func validateOpening(req *startChatRequest, needID bool, f *compiledFaults) *apiError {
	if needID && (req.Chat == nil || req.Chat.ID == "") {
		return errValidation("`chat.id` is required")
	}
	if req.Active != nil && !*req.Active {
		return errValidation("`active` false is not supported")
	}
	if req.Chat != nil && req.Chat.Thread != nil {
		if len(req.Chat.Thread.Events) > 100 {
			return errValidation("Too many events")
		}
		for i := range req.Chat.Thread.Events {
			if e := validateEvent(&req.Chat.Thread.Events[i], i); e != nil {
				return e
			}
		}
	}
	if f.AgentsOffline && !req.Continuous {
		return &apiError{Type: "groups_offline", Message: "Groups offline"}
	}
	return nil
}

// startChat creates the customer's one chat. A customer who already has a
// chat gets limit_reached with error.data.chat_id naming it: LiveChat keeps
// one chat per customer and the caller should resume that one.
func (s *Sim) startChat(c *call) (any, *apiError) {
	var req startChatRequest
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if e := validateOpening(&req, false, s.faults.Load()); e != nil {
		return nil, e
	}
	cu, e := s.customerOf(c)
	if e != nil {
		return nil, e
	}
	in := req.Chat
	if in == nil {
		in = &inChat{}
	}
	groups := []int{0}
	if in.Access != nil && len(in.Access.GroupIDs) > 0 {
		groups = slices.Clone(in.Access.GroupIDs)
	}
	var threadProps map[string]map[string]any
	var events []inEvent
	if in.Thread != nil {
		threadProps, events = in.Thread.Properties, in.Thread.Events
	}

	cu.mu.Lock()
	defer cu.mu.Unlock()
	if cu.chatID != "" {
		return nil, &apiError{Type: "limit_reached", Message: "Customer already has a chat; resume it",
			Data: map[string]any{"chat_id": cu.chatID}}
	}
	ch := &chat{customerID: cu.id, createdAt: s.now(), props: in.Properties, groupIDs: groups, seq: s.chatSeq.Add(1)}
	for {
		ch.id = s.ids.chatID()
		if s.chats.putNew(ch.id, ch) {
			break
		}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	t := s.newThread(threadProps)
	ch.threads = append(ch.threads, t)
	ids := make([]string, 0, len(events))
	for i := range events {
		ids = append(ids, s.addEvent(t, &events[i], cu.id).ID)
	}
	cu.chatID = ch.id
	return map[string]any{"chat_id": ch.id, "thread_id": t.id, "event_ids": ids}, nil
}

// ownChat finds a chat the caller's customer owns; other customers' chats
// are not_found, as if they did not exist.
func (s *Sim) ownChat(c *call, id string) (*chat, *apiError) {
	if id == "" {
		return nil, errValidation("`chat_id` is required")
	}
	ch, ok := s.chats.get(id)
	if !ok || ch.customerID != c.customer {
		return nil, errNotFound("Chat not found")
	}
	return ch, nil
}

func (s *Sim) resumeChat(c *call) (any, *apiError) {
	var req startChatRequest
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if e := validateOpening(&req, true, s.faults.Load()); e != nil {
		return nil, e
	}
	ch, e := s.ownChat(c, req.Chat.ID)
	if e != nil {
		return nil, e
	}
	var threadProps map[string]map[string]any
	var events []inEvent
	if req.Chat.Thread != nil {
		threadProps, events = req.Chat.Thread.Properties, req.Chat.Thread.Events
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.active() {
		return nil, &apiError{Type: "not_allowed", Message: "Chat is already active"}
	}
	if req.Chat.Access != nil && len(req.Chat.Access.GroupIDs) > 0 {
		ch.groupIDs = slices.Clone(req.Chat.Access.GroupIDs)
	}
	t := s.newThread(threadProps)
	ch.threads = append(ch.threads, t)
	ids := make([]string, 0, len(events))
	for i := range events {
		ids = append(ids, s.addEvent(t, &events[i], c.customer).ID)
	}
	return map[string]any{"thread_id": t.id, "event_ids": ids}, nil
}

type sendEventRequest struct {
	ChatID             string   `json:"chat_id"`
	Event              *inEvent `json:"event"`
	AttachToLastThread bool     `json:"attach_to_last_thread"`
}

func (s *Sim) sendEvent(c *call) (any, *apiError) {
	var req sendEventRequest
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if req.Event == nil {
		return nil, errValidation("`event` is required")
	}
	if e := validateEvent(req.Event, -1); e != nil {
		return nil, e
	}
	ch, e := s.ownChat(c, req.ChatID)
	if e != nil {
		return nil, e
	}
	ch.mu.Lock()
	t := ch.last()
	if t == nil || (!t.active && !req.AttachToLastThread) {
		ch.mu.Unlock()
		return nil, &apiError{Type: "chat_inactive", Message: "Chat is inactive"}
	}
	ev := s.addEvent(t, req.Event, c.customer)
	var d []delivery
	if s.nHooks.Load() > 0 {
		d = s.eventDeliveries(ch, t, ev, "customer")
	}
	ch.mu.Unlock()
	s.enqueue(d)
	return map[string]string{"event_id": ev.ID}, nil
}

func (s *Sim) deactivateChat(c *call) (any, *apiError) {
	var req struct {
		ID string `json:"id"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if req.ID == "" {
		return nil, errValidation("`id` is required")
	}
	ch, e := s.ownChat(c, req.ID)
	if e != nil {
		return nil, e
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.active() {
		return nil, &apiError{Type: "chat_inactive", Message: "Chat is inactive"}
	}
	ch.last().active = false
	s.queue.update(ch.last())
	return struct{}{}, nil
}

type wireQueue struct {
	Position int    `json:"position"`
	WaitTime int    `json:"wait_time"`
	QueuedAt string `json:"queued_at"`
}

type wireThread struct {
	ID         string                    `json:"id"`
	Active     bool                      `json:"active"`
	UserIDs    []string                  `json:"user_ids"`
	Events     []wireEvent               `json:"events"`
	Properties map[string]map[string]any `json:"properties,omitempty"`
	Access     wireAccess                `json:"access"`
	Queue      *wireQueue                `json:"queue,omitempty"`
	CreatedAt  string                    `json:"created_at"`
	PrevThread string                    `json:"previous_thread_id,omitempty"`
	NextThread string                    `json:"next_thread_id,omitempty"`
}

type wireAccess struct {
	GroupIDs []int `json:"group_ids"`
}

type wireUser struct {
	ID             string `json:"id"`
	Type           string `json:"type"`
	Name           string `json:"name,omitempty"`
	Email          string `json:"email,omitempty"`
	Avatar         string `json:"avatar,omitempty"`
	JobTitle       string `json:"job_title,omitempty"`
	Present        bool   `json:"present"`
	EventsSeenUpTo string `json:"events_seen_up_to,omitempty"`
}

// renderThread renders thread i of ch. The customer side leaves out
// events sent to agents only (except the customer's own); the agent side
// shows every event, with visibility. Call with the chat locked.
// queueOf is the thread's place in the queue: an active thread nobody has
// picked up waits there.
func (s *Sim) queueOf(t *thread) *wireQueue {
	if len(t.agents) > 0 || !t.active {
		return nil
	}
	return &wireQueue{Position: max(s.queue.position(t), 1), WaitTime: int(s.now().Sub(t.queuedAt) / time.Second), QueuedAt: fmtTime(t.queuedAt)}
}

func (s *Sim) renderThread(ch *chat, i int, agentSide bool) wireThread {
	t := ch.threads[i]
	w := wireThread{ID: t.id, Active: t.active, UserIDs: append([]string{ch.customerID}, t.agents...),
		Events:     make([]wireEvent, 0, len(t.events)),
		Properties: t.props, Access: wireAccess{GroupIDs: ch.groupIDs}, CreatedAt: fmtTime(t.createdAt)}
	for _, e := range t.events {
		switch {
		case agentSide:
			w.Events = append(w.Events, e.agentWire())
		case e.Recipients != "agents" || e.AuthorID == ch.customerID:
			// A customer sees what was sent to everyone and its own events.
			w.Events = append(w.Events, e.wire())
		}
	}
	w.Queue = s.queueOf(t)
	if i > 0 {
		w.PrevThread = ch.threads[i-1].id
	}
	if i+1 < len(ch.threads) {
		w.NextThread = ch.threads[i+1].id
	}
	return w
}

// users lists the chat's customer and every agent who took part in one of
// its threads; an agent is present while in the active thread. Call with
// the chat locked.
func (s *Sim) users(cu customerView, ch *chat) []wireUser {
	us := []wireUser{{ID: cu.ID, Type: "customer", Name: cu.Name, Email: cu.Email, Avatar: cu.Avatar, Present: true,
		EventsSeenUpTo: fmtOptTime(cu.EventsSeenUpTo)}}
	seen := map[string]bool{}
	last := ch.last()
	for _, t := range ch.threads {
		for _, id := range t.agents {
			if seen[id] {
				continue
			}
			seen[id] = true
			a := agentProfile(id)
			us = append(us, wireUser{ID: id, Type: "agent", Name: a.Name, Email: id, Avatar: a.Avatar, JobTitle: a.JobTitle,
				Present: last.active && last.hasAgent(id)})
		}
	}
	return us
}

func (s *Sim) getChat(c *call) (any, *apiError) {
	var req struct {
		ChatID   string `json:"chat_id"`
		ThreadID string `json:"thread_id"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	ch, e := s.ownChat(c, req.ChatID)
	if e != nil {
		return nil, e
	}
	return s.renderChat(ch, req.ThreadID, false)
}

type listThreadsRequest struct {
	ChatID         string `json:"chat_id"`
	SortOrder      string `json:"sort_order"`
	Limit          *int   `json:"limit"`
	PageID         string `json:"page_id"`
	MinEventsCount int    `json:"min_events_count"`
}

// page IDs are opaque to callers; here they carry the offset and order.
func pageID(order string, offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(order + ":" + strconv.Itoa(offset)))
}

func parsePageID(p string) (string, int, bool) {
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return "", 0, false
	}
	order, off, ok := strings.Cut(string(b), ":")
	n, err := strconv.Atoi(off)
	return order, n, ok && err == nil && n >= 0 && (order == "asc" || order == "desc")
}

func (s *Sim) listThreads(c *call) (any, *apiError) {
	var req listThreadsRequest
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	ch, e := s.ownChat(c, req.ChatID)
	if e != nil {
		return nil, e
	}
	return s.pageThreads(ch, &req, false)
}

// pageThreads is list_threads' answer for either side.
func (s *Sim) pageThreads(ch *chat, req *listThreadsRequest, agentSide bool) (any, *apiError) {
	order, offset := req.SortOrder, 0
	if order == "" {
		order = "desc"
	}
	if order != "asc" && order != "desc" {
		return nil, errValidation("`sort_order` must be asc or desc")
	}
	limit := 3
	if req.Limit != nil {
		limit = *req.Limit
	}
	if limit < 1 || limit > 100 {
		return nil, errValidation("`limit` must be between 1 and 100")
	}
	if req.PageID != "" {
		var ok bool
		if order, offset, ok = parsePageID(req.PageID); !ok {
			return nil, errValidation("Invalid `page_id`")
		}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var idx []int
	for i, t := range ch.threads {
		if len(t.events) >= req.MinEventsCount {
			idx = append(idx, i)
		}
	}
	if order == "desc" {
		slices.Reverse(idx)
	}
	found := len(idx)
	if offset > len(idx) {
		offset = len(idx)
	}
	end := min(offset+limit, len(idx))
	threads := make([]wireThread, 0, end-offset)
	for _, i := range idx[offset:end] {
		threads = append(threads, s.renderThread(ch, i, agentSide))
	}
	out := map[string]any{"threads": threads, "found_threads": found}
	if end < len(idx) {
		out["next_page_id"] = pageID(order, end)
	}
	if offset > 0 {
		out["previous_page_id"] = pageID(order, max(0, offset-limit))
	}
	return out, nil
}

func (s *Sim) listChats(c *call) (any, *apiError) {
	var req struct {
		Limit *int `json:"limit"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	limit := 10
	if req.Limit != nil {
		limit = *req.Limit
	}
	if limit < 1 || limit > 25 {
		return nil, errValidation("`limit` must be between 1 and 25")
	}
	cu, e := s.customerOf(c)
	if e != nil {
		return nil, e
	}
	cu.mu.Lock()
	chatID := cu.chatID
	cu.mu.Unlock()
	list := []map[string]any{}
	if ch, ok := s.chats.get(chatID); ok {
		view := s.customerView(cu.id)
		ch.mu.Lock()
		t := ch.last()
		item := map[string]any{
			"id":                     ch.id,
			"last_thread_id":         t.id,
			"active":                 t.active,
			"last_thread_created_at": fmtTime(t.createdAt),
			"last_thread_summary": map[string]any{
				"id": t.id, "active": t.active, "created_at": fmtTime(t.createdAt),
				"user_ids": append([]string{ch.customerID}, t.agents...),
			},
			"users":      s.users(view, ch),
			"access":     wireAccess{GroupIDs: ch.groupIDs},
			"properties": ch.props,
		}
		last := map[string]any{}
		for _, tt := range ch.threads {
			for _, ev := range tt.events {
				if ev.Recipients == "agents" && ev.AuthorID != ch.customerID {
					continue
				}
				last[ev.Type] = map[string]any{"thread_id": tt.id, "thread_created_at": fmtTime(tt.createdAt), "event": ev.wire()}
			}
		}
		item["last_event_per_type"] = last
		ch.mu.Unlock()
		list = append(list, item)
	}
	key := "chats_summary"
	if c.version == "v3.7" {
		key = "chats_info"
	}
	return map[string]any{key: list, "total_chats": len(list)}, nil
}

func validateSessionFields(fields []map[string]string) *apiError {
	for i, f := range fields {
		if len(f) != 1 {
			return errValidation(fmt.Sprintf("`session_fields[%d]` must hold exactly one key", i))
		}
	}
	return nil
}

func (s *Sim) updateCustomer(c *call) (any, *apiError) {
	var req struct {
		Name          string              `json:"name"`
		Email         string              `json:"email"`
		Avatar        string              `json:"avatar"`
		SessionFields []map[string]string `json:"session_fields"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if e := validateSessionFields(req.SessionFields); e != nil {
		return nil, e
	}
	cu, e := s.customerOf(c)
	if e != nil {
		return nil, e
	}
	cu.mu.Lock()
	defer cu.mu.Unlock()
	if req.Name != "" {
		cu.name = req.Name
	}
	if req.Email != "" {
		cu.email = req.Email
	}
	if req.Avatar != "" {
		cu.avatar = req.Avatar
	}
	if req.SessionFields != nil {
		cu.sessionFields = req.SessionFields
	}
	return struct{}{}, nil
}

func (s *Sim) setSessionFields(c *call) (any, *apiError) {
	var req struct {
		SessionFields []map[string]string `json:"session_fields"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if req.SessionFields == nil {
		return nil, errValidation("`session_fields` is required")
	}
	if e := validateSessionFields(req.SessionFields); e != nil {
		return nil, e
	}
	cu, e := s.customerOf(c)
	if e != nil {
		return nil, e
	}
	cu.mu.Lock()
	cu.sessionFields = req.SessionFields
	cu.mu.Unlock()
	return struct{}{}, nil
}

func (s *Sim) sendSneakPeek(c *call) (any, *apiError) {
	var req struct {
		ChatID string `json:"chat_id"`
		Text   string `json:"sneak_peek_text"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if _, e := s.ownChat(c, req.ChatID); e != nil {
		return nil, e
	}
	if len(req.Text) > maxTextBytes {
		return nil, errValidation("`sneak_peek_text` is too long")
	}
	return struct{}{}, nil
}

func (s *Sim) listGroupStatuses(c *call) (any, *apiError) {
	var req struct {
		All      bool  `json:"all"`
		GroupIDs []int `json:"group_ids"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if !req.All && len(req.GroupIDs) == 0 {
		return nil, errValidation("One of `all` or `group_ids` is required")
	}
	status := "online"
	if s.faults.Load().AgentsOffline {
		status = "offline"
	}
	ids := req.GroupIDs
	if req.All {
		ids = []int{0}
	}
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		if id < 0 {
			return nil, &apiError{Type: "group_not_found", Message: "Group not found"}
		}
		out[strconv.Itoa(id)] = status
	}
	return map[string]any{"groups_status": out}, nil
}

// getCustomer answers the customer with the fields LiveChat's Customer
// object carries: email_verified (never, for customers created by an
// agent_token grant), present (while the customer has an active chat) and
// events_seen_up_to (what mark_events_as_seen recorded).
func (s *Sim) getCustomer(c *call) (any, *apiError) {
	cu, e := s.customerOf(c)
	if e != nil {
		return nil, e
	}
	v := s.customerView(c.customer)
	sf := v.SessionFields
	if sf == nil {
		sf = []map[string]string{}
	}
	cu.mu.Lock()
	chatID := cu.chatID
	cu.mu.Unlock()
	present := false
	if ch, ok := s.chats.get(chatID); ok {
		ch.mu.Lock()
		present = ch.active()
		ch.mu.Unlock()
	}
	out := map[string]any{"id": v.ID, "type": "customer", "name": v.Name, "email": v.Email,
		"avatar": v.Avatar, "session_fields": sf, "email_verified": false, "present": present,
		"created_at": fmtTime(cu.createdAt)}
	if !v.EventsSeenUpTo.IsZero() {
		out["events_seen_up_to"] = fmtTime(v.EventsSeenUpTo)
	}
	return out, nil
}

// markEventsAsSeen records how far the customer has read. LiveChat keeps
// the latest time; an earlier one changes nothing.
func (s *Sim) markEventsAsSeen(c *call) (any, *apiError) {
	var req struct {
		ChatID   string `json:"chat_id"`
		SeenUpTo string `json:"seen_up_to"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if req.SeenUpTo == "" {
		return nil, errValidation("`seen_up_to` is required")
	}
	at, err := time.Parse(time.RFC3339Nano, req.SeenUpTo)
	if err != nil {
		return nil, errValidation("`seen_up_to` must be an RFC 3339 time")
	}
	if _, e := s.ownChat(c, req.ChatID); e != nil {
		return nil, e
	}
	cu, e := s.customerOf(c)
	if e != nil {
		return nil, e
	}
	cu.mu.Lock()
	if at.After(cu.seenUpTo) {
		cu.seenUpTo = at
	}
	cu.mu.Unlock()
	return struct{}{}, nil
}

// sendRichMessagePostback takes the customer's press of a rich message
// button: the event must be a rich_message in that thread of the
// customer's chat, with a button of that postback ID.
func (s *Sim) sendRichMessagePostback(c *call) (any, *apiError) {
	var req struct {
		ChatID   string `json:"chat_id"`
		ThreadID string `json:"thread_id"`
		EventID  string `json:"event_id"`
		Postback *struct {
			ID      string `json:"id"`
			Toggled *bool  `json:"toggled"`
		} `json:"postback"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	switch {
	case req.ThreadID == "":
		return nil, errValidation("`thread_id` is required")
	case req.EventID == "":
		return nil, errValidation("`event_id` is required")
	case req.Postback == nil || req.Postback.ID == "":
		return nil, errValidation("`postback.id` is required")
	case req.Postback.Toggled == nil:
		return nil, errValidation("`postback.toggled` is required")
	}
	ch, e := s.ownChat(c, req.ChatID)
	if e != nil {
		return nil, e
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	i := slices.IndexFunc(ch.threads, func(t *thread) bool { return t.id == req.ThreadID })
	if i < 0 {
		return nil, errNotFound("Thread not found")
	}
	j := slices.IndexFunc(ch.threads[i].events, func(e *event) bool { return e.ID == req.EventID })
	if j < 0 {
		return nil, errNotFound("Event not found")
	}
	ev := ch.threads[i].events[j]
	if ev.Type != "rich_message" {
		return nil, errValidation("Event is not a rich_message")
	}
	if !hasPostback(ev.Elements, req.Postback.ID) {
		return nil, errNotFound("Postback not found")
	}
	// LiveChat tells the agent's app (and incoming_rich_message_postback
	// webhooks); the event itself does not change.
	return struct{}{}, nil
}

// hasPostback reports whether a button of the elements has postback id.
func hasPostback(elements []any, id string) bool {
	for _, el := range elements {
		m, _ := el.(map[string]any)
		buttons, _ := m["buttons"].([]any)
		for _, b := range buttons {
			if bm, _ := b.(map[string]any); bm["postback_id"] == id {
				return true
			}
		}
	}
	return false
}
