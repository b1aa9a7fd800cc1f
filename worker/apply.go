package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/livechat"
)

// apply performs one event's LiveChat calls and records the outcome.
// uncertain means an earlier attempt may have reached LiveChat, so every
// message is looked up by custom_id before it is sent.
func (w *Worker) apply(ctx context.Context, it *ordered.Delivery, ev handoff.Event, payload any, uncertain bool) error {
	rec, err := w.st.Conversation(ctx, ev.Subject)
	if err != nil {
		return err
	}
	if w.appliedBefore(rec, it.Pos) || rec.Applied.Has(ev.ID) {
		// The second test catches a copy of an applied event under a new
		// sequence: published again after a NATS restart (JetStream forgot
		// the Msg-Id with the deleted original) or under another Msg-Id.
		return errAlreadyApplied
	}
	// An attempt that called LiveChat and ended unrecorded says so in the
	// record (rememberTouched), whatever JetStream remembers of it.
	uncertain = uncertain || slices.Contains(rec.Touched, ev.ID)
	switch p := payload.(type) {
	case *handoff.HandoffRequested:
		return w.applyHandoff(ctx, it, ev, rec, p, uncertain)
	case *handoff.UserMessage:
		return w.applyMessage(ctx, it, ev, rec, p, uncertain)
	case *handoff.HandoffCancelled:
		return w.applyCancel(ctx, it, ev, rec, p, uncertain)
	}
	return ordered.Permanent("unsupported_type", fmt.Errorf("event type %s does not belong on the inbound stream", ev.Type))
}

// chatLive reports whether the conversation has a chat an agent owns (or
// is queued for); only then do messages go to LiveChat.
func chatLive(c handoff.Conversation) bool {
	return c.ChatID != "" && (c.Mode == handoff.ModeQueued || c.Mode == handoff.ModeAgent)
}

// commit records the event as applied: its sequence and its ID, in the
// same compare-and-swap as the state change, so no crash can separate them.
// The LastSeq fence makes a late writer (whose message was redelivered
// elsewhere and applied) a no-op.
func (w *Worker) commit(ctx context.Context, it *ordered.Delivery, ev handoff.Event, rec handoff.Conversation, change func(*handoff.Conversation)) error {
	applied := false
	now := time.Now()
	_, err := w.st.UpdateConversationFrom(ctx, rec, func(c *handoff.Conversation) error {
		if w.appliedBefore(*c, it.Pos) || c.Applied.Has(ev.ID) {
			applied = true
			return errAbort
		}
		change(c)
		c.LastSeq = it.Pos.Seq
		c.StreamEpoch = it.Pos.Epoch
		c.LastEventID = ev.ID
		c.Applied.Add(ev.ID, now, w.cfg.IdempotencyWindow)
		if slices.Contains(c.Touched, ev.ID) {
			c.Touched = slices.DeleteFunc(slices.Clone(c.Touched), func(id string) bool { return id == ev.ID })
		}
		return nil
	})
	if err != nil {
		return err
	}
	if applied {
		return errAlreadyApplied
	}
	return nil
}

// appliedBefore reports whether the record shows pos (or a later event of
// the same stream) as applied.
func (w *Worker) appliedBefore(c handoff.Conversation, pos ordered.Position) bool {
	return c.LastSeq >= pos.Seq && (c.StreamEpoch == pos.Epoch || c.StreamEpoch == 0)
}

func (w *Worker) group(g *int) int {
	if g != nil {
		return *g
	}
	return w.cfg.Group
}

