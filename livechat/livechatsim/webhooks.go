package livechatsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

type webhookReg struct {
	ID             string         `json:"id"`
	URL            string         `json:"url"`
	Description    string         `json:"description,omitempty"`
	Action         string         `json:"action"`
	SecretKey      string         `json:"secret_key"`
	OwnerClientID  string         `json:"owner_client_id"`
	Type           string         `json:"type"`
	Filters        map[string]any `json:"filters,omitempty"`
	AdditionalData []string       `json:"additional_data,omitempty"`
}

// maxHooksPerAction is LiveChat's limit per action and client ID.
const maxHooksPerAction = 3

var webhookActions = []string{
	"incoming_chat", "incoming_event", "chat_deactivated", "event_updated",
	"user_added_to_chat", "user_removed_from_chat", "chat_transferred",
	"incoming_rich_message_postback", "chat_properties_updated", "thread_properties_updated",
}

func (s *Sim) registerWebhook(c *call) (any, *apiError) {
	var w webhookReg
	if e := decodeBody(c.body, &w); e != nil {
		return nil, e
	}
	switch {
	case w.URL == "":
		return nil, errValidation("`url` is required")
	case w.Action == "":
		return nil, errValidation("`action` is required")
	case !slices.Contains(webhookActions, w.Action):
		return nil, errValidation("`action` is not supported: " + w.Action)
	case w.SecretKey == "":
		return nil, errValidation("`secret_key` is required")
	case w.Type != "license" && w.Type != "bot":
		return nil, errValidation("`type` must be license or bot")
	}
	if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errValidation("`url` must be an http(s) URL")
	}
	owner, e := ownerClient(c, w.OwnerClientID)
	if e != nil {
		return nil, e
	}
	w.OwnerClientID = owner
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	n := 0
	for _, h := range s.hooks {
		if h.Action == w.Action && h.OwnerClientID == w.OwnerClientID {
			n++
		}
	}
	if n >= maxHooksPerAction {
		return nil, &apiError{Type: "limit_reached", Message: "Webhooks limit reached for action " + w.Action}
	}
	w.ID = s.ids.hex32()
	s.hooks[w.ID] = &w
	s.nHooks.Add(1)
	return map[string]string{"id": w.ID}, nil
}

type ownerRequest struct {
	ID            string `json:"id"`
	OwnerClientID string `json:"owner_client_id"`
}

// ownerClient is the app whose webhooks a request manages. With a bearer
// token LiveChat knows it from the token, and owner_client_id may be
// left out; with a Personal Access Token, which belongs to no app, it is
// required. A bearer naming another app's client ID is refused.
func ownerClient(c *call, named string) (string, *apiError) {
	switch {
	case c.pat && named == "":
		return "", errValidation("`owner_client_id` is required with a Personal Access Token")
	case c.pat:
		return named, nil
	case c.clientID == "":
		// A bearer the sim did not issue, with no ClientID configured: it
		// can only name its app.
		if named == "" {
			return "", errValidation("`owner_client_id` is required")
		}
		return named, nil
	case named != "" && named != c.clientID:
		return "", &apiError{Type: "authorization", Message: "Cannot manage webhooks of another client"}
	}
	return c.clientID, nil
}

func ownerOf(c *call) (ownerRequest, *apiError) {
	var req ownerRequest
	if e := decodeBody(c.body, &req); e != nil {
		return req, e
	}
	owner, e := ownerClient(c, req.OwnerClientID)
	req.OwnerClientID = owner
	return req, e
}

