package livechatsim

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
)

// Agent is one of the simulated agents, as the Chat APIs show agent users.
type Agent struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Avatar   string `json:"avatar"`
	JobTitle string `json:"job_title"`
}

// OtherAgentID is a second agent, a target for transfer_chat and
// add_user_to_chat.
const OtherAgentID = "agent2@example.com"

// agents are the license's agents. AgentID is the one every agent token
// the sim issues belongs to.
var agents = map[string]Agent{
	AgentID:      {ID: AgentID, Name: agentName, Avatar: "https://cdn.livechat-files.com/api/file/avatar/agent-smith.png", JobTitle: "Support Agent"},
	OtherAgentID: {ID: OtherAgentID, Name: "Agent Jones", Avatar: "https://cdn.livechat-files.com/api/file/avatar/agent-jones.png", JobTitle: "Billing Specialist"},
}

func agentProfile(id string) Agent {
	if a, ok := agents[id]; ok {
		return a
	}
	return Agent{ID: id}
}

// agentActions is the Agent Chat API subset handoff and its sweep use.
var agentActions = map[string]actionSpec{
	"list_chats":       {apply: (*Sim).agentListChats},
	"get_chat":         {apply: (*Sim).agentGetChat},
	"list_threads":     {apply: (*Sim).agentListThreads},
	"send_event":       {apply: (*Sim).agentSendEvent},
	"transfer_chat":    {apply: (*Sim).transferChat},
	"deactivate_chat":  {apply: (*Sim).agentDeactivateChat},
	"add_user_to_chat": {apply: (*Sim).addUserToChat},
}

// anyChat finds a chat by ID for an agent, who may see every chat of the
// license.
func (s *Sim) anyChat(id string) (*chat, *apiError) {
	if id == "" {
		return nil, errValidation("`chat_id` is required")
	}
	ch, ok := s.chats.get(id)
	if !ok {
		return nil, errNotFound("Chat not found")
	}
	return ch, nil
}

// propertyFilter is one property's condition in list_chats filters.
type propertyFilter struct {
	Exists        *bool `json:"exists,omitempty"`
	Values        []any `json:"values,omitempty"`
	ExcludeValues []any `json:"exclude_values,omitempty"`
}

// chatsFilters are list_chats' filters. IncludeActive defaults to true.
type chatsFilters struct {
	IncludeActive              *bool                                `json:"include_active,omitempty"`
	IncludeChatsWithoutThreads bool                                 `json:"include_chats_without_threads,omitempty"`
	GroupIDs                   []int                                `json:"group_ids,omitempty"`
	Properties                 map[string]map[string]propertyFilter `json:"properties,omitempty"`
}

// chatsPage is what a list_chats page ID carries: LiveChat takes filters
// and order only with the first request, and the page remembers them. The
// cursor is the sequence of the last chat shown (or the first, for a
// previous page), so chats started meanwhile do not shift the pages.
type chatsPage struct {
	Order   string        `json:"o"`
	Cursor  uint64        `json:"c"`
	Back    bool          `json:"b,omitempty"`
	Limit   int           `json:"l"`
	Filters *chatsFilters `json:"f,omitempty"`
}

