package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
)

// turn is one user turn as any bot surface delivers it, after decoding:
// what the gateway needs to decide between answering nothing (the bot
// handles it), requesting a handoff, forwarding to the agent or cancelling.
type turn struct {
	channel      handoff.Channel
	conversation string
	replyTo      string
	// turnID is the surface's own ID of this turn (Dialogflow's response
	// ID, a Chat message name). Event IDs are derived from it so a retried
	// webhook call is applied once (the worker drops a copy by its ID even
	// when JetStream stored it again); "" means no deduplication is possible.
	turnID   string
	lang     string
	text     string
	botText  []string
	customer handoff.Customer
	// trigger is set by the surface's own rules (intent, tag,
	// live_agent_handoff, card); phrases are checked here.
	trigger string
	reason  string
	// metadata is CX's liveAgentHandoff metadata, whole: echoed in the
	// answer and passed to LiveChat as customer session fields.
	metadata map[string]any
	// cancel is an explicit cancel (tag, intent, card) with its reason.
	cancel       bool
	cancelReason string
}

type outcomeKind int

const (
	// outcomeBot: nothing for the gateway; the bot answers as usual.
	outcomeBot outcomeKind = iota
	// outcomeHandoff: handoff.requested published, conversation pending.
	outcomeHandoff
	// outcomeForwarded: an agent owns the chat; the turn went to them.
	outcomeForwarded
	// outcomeCancelled: handoff.cancelled published, back to the bot.
	outcomeCancelled
	// outcomeLimited: a limit refused the turn; text tells the user, and
	// the mode is unchanged (withAgent says which it is).
	outcomeLimited
	// outcomeBackToBot: the first Dialogflow turn after the agent closed
	// the chat: the conversation is the bot's again (closed -> bot); the
	// answer clears the agent context and says so (text).
	outcomeBackToBot
)

type outcome struct {
	kind    outcomeKind
	receipt publisher.Receipt
	eventID string
	// text and withAgent: for outcomeLimited.
	text      string
	withAgent bool
}

// turnTTL is how long a turn ID is remembered for the transcript, well
// beyond any webhook retry.
const turnTTL = 15 * time.Minute

// deriveID is handoff.DerivedID: one namespace for every derived ID, so
// the worker's sweep derives the same IDs as the webhook relay.
func deriveID(parts ...string) string { return handoff.DerivedID(parts...) }

// eventID is the ID of the (single) event a turn publishes. It does not
// depend on the event type: a retry of the handoff turn that arrives after
// the conversation became pending is then dropped as a duplicate instead
// of being forwarded as a message.
func (t *turn) eventID() string {
	if t.turnID == "" {
		return handoff.NewID()
	}
	return deriveID(string(t.channel), t.conversation, t.turnID)
}