func (s *Sim) listWebhooks(c *call) (any, *apiError) {
	req, e := ownerOf(c)
	if e != nil {
		return nil, e
	}
	s.hooksMu.RLock()
	out := []webhookReg{}
	for _, h := range s.hooks {
		if h.OwnerClientID == req.OwnerClientID {
			out = append(out, *h)
		}
	}
	s.hooksMu.RUnlock()
	slices.SortFunc(out, func(a, b webhookReg) int {
		if a.Action != b.Action {
			return strings.Compare(a.Action, b.Action)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (s *Sim) unregisterWebhook(c *call) (any, *apiError) {
	req, e := ownerOf(c)
	if e != nil {
		return nil, e
	}
	if req.ID == "" {
		return nil, errValidation("`id` is required")
	}
	s.hooksMu.Lock()
	defer s.hooksMu.Unlock()
	h, ok := s.hooks[req.ID]
	if !ok || h.OwnerClientID != req.OwnerClientID {
		return nil, errNotFound("Webhook not found")
	}
	delete(s.hooks, req.ID)
	s.nHooks.Add(-1)
	return struct{}{}, nil
}

// enableLicenseWebhooks turns the owner's license webhooks on; nothing
// registered fires before that.
func (s *Sim) enableLicenseWebhooks(c *call) (any, *apiError) { return s.setLicenseWebhooks(c, true) }

// disableLicenseWebhooks turns them off again; registrations stay.
func (s *Sim) disableLicenseWebhooks(c *call) (any, *apiError) { return s.setLicenseWebhooks(c, false) }

func (s *Sim) setLicenseWebhooks(c *call, on bool) (any, *apiError) {
	req, e := ownerOf(c)
	if e != nil {
		return nil, e
	}
	s.hooksMu.Lock()
	s.enabled[req.OwnerClientID] = on
	s.hooksMu.Unlock()
	return struct{}{}, nil
}

func (s *Sim) getLicenseWebhooksState(c *call) (any, *apiError) {
	req, e := ownerOf(c)
	if e != nil {
		return nil, e
	}
	s.hooksMu.RLock()
	on := s.enabled[req.OwnerClientID]
	s.hooksMu.RUnlock()
	return map[string]bool{"license_webhooks_enabled": on}, nil
}

// delivery is one webhook body bound for one URL.
type delivery struct {
	url  string
	body []byte
}

// eventDeliveries builds incoming_event deliveries for ev, honouring the
// author_type filter. Call with the chat locked.
func (s *Sim) eventDeliveries(ch *chat, t *thread, ev *event, authorType string) []delivery {
	payload := map[string]any{"chat_id": ch.id, "thread_id": t.id, "event": ev.agentWire()}
	return s.deliveriesFor("incoming_event", ch, payload, func(h *webhookReg) bool {
		at, _ := h.Filters["author_type"].(string)
		return at == "" || at == authorType
	})
}

// deliveriesFor renders the body for every live registration of action
// that keep accepts. License webhooks fire only once enabled for their
// owner, as in LiveChat. Call with the chat locked.
func (s *Sim) deliveriesFor(action string, ch *chat, payload any, keep func(*webhookReg) bool) []delivery {
	if s.nHooks.Load() == 0 {
		return nil
	}
	s.hooksMu.RLock()
	defer s.hooksMu.RUnlock()
	var out []delivery
	for _, h := range s.hooks {
		if h.Action != action || (h.Type == "license" && !s.enabled[h.OwnerClientID]) || !keep(h) {
			continue
		}
		extra := map[string]any{}
		if slices.Contains(h.AdditionalData, "chat_properties") {
			extra["chat_properties"] = ch.props
		}
		body, err := json.Marshal(map[string]any{
			"webhook_id":      h.ID,
			"secret_key":      h.SecretKey,
			"action":          action,
			"organization_id": s.opts.OrganizationID,
			"payload":         payload,
			"additional_data": extra,
		})
		if err != nil {
			s.log.Error("livechatsim: encode webhook", "action", action, "err", err)
			continue
		}
		out = append(out, delivery{url: h.URL, body: body})
	}
	return out
}

// enqueue hands deliveries to the senders; it gives up only when the sim
// is closing.
func (s *Sim) enqueue(ds []delivery) {
	for _, d := range ds {
		select {
		case s.deliveries <- d:
		case <-s.ctx.Done():
			return
		}
	}
}

// webhookRetries is how often LiveChat retries a delivery not answered 200.
const webhookRetries = 3

func (s *Sim) sendWebhooks() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case d := <-s.deliveries:
			s.deliver(d)
		}
	}
}

func (s *Sim) deliver(d delivery) {
	for attempt := 0; attempt <= webhookRetries; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 100 * time.Millisecond)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
		}
		req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, d.url, bytes.NewReader(d.body))
		if err != nil {
			s.log.Warn("livechatsim: webhook request", "url", d.url, "err", err)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "livechatsim-webhooks")
		resp, err := s.opts.WebhookClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			s.log.Debug("livechatsim: webhook refused", "url", d.url, "status", resp.StatusCode, "attempt", attempt+1)
		} else {
			s.log.Debug("livechatsim: webhook failed", "url", d.url, "err", err, "attempt", attempt+1)
		}
	}
	s.log.Warn("livechatsim: webhook given up", "url", d.url, "attempts", webhookRetries+1)
}