func (w *Worker) applyHandoff(ctx context.Context, it *ordered.Delivery, ev handoff.Event, rec handoff.Conversation, p *handoff.HandoffRequested, uncertain bool) error {
	if chatLive(rec) {
		// Repeated "agent!" while a chat is open opens nothing new: the
		// words go to the agent as a message.
		if strings.TrimSpace(p.Text) != "" {
			if err := w.sendText(ctx, it, &rec, ev.ID, p.Text, uncertain); err != nil {
				return err
			}
		}
		return w.commit(ctx, it, ev, rec, func(c *handoff.Conversation) {
			c.ThreadID = rec.ThreadID
		})
	}

	rec, err := w.beginFunnel(ctx, it, ev, rec, p)
	if err != nil {
		return err
	}
	customerID, created, err := w.ensureCustomer(ctx, it, ev.Subject, rec)
	if err != nil {
		return err
	}
	tok, err := w.tokens.customer(ctx, customerID)
	if err != nil {
		return err
	}
	if err := w.updateCustomer(ctx, it, tok, ev, p); err != nil {
		return err
	}

	group := w.group(p.Group)
	if p.Group == nil && rec.Group != nil {
		group = *rec.Group
	}
	events := openingEvents(ev.ID, p, rec.Pending)

	// One customer has at most one chat, and this customer belongs to this
	// conversation only: whatever chat LiveChat lists is ours, whether an
	// earlier handoff or our own start_chat whose answer we never saw.
	chatID, threadID, active := rec.ChatID, rec.ThreadID, false
	if !created {
		var chats []livechat.ChatSummary
		err := w.call(ctx, it, func(ctx context.Context) error {
			var err error
			chats, err = w.lc.ListChats(ctx, tok, 1)
			return err
		})
		if err != nil {
			return w.tokenError(customerID, err)
		}
		if len(chats) > 0 {
			chatID, threadID, active = chats[0].ID, chats[0].LastThreadID, chats[0].Active
		}
	}

	switch {
	case chatID == "":
		var resp livechat.StartChatResponse
		err = w.call(ctx, it, func(ctx context.Context) error {
			var err error
			resp, err = w.lc.StartChat(ctx, tok, livechat.StartChatRequest{
				GroupID:    &group,
				Events:     events,
				Continuous: w.cfg.Continuous,
			})
			return err
		})
		if err != nil {
			return w.tokenError(customerID, err)
		}
		chatID, threadID = resp.ChatID, resp.ThreadID
	case active:
		// Already open (an uncertain start or resume went through, or the
		// chat was never closed): make sure every opening event is there.
		conv := rec
		conv.CustomerID, conv.ChatID, conv.ThreadID, conv.Group = customerID, chatID, threadID, &group
		for _, e := range events {
			if err := w.sendEvent(ctx, it, &conv, e, true); err != nil {
				return err
			}
		}
		threadID = conv.ThreadID
	default:
		var resp livechat.ResumeChatResponse
		err = w.call(ctx, it, func(ctx context.Context) error {
			var err error
			resp, err = w.lc.ResumeChat(ctx, tok, livechat.ResumeChatRequest{
				ChatID:     chatID,
				GroupID:    &group,
				Events:     events,
				Continuous: w.cfg.Continuous,
			})
			return err
		})
		if err != nil {
			return w.tokenError(customerID, err)
		}
		threadID = resp.ThreadID
	}
	w.log.Info("handoff opened", "conversation", ev.Subject, "chat", chatID, "thread", threadID, "group", group)
	var started funnelStep
	err = w.commit(ctx, it, ev, rec, func(c *handoff.Conversation) {
		started = funnelStep{}
		if c.Funnel != nil && c.Funnel.Handoff == ev.ID {
			f := *c.Funnel
			if d, ok := f.Reach(handoff.StageChatStarted, time.Now()); ok {
				c.Funnel, started = &f, funnelStep{f: &f, stage: handoff.StageChatStarted, since: d}
			}
		}
		c.Mode = handoff.ModeQueued
		c.CustomerID = customerID
		c.ChatID = chatID
		c.ThreadID = threadID
		c.Group = &group
		c.Pending = nil
		if p.ReplyTo.Channel != "" {
			c.ReplyTo = p.ReplyTo
		}
	})
	if err == nil {
		started.count(w.funnel)
	}
	return err
}

// openingEvents are the chat's first events: the bot transcript, the user
// messages kept while no chat was open, and what the user said when asking.
// Each carries a custom_id derived from the event ID so a repeated attempt
// can tell which already arrived.
func openingEvents(eventID string, p *handoff.HandoffRequested, pending []handoff.TranscriptEntry) []livechat.Event {
	var out []livechat.Event
	add := func(text string) {
		for _, part := range livechat.SplitText(text, livechat.MaxTextBytes) {
			out = append(out, livechat.Event{
				Type:       "message",
				Text:       part,
				Recipients: "all",
				CustomID:   fmt.Sprintf("%s/%d", eventID, len(out)),
			})
		}
	}
	for _, t := range p.Transcript {
		if strings.TrimSpace(t.Text) == "" {
			continue
		}
		add(transcriptLine(t))
	}
	for _, t := range pending {
		add(transcriptLine(t))
	}
	if strings.TrimSpace(p.Text) != "" {
		add(p.Text)
	}
	if len(out) == 0 {
		add("The customer asked to talk to an agent.")
	}
	return out
}

// transcriptLine labels bot turns: the customer's token authors every event
// we send, so the agent must be told which lines the bot said.
func transcriptLine(t handoff.TranscriptEntry) string {
	switch t.Author {
	case handoff.AuthorBot:
		return "[bot] " + t.Text
	case handoff.AuthorAgent:
		return "[agent] " + t.Text
	}
	return t.Text
}

