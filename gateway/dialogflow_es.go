package gateway

import (
	"net/http"
	"slices"
	"strings"

	"github.com/handoff-dev/handoff"
)

// esRequest is the part of a Dialogflow ES v2 WebhookRequest the gateway
// reads (protobuf JSON, lowerCamelCase). Other fields are ignored.
type esRequest struct {
	Session     string `json:"session"`
	ResponseID  string `json:"responseId"`
	QueryResult struct {
		QueryText           string         `json:"queryText"`
		LanguageCode        string         `json:"languageCode"`
		Parameters          map[string]any `json:"parameters"`
		FulfillmentText     string         `json:"fulfillmentText"`
		FulfillmentMessages []esMessage    `json:"fulfillmentMessages"`
		OutputContexts      []esContext    `json:"outputContexts"`
		Intent              struct {
			Name             string `json:"name"`
			DisplayName      string `json:"displayName"`
			LiveAgentHandoff bool   `json:"liveAgentHandoff"`
		} `json:"intent"`
	} `json:"queryResult"`
}

type esMessage struct {
	Text *esText `json:"text,omitempty"`
}

type esText struct {
	Text []string `json:"text"`
}

type esContext struct {
	Name          string         `json:"name"`
	LifespanCount int            `json:"lifespanCount"`
	Parameters    map[string]any `json:"parameters,omitempty"`
}

// esResponse is the WebhookResponse the gateway sends. An empty object
// leaves the agent's own response in place.
type esResponse struct {
	FulfillmentText     string      `json:"fulfillmentText,omitempty"`
	FulfillmentMessages []esMessage `json:"fulfillmentMessages,omitempty"`
	OutputContexts      []esContext `json:"outputContexts,omitempty"`
	FollowupEventInput  *esEvent    `json:"followupEventInput,omitempty"`
}

// decodeES parses an ES webhook request and checks what the gateway needs.
func decodeES(body []byte) (esRequest, error) {
	var req esRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return req, err
	}
	if strings.TrimSpace(req.Session) == "" {
		return req, badRequest("session is missing")
	}
	return req, nil
}

// esTurn maps an ES request to a turn using the configured rules.
func (g *Gateway) esTurn(req esRequest) turn {
	qr := req.QueryResult
	t := turn{
		channel:      handoff.ChannelDialogflowES,
		conversation: req.Session,
		replyTo:      req.Session,
		turnID:       req.ResponseID,
		lang:         qr.LanguageCode,
		text:         qr.QueryText,
		customer:     customerFrom(esParameters(qr.Parameters, qr.OutputContexts), g.cfg.NameParameter, g.cfg.EmailParameter),
	}
	// The bot's answer for this turn: fulfillmentText, or the text
	// messages when only those are set.
	if qr.FulfillmentText != "" {
		t.botText = []string{qr.FulfillmentText}
	} else {
		for _, m := range qr.FulfillmentMessages {
			if m.Text != nil {
				t.botText = append(t.botText, m.Text.Text...)
			}
		}
	}
	switch intent := qr.Intent.DisplayName; {
	case intent != "" && slices.Contains(g.cfg.ESCancelIntents, intent):
		t.cancel, t.cancelReason = true, TriggerIntent
	case qr.Intent.LiveAgentHandoff:
		t.trigger = TriggerLiveAgentHandoff
	case intent != "" && slices.Contains(g.cfg.ESHandoffIntents, intent):
		t.trigger = TriggerIntent
	}
	return t
}

// esParameters merges what the session knows: ES reports a value
// collected on an earlier turn (a name asked for two turns ago) only in
// the output contexts' parameters, the current turn's in
// queryResult.parameters. The current turn wins, then the contexts in the
// order Dialogflow lists them.
func esParameters(current map[string]any, contexts []esContext) map[string]any {
	out := map[string]any{}
	for i := len(contexts) - 1; i >= 0; i-- {
		for k, v := range contexts[i].Parameters {
			if paramString(v) != "" {
				out[k] = v
			}
		}
	}
	for k, v := range current {
		if paramString(v) != "" {
			out[k] = v
		}
	}
	return out
}