// process decides what a turn means and publishes at most one event for
// it. Every publish is acknowledged by JetStream before process returns.
func (g *Gateway) process(ctx context.Context, t turn) (outcome, error) {
	if err := checkConversationID(t.conversation); err != nil {
		return outcome{}, err
	}
	if err := checkChannel(t); err != nil {
		return outcome{}, err
	}
	conv, err := g.st.Conversation(ctx, t.conversation)
	if err != nil {
		return outcome{}, fmt.Errorf("read conversation: %w", err)
	}
	withAgent := conv.Mode.WithAgent()
	if !t.cancel && withAgent {
		if _, ok := g.cancel.match(t.lang, t.text); ok {
			t.cancel, t.cancelReason = true, TriggerPhrase
		}
	}
	if !t.cancel && !withAgent && t.trigger == "" {
		if _, ok := g.handoff.match(t.lang, t.text); ok {
			t.trigger = TriggerPhrase
		}
	}
	id := t.eventID()
	// A copy of a turn that already requested a handoff or cancelled one
	// (Dialogflow retries a call it got no answer to in time) finds the
	// mode that turn left behind: it would be forwarded to the agent, or
	// handed to the bot. It gets the first copy's answer instead. The
	// outcome is written before the mode changes and read after the mode
	// was read, so a copy that sees the new mode also sees the outcome.
	replayed, err := g.turnOutcome(ctx, &t, id)
	if err != nil {
		return outcome{}, err
	}
	switch {
	case t.cancel:
		rcpt, err := g.timed(ctx, func(ctx context.Context) (publisher.Receipt, error) {
			return g.pub.CancelHandoff(ctx, t.conversation, handoff.HandoffCancelled{Reason: t.cancelReason}, publisher.WithID(id))
		})
		if err != nil {
			return outcome{}, err
		}
		if err := g.rememberOutcome(ctx, t, id, turnCancelled); err != nil {
			return outcome{}, err
		}
		if err := g.setMode(ctx, t.conversation, handoff.ModeBot, nil); err != nil {
			return outcome{}, err
		}
		return outcome{kind: outcomeCancelled, receipt: rcpt, eventID: id}, nil

	case withAgent && !replayed:
		if strings.TrimSpace(t.text) == "" {
			// An event or button with nothing to say: nothing to forward.
			return outcome{kind: outcomeForwarded}, nil
		}
		if err := g.lim.admitMessage(t.conversation); err != nil {
			return outcome{kind: outcomeLimited, text: g.reply(g.cfg.SlowDownReply, t.lang), withAgent: true}, nil
		}
		rcpt, err := g.timed(ctx, func(ctx context.Context) (publisher.Receipt, error) {
			return g.pub.SendUserMessage(ctx, t.conversation, handoff.UserMessage{Text: clip(t.text, handoff.MaxMessageBytes)}, publisher.WithID(id))
		})
		if err != nil {
			return outcome{}, err
		}
		return outcome{kind: outcomeForwarded, receipt: rcpt, eventID: id}, nil

	case t.trigger != "":
		if replayed {
			// Admitted when it was first seen: a retry is not a new one.
		} else if err := g.lim.admitHandoff(ctx, string(t.channel), g.st.CountByMode); err != nil {
			var le *limitError
			if errors.As(err, &le) {
				// To the user, a limit is the same as no agent free.
				return outcome{kind: outcomeLimited, text: g.cfg.Texts.NoAgentsBot.For(t.lang)}, nil
			}
			return outcome{}, err
		}
		transcript, err := g.transcript(ctx, t)
		if err != nil {
			return outcome{}, err
		}
		reason := t.reason
		if reason == "" {
			reason = t.trigger
		}
		req := handoff.HandoffRequested{
			Customer:   withMetadata(t.customer, t.metadata),
			Transcript: transcript,
			Group:      g.group(t.lang),
			Reason:     reason,
			Language:   t.lang,
			ReplyTo:    handoff.ReplyTo{Channel: t.channel, Address: t.replyTo},
			Text:       clip(t.text, handoff.MaxMessageBytes),
		}
		rcpt, err := g.requestHandoff(ctx, t.conversation, req, t.trigger, id, func(ctx context.Context) error {
			return g.rememberOutcome(ctx, t, id, turnHandoff+t.trigger)
		})
		if err != nil {
			return outcome{}, err
		}
		return outcome{kind: outcomeHandoff, receipt: rcpt, eventID: id}, nil

	default:
		if conv.Mode == handoff.ModeClosed && (t.channel == handoff.ChannelDialogflowES || t.channel == handoff.ChannelDialogflowCX) {
			// Dialogflow still holds the agent context (ES) or parameter
			// (CX) and would keep routing turns to its "agent owns this"
			// handlers: this answer clears them, once. The user sees the
			// closed text instead of the intent's reply, so that is what
			// the transcript keeps.
			closed := g.cfg.Texts.Closed.For(t.lang)
			t.botText = []string{closed}
			if err := g.recordTurn(ctx, t); err != nil {
				return outcome{}, err
			}
			if err := g.setModeFrom(ctx, t.conversation, handoff.ModeBot, handoff.ModeClosed); err != nil {
				return outcome{}, err
			}
			return outcome{kind: outcomeBackToBot, text: closed}, nil
		}
		if err := g.recordTurn(ctx, t); err != nil {
			return outcome{}, err
		}
		return outcome{kind: outcomeBot}, nil
	}
}

// Outcomes of a turn kept for its retries (turnOutcome): a handoff (with
// its trigger after the prefix) or a cancel.
const (
	turnHandoff   = "handoff:"
	turnCancelled = "cancelled"
)

func turnOutcomeKey(eventID string) string { return "gateway:turn-outcome:" + eventID }

// turnOutcome looks up what an earlier copy of this turn did and, if it
// requested or cancelled a handoff, sets t up to do the same again:
// publishing again is a duplicate of the same event ID, and the answer is
// the same. It reports whether the turn is such a copy.
func (g *Gateway) turnOutcome(ctx context.Context, t *turn, id string) (bool, error) {
	if t.turnID == "" {
		return false, nil
	}
	v, err := g.st.Value(ctx, turnOutcomeKey(id))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read turn outcome: %w", err)
	case v == turnCancelled:
		if !t.cancel {
			t.cancel, t.cancelReason = true, TriggerPhrase
		}
		return true, nil
	case strings.HasPrefix(v, turnHandoff):
		t.cancel = false
		if t.trigger == "" {
			t.trigger = strings.TrimPrefix(v, turnHandoff)
		}
		return true, nil
	}
	return false, nil
}

