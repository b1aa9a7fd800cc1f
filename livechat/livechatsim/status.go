package livechatsim

// What LiveChat tells an integration about who has a chat, as webhooks:
// incoming_chat when a chat starts or resumes (its thread carries queue
// while nobody took it), user_added_to_chat when an agent joins, and a
// system_message routing.archived_offline (then the thread is archived)
// when no agent can be found. See
// https://platform.text.com/docs/management/webhooks and
// https://platform.text.com/docs/messaging/references/system-messages.

// startChatNotify is start_chat followed by its webhooks.
func (s *Sim) startChatNotify(c *call) (any, *apiError) {
	out, e := s.startChat(c)
	if e == nil {
		if m, ok := out.(map[string]any); ok {
			id, _ := m["chat_id"].(string)
			s.chatOpened(id)
		}
	}
	return out, e
}

// resumeChatNotify is resume_chat followed by its webhooks.
func (s *Sim) resumeChatNotify(c *call) (any, *apiError) {
	var req startChatRequest
	_ = decodeBody(c.body, &req)
	out, e := s.resumeChat(c)
	if e == nil && req.Chat != nil {
		s.chatOpened(req.Chat.ID)
	}
	return out, e
}

// chatOpened fires incoming_chat for the chat's new thread and, when every
// agent is offline, archives the thread the way LiveChat's router does: a
// routing.archived_offline system message, then chat_deactivated without a
// user.
func (s *Sim) chatOpened(chatID string) {
	ch, ok := s.chats.get(chatID)
	if !ok || s.nHooks.Load() == 0 {
		return
	}
	body, e := s.renderChat(ch, "", true)
	if e != nil {
		return
	}
	ch.mu.Lock()
	d := s.deliveriesFor("incoming_chat", ch, map[string]any{"chat": body}, func(*webhookReg) bool { return true })
	ch.mu.Unlock()
	s.enqueue(d)
	if !s.faults.Load().AgentsOffline {
		return
	}
	ch.mu.Lock()
	t := ch.last()
	if t == nil || !t.active {
		ch.mu.Unlock()
		return
	}
	ev := s.addEvent(t, &inEvent{Type: "system_message", Text: "Chat archived: no agent was available",
		SystemMessageType: "routing.archived_offline", Recipients: "all"}, "")
	d = s.eventDeliveries(ch, t, ev, "")
	ch.mu.Unlock()
	// LiveChat archives after the notice: the notice is delivered (with
	// its retries) before the thread ends, off the caller's request.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for _, x := range d {
			s.deliver(x)
		}
		_ = s.endThread(ch, "")
	}()
}

// agentJoined fires user_added_to_chat for an agent who just joined t.
// Call with the chat locked.
func (s *Sim) agentJoined(ch *chat, t *thread, agent string) []delivery {
	a := agentProfile(agent)
	payload := map[string]any{
		"chat_id":   ch.id,
		"thread_id": t.id,
		"user": wireUser{ID: agent, Type: "agent", Name: a.Name, Email: agent, Avatar: a.Avatar,
			JobTitle: a.JobTitle, Present: true},
		"user_type": "agent",
	}
	return s.deliveriesFor("user_added_to_chat", ch, payload, func(*webhookReg) bool { return true })
}