func (g *Gateway) serveES(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	req, err := decodeES(body)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	t := g.esTurn(req)
	out, err := g.process(r.Context(), t)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	resp := g.esReply(req, t, out)
	addPulledES(&resp, g.pulled(r.Context(), t, out))
	writeJSON(w, http.StatusOK, resp)
}

// addPulledES puts the lines the Dialogflow pull carries before the
// gateway's own text: the agent wrote them first. With a follow-up event
// Dialogflow ignores the fulfillment, so they go into the event's text
// parameter too.
func addPulledES(resp *esResponse, lines []string) {
	if len(lines) == 0 {
		return
	}
	msgs := make([]esMessage, 0, len(lines)+len(resp.FulfillmentMessages))
	var texts []string
	for _, l := range lines {
		msgs = append(msgs, esMessage{Text: &esText{Text: []string{l}}})
		texts = append(texts, l)
	}
	for _, m := range resp.FulfillmentMessages {
		if m.Text != nil && strings.TrimSpace(strings.Join(m.Text.Text, "")) == "" {
			continue // the empty text that kept the bot silent
		}
		msgs = append(msgs, m)
		if m.Text != nil {
			texts = append(texts, m.Text.Text...)
		}
	}
	resp.FulfillmentMessages = msgs
	if resp.FulfillmentText == "" {
		resp.FulfillmentText = strings.Join(lines, "\n")
	}
	if resp.FollowupEventInput != nil {
		resp.FollowupEventInput.Parameters["text"] = strings.Join(texts, "\n")
	}
}

func (g *Gateway) esReply(req esRequest, t turn, out outcome) esResponse {
	ctxName := strings.TrimSuffix(req.Session, "/") + "/contexts/" + g.cfg.ESContext
	text := func(s string) esResponse {
		// A message list is always sent, even empty text, because an empty
		// fulfillment would let the matched intent's static response
		// through, and the bot must not answer while an agent owns the chat.
		return esResponse{FulfillmentText: s, FulfillmentMessages: []esMessage{{Text: &esText{Text: []string{s}}}}}
	}
	switch out.kind {
	case outcomeHandoff:
		resp := text(g.reply(g.cfg.HandoffReply, t.lang))
		resp.OutputContexts = []esContext{{Name: ctxName, LifespanCount: g.cfg.ESContextLifespan}}
		return resp
	case outcomeForwarded:
		resp := text(g.reply(g.cfg.AckReply, t.lang))
		resp.OutputContexts = []esContext{{Name: ctxName, LifespanCount: g.cfg.ESContextLifespan}}
		return resp
	case outcomeLimited:
		resp := text(out.text)
		if out.withAgent {
			resp.OutputContexts = []esContext{{Name: ctxName, LifespanCount: g.cfg.ESContextLifespan}}
		}
		return resp
	case outcomeCancelled:
		resp := text(g.reply(g.cfg.CancelReply, t.lang))
		// Lifespan 0 removes the context: the catch-all stops matching.
		resp.OutputContexts = []esContext{{Name: ctxName, LifespanCount: 0}}
		g.esFollowup(&resp, t, resp.FulfillmentText)
		return resp
	case outcomeBackToBot:
		resp := text(out.text)
		resp.OutputContexts = []esContext{{Name: ctxName, LifespanCount: 0}}
		g.esFollowup(&resp, t, out.text)
		return resp
	}
	return esResponse{}
}

// esEvent is an ES followupEventInput: Dialogflow matches the intent
// with this event and answers with it.
type esEvent struct {
	Name         string         `json:"name"`
	LanguageCode string         `json:"languageCode,omitempty"`
	Parameters   map[string]any `json:"parameters,omitempty"`
}

// esFollowup hands the turn back to the bot with the configured event
// (Config.ESFollowupEvent). Dialogflow then ignores our fulfillment text,
// so the text travels as the event's parameter "text" for the intent's
// response ($text, or #<EVENT>.text).
func (g *Gateway) esFollowup(resp *esResponse, t turn, text string) {
	if g.cfg.ESFollowupEvent == "" {
		return
	}
	resp.FollowupEventInput = &esEvent{Name: g.cfg.ESFollowupEvent, LanguageCode: t.lang, Parameters: map[string]any{"text": text}}
}