// rememberOutcome keeps a turn's outcome for its retries (turnTTL).
func (g *Gateway) rememberOutcome(ctx context.Context, t turn, id, v string) error {
	if t.turnID == "" {
		return nil
	}
	if err := g.st.SetValue(ctx, turnOutcomeKey(id), v, turnTTL); err != nil {
		return fmt.Errorf("remember turn outcome: %w", err)
	}
	return nil
}

// setModeFrom moves a conversation to mode if it is in from.
func (g *Gateway) setModeFrom(ctx context.Context, id string, mode, from handoff.Mode) error {
	_, err := g.st.UpdateConversation(ctx, id, func(c *handoff.Conversation) error {
		if c.Mode != from {
			return store.ErrAbort
		}
		c.Mode = mode
		return nil
	})
	if err != nil {
		return fmt.Errorf("set conversation %s: %w", mode, err)
	}
	return nil
}

// requestHandoff publishes a handoff request and then marks the
// conversation pending, so the very next turn is already forwarded. The
// order matters: marking first would swallow the user's turns into a
// handoff that was never requested if the publish failed.
//
// published, when not nil, runs between the two (see turnOutcome).
func (g *Gateway) requestHandoff(ctx context.Context, conversation string, req handoff.HandoffRequested, trigger, id string, published func(context.Context) error) (publisher.Receipt, error) {
	rcpt, err := g.timed(ctx, func(ctx context.Context) (publisher.Receipt, error) {
		return g.pub.RequestHandoff(ctx, conversation, req, publisher.WithID(id))
	})
	if err != nil {
		return publisher.Receipt{}, err
	}
	if !rcpt.Duplicate {
		g.m.handoffs.WithLabelValues(trigger).Inc()
	}
	if published != nil {
		if err := published(ctx); err != nil {
			return publisher.Receipt{}, err
		}
	}
	if err := g.setMode(ctx, conversation, handoff.ModePending, &req); err != nil {
		// The event is stored; a retry with the same ID is dropped as a
		// duplicate and marks the conversation again.
		return publisher.Receipt{}, err
	}
	return rcpt, nil
}