// ensureCustomer returns the conversation's LiveChat customer, creating it
// on the first handoff. The ID is stored at once, so a crash before the
// chat opens still reuses this customer (the agent sees one person).
func (w *Worker) ensureCustomer(ctx context.Context, it *ordered.Delivery, conv string, rec handoff.Conversation) (id string, created bool, err error) {
	if rec.CustomerID != "" {
		return rec.CustomerID, false, nil
	}
	if err := it.CheckLease(); err != nil {
		return "", false, err
	}
	tok, err := w.tokens.newCustomer(ctx)
	if err != nil {
		return "", false, err
	}
	saved, err := w.st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
		if c.CustomerID != "" {
			return errAbort
		}
		c.CustomerID = tok.EntityID
		return nil
	})
	if err != nil {
		return "", false, err
	}
	return saved.CustomerID, saved.CustomerID == tok.EntityID, nil
}

func (w *Worker) updateCustomer(ctx context.Context, it *ordered.Delivery, tok string, ev handoff.Event, p *handoff.HandoffRequested) error {
	u := livechat.CustomerUpdate{Name: p.Customer.Name, Email: p.Customer.Email}
	fields := map[string]string{"conversation": ev.Subject}
	if p.Reason != "" {
		fields["handoff_reason"] = p.Reason
	}
	if p.Language != "" {
		fields["language"] = p.Language
	}
	for k, v := range p.Customer.Fields {
		fields[k] = v
	}
	for k, v := range fields {
		u.SessionFields = append(u.SessionFields, map[string]string{k: v})
	}
	err := w.call(ctx, it, func(ctx context.Context) error { return w.lc.UpdateCustomer(ctx, tok, u) })
	var le *livechat.Error
	if errors.As(err, &le) && le.Type == livechat.ErrTypeValidation {
		// A rejected e-mail address must not keep the user from an agent.
		w.log.Warn("LiveChat refused the customer details; opening the chat without them", "conversation", ev.Subject, "err", err)
		return nil
	}
	return err
}

func (w *Worker) applyMessage(ctx context.Context, it *ordered.Delivery, ev handoff.Event, rec handoff.Conversation, p *handoff.UserMessage, uncertain bool) error {
	text := p.Text
	if len(p.Attachments) > 0 {
		text = strings.TrimSpace(text + "\n" + strings.Join(p.Attachments, "\n"))
	}
	if !chatLive(rec) {
		// No chat yet (or any more): keep it, bounded, so the next handoff
		// opens with it.
		return w.commit(ctx, it, ev, rec, func(c *handoff.Conversation) {
			c.Pending = append(c.Pending, handoff.TranscriptEntry{Author: handoff.AuthorUser, Text: text, Time: ev.Time})
			if n := len(c.Pending) - w.cfg.PendingLimit; n > 0 {
				c.Pending = c.Pending[n:]
			}
		})
	}
	if err := w.sendText(ctx, it, &rec, ev.ID, text, uncertain); err != nil {
		return err
	}
	return w.commit(ctx, it, ev, rec, func(c *handoff.Conversation) {
		c.ThreadID = rec.ThreadID
	})
}

// sendText sends text to the conversation's chat, split at LiveChat's
// limit; each part's custom_id is the event ID (with #n when split).
func (w *Worker) sendText(ctx context.Context, it *ordered.Delivery, rec *handoff.Conversation, eventID, text string, uncertain bool) error {
	parts := livechat.SplitText(text, livechat.MaxTextBytes)
	for i, part := range parts {
		id := eventID
		if len(parts) > 1 {
			id = fmt.Sprintf("%s#%d", eventID, i)
		}
		e := livechat.Event{Type: "message", Text: part, Recipients: "all", CustomID: id}
		if err := w.sendEvent(ctx, it, rec, e, uncertain); err != nil {
			return err
		}
	}
	return nil
}

// sendEvent sends one event exactly once: when an earlier attempt may have
// reached LiveChat it looks for the custom_id first; an inactive chat is
// resumed with the event as its opening event.
func (w *Worker) sendEvent(ctx context.Context, it *ordered.Delivery, rec *handoff.Conversation, e livechat.Event, uncertain bool) error {
	tok, err := w.tokens.customer(ctx, rec.CustomerID)
	if err != nil {
		return err
	}
	if uncertain {
		var found bool
		err := w.call(ctx, it, func(ctx context.Context) error {
			var err error
			_, found, err = w.lc.FindEvent(ctx, tok, rec.ChatID, e.CustomID)
			return err
		})
		if err != nil {
			return w.tokenError(rec.CustomerID, err)
		}
		if found {
			w.m.reconciled.Inc()
			return nil
		}
	}
	err = w.call(ctx, it, func(ctx context.Context) error {
		_, err := w.lc.SendEvent(ctx, tok, rec.ChatID, e, false)
		return err
	})
	if err == nil || !livechat.IsChatInactive(err) {
		return w.tokenError(rec.CustomerID, err)
	}
	// The agent or the router closed the thread: the user is still talking
	// to a person as far as they know, so reopen it with this message.
	group := w.group(rec.Group)
	var resp livechat.ResumeChatResponse
	err = w.call(ctx, it, func(ctx context.Context) error {
		var err error
		resp, err = w.lc.ResumeChat(ctx, tok, livechat.ResumeChatRequest{
			ChatID: rec.ChatID, GroupID: &group, Events: []livechat.Event{e}, Continuous: w.cfg.Continuous,
		})
		return err
	})
	if err != nil {
		return w.tokenError(rec.CustomerID, err)
	}
	rec.ThreadID = resp.ThreadID
	w.log.Info("chat resumed", "conversation", rec.ID, "chat", rec.ChatID, "thread", resp.ThreadID)
	return nil
}