func (p chatsPage) encode() string {
	b, _ := json.Marshal(p)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeChatsPage(id string) (chatsPage, bool) {
	var p chatsPage
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || json.Unmarshal(b, &p) != nil || (p.Order != "asc" && p.Order != "desc") || p.Limit < 1 || p.Limit > 100 {
		return chatsPage{}, false
	}
	return p, true
}

// matches reports whether the chat passes f. Call with the chat locked.
func (f *chatsFilters) matches(ch *chat) bool {
	if f == nil {
		return true
	}
	if f.IncludeActive != nil && !*f.IncludeActive && ch.active() {
		return false
	}
	if len(f.GroupIDs) > 0 && !slices.ContainsFunc(ch.groupIDs, func(g int) bool { return slices.Contains(f.GroupIDs, g) }) {
		return false
	}
	for ns, keys := range f.Properties {
		for key, cond := range keys {
			v, ok := ch.props[ns][key]
			if cond.Exists != nil && ok != *cond.Exists {
				return false
			}
			if len(cond.Values) > 0 && (!ok || !containsJSON(cond.Values, v)) {
				return false
			}
			if len(cond.ExcludeValues) > 0 && ok && containsJSON(cond.ExcludeValues, v) {
				return false
			}
		}
	}
	return true
}

// containsJSON compares as JSON values, so 1 and 1.0 are equal.
func containsJSON(list []any, v any) bool {
	want, _ := json.Marshal(v)
	for _, x := range list {
		if b, _ := json.Marshal(x); string(b) == string(want) {
			return true
		}
	}
	return false
}

func (s *Sim) agentListChats(c *call) (any, *apiError) {
	var req struct {
		Filters   *chatsFilters `json:"filters"`
		SortOrder string        `json:"sort_order"`
		Limit     *int          `json:"limit"`
		PageID    string        `json:"page_id"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	page := chatsPage{Order: req.SortOrder, Limit: 10, Filters: req.Filters}
	if req.PageID != "" {
		var ok bool
		if page, ok = decodeChatsPage(req.PageID); !ok {
			return nil, errValidation("Invalid `page_id`")
		}
	} else {
		if page.Order == "" {
			page.Order = "desc"
		}
		if page.Order != "asc" && page.Order != "desc" {
			return nil, errValidation("`sort_order` must be asc or desc")
		}
		if req.Limit != nil {
			page.Limit = *req.Limit
		}
		if page.Limit < 1 || page.Limit > 100 {
			return nil, errValidation("`limit` must be between 1 and 100")
		}
	}
	all := s.chats.values()
	slices.SortFunc(all, func(a, b *chat) int {
		if page.Order == "desc" {
			a, b = b, a
		}
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	type row struct {
		ch  *chat
		seq uint64
	}
	var list []row
	for _, ch := range all {
		ch.mu.Lock()
		ok := (len(ch.threads) > 0 || (page.Filters != nil && page.Filters.IncludeChatsWithoutThreads)) && page.Filters.matches(ch)
		ch.mu.Unlock()
		if ok {
			list = append(list, row{ch, ch.seq})
		}
	}
	// before reports whether seq a comes before b in the page's order.
	before := func(a, b uint64) bool {
		if page.Order == "desc" {
			return a > b
		}
		return a < b
	}
	start, end := 0, len(list)
	switch {
	case req.PageID != "" && !page.Back:
		start = slices.IndexFunc(list, func(r row) bool { return before(page.Cursor, r.seq) })
		if start < 0 {
			start = len(list)
		}
		end = min(start+page.Limit, len(list))
	case req.PageID != "":
		end = slices.IndexFunc(list, func(r row) bool { return !before(r.seq, page.Cursor) })
		if end < 0 {
			end = len(list)
		}
		start = max(0, end-page.Limit)
	default:
		end = min(page.Limit, len(list))
	}
	out := make([]map[string]any, 0, end-start)
	for _, r := range list[start:end] {
		out = append(out, s.agentChatSummary(r.ch))
	}
	ans := map[string]any{"chats_summary": out, "found_chats": len(list)}
	if end < len(list) && end > start {
		p := page
		p.Cursor, p.Back = list[end-1].seq, false
		ans["next_page_id"] = p.encode()
	}
	if start > 0 && end > start {
		p := page
		p.Cursor, p.Back = list[start].seq, true
		ans["previous_page_id"] = p.encode()
	}
	return ans, nil
}

// agentChatSummary is one list_chats entry as an agent sees it.
func (s *Sim) agentChatSummary(ch *chat) map[string]any {
	view := s.customerView(ch.customerID)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	item := map[string]any{
		"id":          ch.id,
		"users":       s.users(view, ch),
		"access":      wireAccess{GroupIDs: ch.groupIDs},
		"properties":  ch.props,
		"is_followed": false,
		"order":       ch.seq,
	}
	if t := ch.last(); t != nil {
		sum := map[string]any{"id": t.id, "active": t.active, "created_at": fmtTime(t.createdAt),
			"user_ids": append([]string{ch.customerID}, t.agents...), "access": wireAccess{GroupIDs: ch.groupIDs},
			"properties": t.props}
		if q := s.queueOf(t); q != nil {
			sum["queue"] = q
		}
		item["last_thread_summary"] = sum
	}
	last := map[string]any{}
	for _, t := range ch.threads {
		for _, ev := range t.events {
			last[ev.Type] = map[string]any{"thread_id": t.id, "thread_created_at": fmtTime(t.createdAt), "event": ev.agentWire()}
		}
	}
	item["last_event_per_type"] = last
	return item
}

func (s *Sim) agentGetChat(c *call) (any, *apiError) {
	var req struct {
		ChatID   string `json:"chat_id"`
		ThreadID string `json:"thread_id"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	ch, e := s.anyChat(req.ChatID)
	if e != nil {
		return nil, e
	}
	return s.renderChat(ch, req.ThreadID, true)
}

// renderChat is get_chat's answer for either side.
func (s *Sim) renderChat(ch *chat, threadID string, agentSide bool) (any, *apiError) {
	cu := s.customerView(ch.customerID)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	idx := len(ch.threads) - 1
	if threadID != "" {
		idx = slices.IndexFunc(ch.threads, func(t *thread) bool { return t.id == threadID })
		if idx < 0 {
			return nil, errNotFound("Thread not found")
		}
	}
	out := map[string]any{
		"id":         ch.id,
		"users":      s.users(cu, ch),
		"access":     wireAccess{GroupIDs: ch.groupIDs},
		"properties": ch.props,
	}
	if idx >= 0 {
		out["thread"] = s.renderThread(ch, idx, agentSide)
	}
	if agentSide {
		out["is_followed"] = false
	}
	return out, nil
}

func (s *Sim) agentListThreads(c *call) (any, *apiError) {
	var req listThreadsRequest
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	ch, e := s.anyChat(req.ChatID)
	if e != nil {
		return nil, e
	}
	return s.pageThreads(ch, &req, true)
}

func (s *Sim) agentSendEvent(c *call) (any, *apiError) {
	var req sendEventRequest
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if req.Event == nil {
		return nil, errValidation("`event` is required")
	}
	if req.Event.Recipients != "" {
		return nil, errValidation("`event.recipients` is a customer field; agents set `event.visibility`")
	}
	if e := validateEvent(req.Event, -1); e != nil {
		return nil, e
	}
	ch, e := s.anyChat(req.ChatID)
	if e != nil {
		return nil, e
	}
	id, e := s.sendAsAgent(ch, c.agent, req.Event, req.AttachToLastThread)
	if e != nil {
		return nil, e
	}
	return map[string]string{"event_id": id}, nil
}

// sendAsAgent files ev in the chat's last thread as written by agent, who
// joins the thread, and fires incoming_event webhooks. The Agent Chat
// API's send_event and the control API's agent_message both end here.
func (s *Sim) sendAsAgent(ch *chat, agent string, ev *inEvent, attach bool) (string, *apiError) {
	ch.mu.Lock()
	t := ch.last()
	if t == nil || (!t.active && !attach) {
		ch.mu.Unlock()
		return "", &apiError{Type: "chat_inactive", Message: "Chat is inactive"}
	}
	var d []delivery
	if t.active && !t.hasAgent(agent) {
		t.join(agent)
		s.queue.update(t)
		d = s.agentJoined(ch, t, agent)
	}
	stored := s.addEvent(t, ev, agent)
	d = append(d, s.eventDeliveries(ch, t, stored, "agent")...)
	ch.mu.Unlock()
	s.enqueue(d)
	return stored.ID, nil
}

func (s *Sim) transferChat(c *call) (any, *apiError) {
	var req struct {
		ID     string `json:"id"`
		Target *struct {
			Type string            `json:"type"`
			IDs  []json.RawMessage `json:"ids"`
		} `json:"target"`
		IgnoreAgentsAvailability bool `json:"ignore_agents_availability"`
		IgnoreRequesterPresence  bool `json:"ignore_requester_presence"`
		Force                    bool `json:"force"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if req.ID == "" {
		return nil, errValidation("`id` is required")
	}
	if req.Target == nil || len(req.Target.IDs) == 0 {
		return nil, errValidation("`target.ids` is required")
	}
	var groups []int
	var agentIDs []string
	switch req.Target.Type {
	case "group":
		for _, raw := range req.Target.IDs {
			g, err := strconv.Atoi(string(raw))
			if err != nil {
				return nil, errValidation("`target.ids` of a group target are group numbers")
			}
			if g < 0 {
				return nil, &apiError{Type: "group_not_found", Message: "Group not found"}
			}
			groups = append(groups, g)
		}
	case "agent":
		for _, raw := range req.Target.IDs {
			var id string
			if json.Unmarshal(raw, &id) != nil {
				return nil, errValidation("`target.ids` of an agent target are agent IDs")
			}
			if _, ok := agents[id]; !ok {
				return nil, errNotFound("Agent not found: " + id)
			}
			agentIDs = append(agentIDs, id)
		}
	default:
		return nil, errValidation("`target.type` must be agent or group")
	}
	ch, e := s.anyChat(req.ID)
	if e != nil {
		return nil, e
	}
	if s.faults.Load().AgentsOffline && !req.IgnoreAgentsAvailability && !req.Force {
		return nil, &apiError{Type: "group_offline", Message: "No agent available in the target"}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	t := ch.last()
	if t == nil || !t.active {
		return nil, &apiError{Type: "chat_inactive", Message: "Chat is inactive"}
	}
	if groups != nil {
		// The chat goes back to the target group's queue.
		ch.groupIDs = groups
		t.agents = nil
		t.queuedAt = s.now()
		s.queue.requeue(t)
	} else {
		t.agents = agentIDs
		s.queue.update(t)
	}
	return struct{}{}, nil
}

func (s *Sim) agentDeactivateChat(c *call) (any, *apiError) {
	var req struct {
		ID string `json:"id"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	if req.ID == "" {
		return nil, errValidation("`id` is required")
	}
	ch, e := s.anyChat(req.ID)
	if e != nil {
		return nil, e
	}
	if e := s.endThread(ch, c.agent); e != nil {
		return nil, e
	}
	return struct{}{}, nil
}

// endThread deactivates the chat's thread and fires chat_deactivated,
// naming by as the user who closed it ("" for LiveChat's router). The
// Agent Chat API's deactivate_chat and the control API's close both end
// here.
func (s *Sim) endThread(ch *chat, by string) *apiError {
	ch.mu.Lock()
	t := ch.last()
	if t == nil || !t.active {
		ch.mu.Unlock()
		return &apiError{Type: "chat_inactive", Message: "Chat is inactive"}
	}
	t.active = false
	s.queue.update(t)
	payload := map[string]string{"chat_id": ch.id, "thread_id": t.id}
	if by != "" {
		payload["user_id"] = by
	}
	d := s.deliveriesFor("chat_deactivated", ch, payload, func(*webhookReg) bool { return true })
	ch.mu.Unlock()
	s.enqueue(d)
	return nil
}

func (s *Sim) addUserToChat(c *call) (any, *apiError) {
	var req struct {
		ChatID                  string `json:"chat_id"`
		UserID                  string `json:"user_id"`
		UserType                string `json:"user_type"`
		Visibility              string `json:"visibility"`
		IgnoreRequesterPresence bool   `json:"ignore_requester_presence"`
	}
	if e := decodeBody(c.body, &req); e != nil {
		return nil, e
	}
	switch {
	case req.UserID == "":
		return nil, errValidation("`user_id` is required")
	case req.UserType == "customer":
		return nil, &apiError{Type: "not_allowed", Message: "A chat has one customer"}
	case req.UserType != "agent":
		return nil, errValidation("`user_type` must be agent or customer")
	case req.Visibility != "" && req.Visibility != "all" && req.Visibility != "agents":
		return nil, errValidation("`visibility` must be all or agents")
	}
	if _, ok := agents[req.UserID]; !ok {
		return nil, errNotFound("Agent not found: " + req.UserID)
	}
	ch, e := s.anyChat(req.ChatID)
	if e != nil {
		return nil, e
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	t := ch.last()
	if t == nil || !t.active {
		return nil, &apiError{Type: "chat_inactive", Message: "Chat is inactive"}
	}
	var d []delivery
	if !t.hasAgent(req.UserID) {
		t.join(req.UserID)
		s.queue.update(t)
		d = s.agentJoined(ch, t, req.UserID)
	}
	// Sent after the chat's lock is released (deferred above).
	defer s.enqueue(d)
	return struct{}{}, nil
}