// setMode moves a conversation to pending (unless an agent already owns
// it) or back to bot (if an agent owned it). A handoff request's reply_to
// and language are kept for the way back.
func (g *Gateway) setMode(ctx context.Context, id string, mode handoff.Mode, req *handoff.HandoffRequested) error {
	_, err := g.st.UpdateConversation(ctx, id, func(c *handoff.Conversation) error {
		switch mode {
		case handoff.ModePending:
			if c.Mode.WithAgent() {
				return store.ErrAbort
			}
		case handoff.ModeBot:
			if !c.Mode.WithAgent() {
				return store.ErrAbort
			}
		}
		c.Mode = mode
		if req != nil && req.ReplyTo.Channel != "" {
			c.ReplyTo = req.ReplyTo
		}
		if req != nil && req.Language != "" {
			c.Language = req.Language
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set conversation %s: %w", mode, err)
	}
	return nil
}

// timed publishes and records how long JetStream took to acknowledge.
func (g *Gateway) timed(ctx context.Context, publish func(context.Context) (publisher.Receipt, error)) (publisher.Receipt, error) {
	start := time.Now()
	rcpt, err := publish(ctx)
	g.m.publish.Observe(time.Since(start).Seconds())
	return rcpt, err
}

// transcript is what the agent sees when the chat opens, before the
// handoff's text: the turns the gateway recorded for this conversation.
// Nothing of the current turn: the user's words are the handoff's text,
// which the worker sends after the transcript (as a line too, the agent
// would read them twice), and the bot's reply for this turn is the one the
// gateway replaces with its handoff reply, so the user never saw it.
func (g *Gateway) transcript(ctx context.Context, t turn) ([]handoff.TranscriptEntry, error) {
	var out []handoff.TranscriptEntry
	if g.cfg.TranscriptTurns > 0 {
		turns, err := g.st.Turns(ctx, t.conversation)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("read transcript: %w", err)
		}
		out = append(out, turns...)
	}
	if n := len(out) - handoff.MaxTranscriptLen; n > 0 {
		out = out[n:]
	}
	return out, nil
}

// recordTurn stores a bot-handled turn for a later handoff's transcript.
// A retried webhook call is recorded once (Remember on the turn ID).
func (g *Gateway) recordTurn(ctx context.Context, t turn) error {
	entries := t.entries(g.now())
	if g.cfg.TranscriptTurns == 0 || len(entries) == 0 {
		return nil
	}
	key := ""
	if t.turnID != "" {
		key = "gateway:turn:" + t.eventID()
		first, err := g.st.Remember(ctx, key, turnTTL)
		if err != nil {
			return fmt.Errorf("remember turn: %w", err)
		}
		if !first {
			return nil
		}
	}
	for _, e := range entries {
		if err := g.st.AppendTurn(ctx, t.conversation, e, g.cfg.TranscriptTurns); err != nil {
			if key != "" {
				// Let the retry record it; a partial append at worst
				// repeats one line of transcript.
				_ = g.st.Forget(context.WithoutCancel(ctx), key)
			}
			return fmt.Errorf("record turn: %w", err)
		}
	}
	return nil
}

func (t *turn) entries(now time.Time) []handoff.TranscriptEntry {
	now = now.UTC()
	var out []handoff.TranscriptEntry
	if s := strings.TrimSpace(t.text); s != "" {
		out = append(out, handoff.TranscriptEntry{Author: handoff.AuthorUser, Text: clip(s, handoff.MaxMessageBytes), Time: now})
	}
	for _, b := range t.botText {
		if s := strings.TrimSpace(b); s != "" {
			out = append(out, handoff.TranscriptEntry{Author: handoff.AuthorBot, Text: clip(s, handoff.MaxMessageBytes), Time: now})
		}
	}
	return out
}

// metadataReserved are session fields the worker sets itself; metadata
// must not pass for them (a "conversation" key would mislead the agent
// about whose chat this is). The reason travels as the handoff's reason.
var metadataReserved = map[string]bool{"reason": true, "conversation": true, "handoff_reason": true, "language": true}

// withMetadata adds a handoff's free-form metadata (CX's liveAgentHandoff
// metadata, e.g. {"queue":"billing"}) to the customer's fields, which
// LiveChat shows the agent as the customer's session fields. Strings go
// as they are, other values as their JSON; bounded like every field.
func withMetadata(c handoff.Customer, metadata map[string]any) handoff.Customer {
	if len(metadata) == 0 {
		return c
	}
	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fields := make(map[string]string, len(c.Fields)+len(keys))
	for k, v := range c.Fields {
		fields[k] = v
	}
	for _, k := range keys {
		if len(fields) >= handoff.MaxCustomerFields {
			break
		}
		name := clip(strings.TrimSpace(k), 256)
		if name == "" || metadataReserved[name] {
			continue
		}
		if _, ok := fields[name]; ok {
			continue
		}
		var val string
		switch v := metadata[k].(type) {
		case string:
			val = v
		case nil:
			continue
		default:
			b, err := json.Marshal(v)
			if err != nil {
				continue
			}
			val = string(b)
		}
		fields[name] = clip(val, 1024)
	}
	if len(fields) > 0 {
		c.Fields = fields
	}
	return c
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// checkConversationID applies the event subject rules up front, so a bad
// ID is a 400 naming the field, not a failed publish.
func checkConversationID(id string) error {
	switch {
	case id == "":
		return badRequest("conversation ID is missing")
	case len(id) > handoff.MaxSubjectBytes:
		return badRequest("conversation ID is %d bytes, more than %d", len(id), handoff.MaxSubjectBytes)
	case !utf8.ValidString(id):
		return badRequest("conversation ID is not valid UTF-8")
	case strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return badRequest("conversation ID contains control characters")
	}
	return nil
}

// customerFrom reads the customer's name and email from session
// parameters. Dialogflow's @sys.person entity arrives as {"name": "..."},
// so a map with a "name" or "original" string is accepted too.
func customerFrom(params map[string]any, nameKey, emailKey string) handoff.Customer {
	return handoff.Customer{Name: paramString(params[nameKey]), Email: paramString(params[emailKey])}
}

func paramString(v any) string {
	switch x := v.(type) {
	case string:
		return clip(strings.TrimSpace(x), 256)
	case map[string]any:
		for _, k := range []string{"name", "original"} {
			if s, ok := x[k].(string); ok {
				return clip(strings.TrimSpace(s), 256)
			}
		}
	}
	return ""
}