// CancelSystemMessageType is the system_message_type of the notice the
// agent sees when the user goes back to the bot. LiveChat lets an
// application name its own system messages
// (https://platform.text.com/docs/messaging/references/system-messages),
// and the Customer Chat API's send_event takes a system_message with a
// system_message_type and a text
// (https://platform.text.com/docs/messaging/customer-chat-api/data-structures#system-message).
const CancelSystemMessageType = "handoff_cancelled"

// cancelNotice is the text of that notice.
func cancelNotice(reason string) string {
	const text = "The customer went back to the bot and left this chat."
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return text
	}
	if r := []rune(reason); len(r) > 200 {
		reason = string(r[:200]) + "…"
	}
	return text + " (" + reason + ")"
}

// applyCancel tells the agent, with a system message in the chat, that
// the user went back to the bot, then ends the chat. The notice comes
// first: once the chat is inactive the customer can no longer write to
// it, and a chat that simply ended would look to the agent like a user
// who vanished.
func (w *Worker) applyCancel(ctx context.Context, it *ordered.Delivery, ev handoff.Event, rec handoff.Conversation, p *handoff.HandoffCancelled, uncertain bool) error {
	if chatLive(rec) {
		tok, err := w.tokens.customer(ctx, rec.CustomerID)
		if err != nil {
			return err
		}
		notice := livechat.Event{Type: livechat.EventSystemMessage, SystemMessageType: CancelSystemMessageType,
			Text: cancelNotice(p.Reason), CustomID: ev.ID + "/cancelled"}
		sent := false
		if uncertain {
			err := w.call(ctx, it, func(ctx context.Context) error {
				_, sent, err = w.lc.FindEvent(ctx, tok, rec.ChatID, notice.CustomID)
				return err
			})
			if err != nil {
				return w.tokenError(rec.CustomerID, err)
			}
		}
		if !sent {
			err = w.call(ctx, it, func(ctx context.Context) error {
				_, err := w.lc.SendEvent(ctx, tok, rec.ChatID, notice, false)
				return err
			})
			// An inactive chat has nobody to tell (and must not be
			// resumed for it).
			if err != nil && !livechat.IsChatInactive(err) {
				return w.tokenError(rec.CustomerID, err)
			}
		}
		err = w.call(ctx, it, func(ctx context.Context) error { return w.lc.DeactivateChat(ctx, tok, rec.ChatID) })
		if err != nil && !livechat.IsChatInactive(err) {
			return w.tokenError(rec.CustomerID, err)
		}
		w.log.Info("handoff cancelled", "conversation", ev.Subject, "chat", rec.ChatID)
	}
	reason := handoff.AbandonUserCancelled
	if p.Reason == handoff.CancelReasonNoAgents {
		reason = handoff.AbandonNoAgents
	}
	var ended funnelStep
	err := w.commit(ctx, it, ev, rec, func(c *handoff.Conversation) {
		ended = funnelStep{}
		if c.Funnel != nil {
			f := *c.Funnel
			if stage, d, ab := f.End(eventTime(ev), reason); stage != "" || ab != "" {
				c.Funnel, ended = &f, funnelStep{f: &f, stage: stage, since: d, abandoned: ab}
			}
		}
		c.Mode = handoff.ModeBot
	})
	if err == nil {
		ended.count(w.funnel)
	}
	return err
}

// call runs one LiveChat request behind the circuit breaker, after making
// sure this worker still holds the message.
func (w *Worker) call(ctx context.Context, it *ordered.Delivery, fn func(context.Context) error) error {
	if err := it.CheckLease(); err != nil {
		return err
	}
	if a, ok := ctx.Value(attemptKey{}).(*attemptCalls); ok {
		a.made.Store(true)
	}
	return w.breaker.do(ctx, fn)
}

// tokenError drops a customer token LiveChat refused, so the next attempt
// issues a new one for the same customer.
func (w *Worker) tokenError(customerID string, err error) error {
	if err != nil && livechat.IsAuthentication(err) {
		w.tokens.invalidateCustomer(customerID)
	}
	return err
}
