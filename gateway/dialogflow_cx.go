package gateway

import (
	"net/http"
	"slices"
	"strings"

	"github.com/handoff-dev/handoff"
)

// cxRequest is the part of a Dialogflow CX v3 WebhookRequest the gateway
// reads. Real requests carry fields the published proto lacks (redactedText,
// source): they are ignored like any unknown field.
type cxRequest struct {
	DetectIntentResponseID string `json:"detectIntentResponseId"`
	Text                   string `json:"text"`
	Transcript             string `json:"transcript"`
	DTMFDigits             string `json:"dtmfDigits"`
	LanguageCode           string `json:"languageCode"`
	FulfillmentInfo        struct {
		Tag string `json:"tag"`
	} `json:"fulfillmentInfo"`
	SessionInfo struct {
		Session    string         `json:"session"`
		Parameters map[string]any `json:"parameters"`
	} `json:"sessionInfo"`
	Messages []cxMessage `json:"messages"`
}

type cxMessage struct {
	Text             *cxText             `json:"text,omitempty"`
	LiveAgentHandoff *cxLiveAgentHandoff `json:"liveAgentHandoff,omitempty"`
}

type cxText struct {
	Text []string `json:"text"`
}

type cxLiveAgentHandoff struct {
	Metadata map[string]any `json:"metadata"`
}

type cxResponse struct {
	FulfillmentResponse *cxFulfillment `json:"fulfillmentResponse,omitempty"`
	SessionInfo         *cxSessionInfo `json:"sessionInfo,omitempty"`
}

type cxFulfillment struct {
	// Messages is never omitted: with REPLACE an empty list is how the
	// bot's queued answer is suppressed while an agent owns the chat.
	Messages      []cxMessage `json:"messages"`
	MergeBehavior string      `json:"mergeBehavior"`
}

type cxSessionInfo struct {
	// A nil value is sent as null, which deletes the parameter.
	Parameters map[string]any `json:"parameters"`
}

func decodeCX(body []byte) (cxRequest, error) {
	var req cxRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return req, err
	}
	if strings.TrimSpace(req.SessionInfo.Session) == "" {
		return req, badRequest("sessionInfo.session is missing")
	}
	return req, nil
}

func (g *Gateway) cxTurn(req cxRequest) turn {
	text := req.Text
	if text == "" {
		text = req.Transcript
	}
	if text == "" {
		text = req.DTMFDigits
	}
	t := turn{
		channel:      handoff.ChannelDialogflowCX,
		conversation: req.SessionInfo.Session,
		replyTo:      req.SessionInfo.Session,
		turnID:       req.DetectIntentResponseID,
		lang:         req.LanguageCode,
		text:         text,
		customer:     customerFrom(req.SessionInfo.Parameters, g.cfg.NameParameter, g.cfg.EmailParameter),
	}
	var handoffMsg *cxLiveAgentHandoff
	for _, m := range req.Messages {
		if m.Text != nil {
			t.botText = append(t.botText, m.Text.Text...)
		}
		if m.LiveAgentHandoff != nil && handoffMsg == nil {
			handoffMsg = m.LiveAgentHandoff
		}
	}
	tag := req.FulfillmentInfo.Tag
	switch {
	case tag != "" && slices.Contains(g.cfg.CXCancelTags, tag):
		t.cancel, t.cancelReason = true, TriggerTag
	case handoffMsg != nil:
		t.trigger = TriggerLiveAgentHandoff
		if reason, ok := handoffMsg.Metadata["reason"].(string); ok {
			t.reason = clip(reason, 1024)
		}
		t.metadata = handoffMsg.Metadata
	case tag != "" && slices.Contains(g.cfg.CXHandoffTags, tag):
		t.trigger = TriggerTag
	}
	return t
}

func (g *Gateway) serveCX(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	req, err := decodeCX(body)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	t := g.cxTurn(req)
	out, err := g.process(r.Context(), t)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	resp := g.cxReply(t, out)
	if lines := g.pulled(r.Context(), t, out); len(lines) > 0 && resp.FulfillmentResponse != nil {
		// Before the gateway's own text: the agent wrote them first.
		msgs := make([]cxMessage, 0, len(lines)+len(resp.FulfillmentResponse.Messages))
		for _, l := range lines {
			msgs = append(msgs, cxMessage{Text: &cxText{Text: []string{l}}})
		}
		resp.FulfillmentResponse.Messages = append(msgs, resp.FulfillmentResponse.Messages...)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (g *Gateway) cxReply(t turn, out outcome) cxResponse {
	texts := func(s string) []cxMessage {
		if s == "" {
			return []cxMessage{}
		}
		return []cxMessage{{Text: &cxText{Text: []string{s}}}}
	}
	params := func(v any) *cxSessionInfo {
		return &cxSessionInfo{Parameters: map[string]any{g.cfg.CXParameter: v}}
	}
	switch out.kind {
	case outcomeHandoff:
		msgs := texts(g.reply(g.cfg.HandoffReply, t.lang))
		reason := t.reason
		if reason == "" {
			reason = t.trigger
		}
		// Echo a liveAgentHandoff message so CX's own reporting counts
		// the handoff even when a tag or phrase triggered it, with the
		// designer's metadata whole (a queue, a priority): REPLACE would
		// otherwise drop what the bot's own message carried.
		metadata := make(map[string]any, len(t.metadata)+1)
		for k, v := range t.metadata {
			metadata[k] = v
		}
		if _, ok := metadata["reason"]; !ok {
			metadata["reason"] = reason
		}
		msgs = append(msgs, cxMessage{LiveAgentHandoff: &cxLiveAgentHandoff{Metadata: metadata}})
		return cxResponse{FulfillmentResponse: &cxFulfillment{Messages: msgs, MergeBehavior: "REPLACE"}, SessionInfo: params(true)}
	case outcomeForwarded:
		return cxResponse{FulfillmentResponse: &cxFulfillment{Messages: texts(g.reply(g.cfg.AckReply, t.lang)), MergeBehavior: "REPLACE"}, SessionInfo: params(true)}
	case outcomeBackToBot:
		// null deletes the parameter: CX routes stop seeing an agent.
		return cxResponse{FulfillmentResponse: &cxFulfillment{Messages: texts(out.text), MergeBehavior: "REPLACE"}, SessionInfo: params(nil)}
	case outcomeCancelled:
		return cxResponse{FulfillmentResponse: &cxFulfillment{Messages: texts(g.reply(g.cfg.CancelReply, t.lang)), MergeBehavior: "REPLACE"}, SessionInfo: params(nil)}
	case outcomeLimited:
		resp := cxResponse{FulfillmentResponse: &cxFulfillment{Messages: texts(out.text), MergeBehavior: "REPLACE"}}
		if out.withAgent {
			resp.SessionInfo = params(true)
		}
		return resp
	}
	return cxResponse{}
}
