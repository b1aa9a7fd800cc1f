package gateway

import (
	"context"
	_ "embed"
	"net/http"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/publisher"
)

// The REST API addresses a conversation by its ID as one path segment,
// percent-escaped: "projects/p/agent/sessions/s1" is sent as
// /v1/conversations/projects%2Fp%2Fagent%2Fsessions%2Fs1/handoff (Go's
// url.PathEscape does this). The mux unescapes the segment, so any ID that
// is valid UTF-8 without control characters and at most 256 bytes works,
// including "..", "*", ">" and spaces.

// MaxIdempotencyKeyBytes bounds the Idempotency-Key header.
const MaxIdempotencyKeyBytes = handoff.MaxIDBytes

// accepted is the 202 body of the REST API's publishing calls.
type accepted struct {
	ID        string `json:"id"`
	Stream    string `json:"stream"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
	// StreamToken (handoff only) lets a browser read this conversation's
	// events at GET /v1/conversations/{id}/events?token=..., and nothing
	// else; set when the gateway has a stream token secret.
	StreamToken string `json:"stream_token,omitempty"`
}

// restEventID derives the event ID from the Idempotency-Key header, so a
// client that retries with the same key stores the event once. The key is
// scoped by event type and conversation: two conversations using the same
// key never swallow each other's events. Without the header a fresh ID is
// used (no deduplication).
func restEventID(r *http.Request, t handoff.EventType, conversation string) (string, error) {
	vals, ok := r.Header["Idempotency-Key"]
	if !ok {
		return handoff.NewID(), nil
	}
	if len(vals) != 1 {
		return "", badRequest("Idempotency-Key must be given once")
	}
	key := vals[0]
	switch {
	case key == "":
		return "", badRequest("Idempotency-Key is empty")
	case len(key) > MaxIdempotencyKeyBytes:
		return "", badRequest("Idempotency-Key is %d bytes, more than %d", len(key), MaxIdempotencyKeyBytes)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return "", badRequest("Idempotency-Key must be printable ASCII")
		}
	}
	return deriveID(string(handoff.ChannelREST), string(t), conversation, key), nil
}

// restConversation reads and checks the {id} path segment.
func restConversation(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if err := checkConversationID(id); err != nil {
		return "", err
	}
	return id, nil
}

func (g *Gateway) serveRESTHandoff(w http.ResponseWriter, r *http.Request) {
	id, err := restConversation(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	var req handoff.HandoffRequested
	if err := readJSON(r, &req, true); err != nil {
		g.fail(w, r, err)
		return
	}
	// Where the agent's answers go follows from the conversation, never
	// from the body: a body naming a Chat space would post an agent's words
	// into someone else's conversation.
	replyTo := handoff.ReplyTo{Channel: handoff.ChannelREST}
	if ch := channelOf(id); ch != handoff.ChannelREST {
		replyTo = handoff.ReplyTo{Channel: ch, Address: id}
	}
	if req.ReplyTo != (handoff.ReplyTo{}) && req.ReplyTo != replyTo && req.ReplyTo != (handoff.ReplyTo{Channel: replyTo.Channel}) {
		g.fail(w, r, badRequest("reply_to: set by the gateway from the conversation ID; leave it out"))
		return
	}
	req.ReplyTo = replyTo
	if req.Group == nil {
		req.Group = g.group(req.Language)
	}
	if req.Reason == "" {
		req.Reason = TriggerAPI
	}
	evID, err := restEventID(r, handoff.TypeHandoffRequested, id)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if err := g.lim.admitHandoff(r.Context(), g.apiKeyID(r), g.st.CountByMode); err != nil {
		g.fail(w, r, err)
		return
	}
	rcpt, err := g.requestHandoff(r.Context(), id, req, TriggerAPI, evID, nil)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, accepted{evID, rcpt.Stream, rcpt.Sequence, rcpt.Duplicate, g.StreamToken(id)})
}

func (g *Gateway) serveRESTMessage(w http.ResponseWriter, r *http.Request) {
	id, err := restConversation(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	var msg handoff.UserMessage
	if err := readJSON(r, &msg, false); err != nil {
		g.fail(w, r, err)
		return
	}
	evID, err := restEventID(r, handoff.TypeMessageUser, id)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if err := g.lim.admitMessage(id); err != nil {
		g.fail(w, r, err)
		return
	}
	rcpt, err := g.timed(r.Context(), func(ctx context.Context) (publisher.Receipt, error) {
		return g.pub.SendUserMessage(ctx, id, msg, publisher.WithID(evID))
	})
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, accepted{evID, rcpt.Stream, rcpt.Sequence, rcpt.Duplicate, ""})
}

func (g *Gateway) serveRESTCancel(w http.ResponseWriter, r *http.Request) {
	id, err := restConversation(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	var c handoff.HandoffCancelled
	if err := readJSON(r, &c, true); err != nil {
		g.fail(w, r, err)
		return
	}
	evID, err := restEventID(r, handoff.TypeHandoffCancelled, id)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	rcpt, err := g.timed(r.Context(), func(ctx context.Context) (publisher.Receipt, error) {
		return g.pub.CancelHandoff(ctx, id, c, publisher.WithID(evID))
	})
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if err := g.setMode(r.Context(), id, handoff.ModeBot, nil); err != nil {
		g.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, accepted{evID, rcpt.Stream, rcpt.Sequence, rcpt.Duplicate, ""})
}

// conversationView is what GET /v1/conversations/{id} shows: routing state,
// no LiveChat internals beyond the chat ID.
type conversationView struct {
	ID        string          `json:"id"`
	Mode      handoff.Mode    `json:"mode"`
	WithAgent bool            `json:"with_agent"`
	ChatID    string          `json:"chat_id,omitempty"`
	Group     *int            `json:"group,omitempty"`
	ReplyTo   handoff.ReplyTo `json:"reply_to,omitzero"`
	Version   int64           `json:"version"`
	Updated   time.Time       `json:"updated,omitzero"`
}

func (g *Gateway) serveRESTConversation(w http.ResponseWriter, r *http.Request) {
	id, err := restConversation(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	c, err := g.st.Conversation(r.Context(), id)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	mode := c.Mode
	if mode == "" {
		mode = handoff.ModeBot
	}
	writeJSON(w, http.StatusOK, conversationView{
		ID: id, Mode: mode, WithAgent: mode.WithAgent(), ChatID: c.ChatID,
		Group: c.Group, ReplyTo: c.ReplyTo, Version: c.Version, Updated: c.Updated,
	})
}

// openAPI is the REST API's OpenAPI 3 document, checked in as
// gateway/openapi.json and served at /v1/openapi.json.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}
