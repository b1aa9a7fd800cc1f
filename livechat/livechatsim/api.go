package livechatsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

type apiKind uint8

const (
	apiCustomer apiKind = iota + 1
	apiConfiguration
	apiAgent
)

// call is one Web API request on its way through the simulator.
type call struct {
	r        *http.Request
	version  string
	action   string
	body     []byte
	customer string // customer ID, for customer actions
	agent    string // the requesting agent, for agent and configuration actions
	// clientID is the app a bearer token was issued to; "" for a Personal
	// Access Token (Basic), which names the app in owner_client_id.
	clientID string
	pat      bool
}

// actionSpec says how an action is reached and what it does. apply
// returns the answer body or an error; applied reports whether state
// changed, which is what drop_after_apply needs to mean "applied".
type actionSpec struct {
	method string // POST unless GET
	noAuth bool
	noOrg  bool
	apply  func(s *Sim, c *call) (any, *apiError)
}

var customerActions = map[string]actionSpec{
	"start_chat":                  {apply: (*Sim).startChatNotify},
	"resume_chat":                 {apply: (*Sim).resumeChatNotify},
	"send_event":                  {apply: (*Sim).sendEvent},
	"deactivate_chat":             {apply: (*Sim).deactivateChat},
	"get_chat":                    {apply: (*Sim).getChat},
	"list_threads":                {apply: (*Sim).listThreads},
	"list_chats":                  {apply: (*Sim).listChats},
	"update_customer":             {apply: (*Sim).updateCustomer},
	"set_customer_session_fields": {apply: (*Sim).setSessionFields},
	"send_sneak_peek":             {apply: (*Sim).sendSneakPeek},
	"list_group_statuses":         {apply: (*Sim).listGroupStatuses},
	"get_customer":                {apply: (*Sim).getCustomer},
	"mark_events_as_seen":         {apply: (*Sim).markEventsAsSeen},
	"send_rich_message_postback":  {apply: (*Sim).sendRichMessagePostback},
	"get_dynamic_configuration":   {method: http.MethodGet, noAuth: true, noOrg: true, apply: (*Sim).getDynamicConfiguration},
}

var configurationActions = map[string]actionSpec{
	"get_organization_id":        {method: http.MethodGet, noAuth: true, apply: (*Sim).getOrganizationID},
	"register_webhook":           {apply: (*Sim).registerWebhook},
	"list_webhooks":              {apply: (*Sim).listWebhooks},
	"unregister_webhook":         {apply: (*Sim).unregisterWebhook},
	"enable_license_webhooks":    {apply: (*Sim).enableLicenseWebhooks},
	"disable_license_webhooks":   {apply: (*Sim).disableLicenseWebhooks},
	"get_license_webhooks_state": {apply: (*Sim).getLicenseWebhooksState},
}

// supportedVersion reports whether the Web API version is served; 3.4 is
// kept only for get_organization_id, the one action documented there.
func supportedVersion(v, action string) bool {
	switch v {
	case "v3.5", "v3.6", "v3.7":
		return true
	case "v3.4":
		return action == "get_organization_id"
	}
	return false
}

func (s *Sim) handleAPI(kind apiKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := &call{r: r, version: r.PathValue("version"), action: r.PathValue("action")}
		status, drop := s.serveAction(w, c, kind)
		s.count(statName(kind, c.action), status)
		if drop {
			// The request was applied; now lose the answer.
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
	}
}

// statName is the key of an action in Stats: the Agent Chat API shares
// action names with the Customer Chat API, so its own are "agent/<action>".
func statName(kind apiKind, action string) string {
	if kind == apiAgent {
		return "agent/" + action
	}
	return action
}

// serveAction runs one Web API request and reports the status answered,
// or drop=true when the answer must be lost instead.
func (s *Sim) serveAction(w http.ResponseWriter, c *call, kind apiKind) (status int, drop bool) {
	f := s.faults.Load()
	if f.Legacy != "" {
		w.Header().Set("Legacy", f.Legacy)
	}
	if f.Deprecation != "" {
		w.Header().Set("Deprecation", f.Deprecation)
	}
	table := customerActions
	switch kind {
	case apiConfiguration:
		table = configurationActions
	case apiAgent:
		table = agentActions
	}
	spec, known := table[c.action]
	if !supportedVersion(c.version, c.action) {
		return writeAPIError(w, &apiError{Type: "unsupported_version", Message: "Unsupported version: " + c.version}), false
	}
	if !known {
		return writeAPIError(w, errNotFound("Unknown action: "+c.action)), false
	}
	method := spec.method
	if method == "" {
		method = http.MethodPost
	}
	if c.r.Method != method {
		e := errValidation("Action " + c.action + " takes " + method)
		e.status = http.StatusMethodNotAllowed
		return writeAPIError(w, e), false
	}
	f.delay(c.r.Context(), c.action)
	if f.Region != "" {
		if reg := requestRegion(c.r); reg != "" && reg != f.Region {
			return writeAPIError(w, &apiError{Type: "misdirected_request", Message: "Wrong region",
				Data: map[string]any{"region": f.Region}}), false
		}
	}
	if e := f.injected(c.action); e != nil {
		return writeAPIError(w, e), false
	}
	if !spec.noAuth {
		if e := s.authorize(c, kind); e != nil {
			return writeAPIError(w, e), false
		}
	}
	if kind == apiCustomer && (!spec.noOrg || c.r.URL.Query().Has("organization_id")) {
		org := c.r.URL.Query().Get("organization_id")
		switch {
		case org == "":
			return writeAPIError(w, errValidation("`organization_id` query parameter is required")), false
		case org != s.opts.OrganizationID:
			return writeAPIError(w, errValidation("Unknown `organization_id`")), false
		}
	}
	body, e := readBody(c.r)
	if e != nil {
		return writeAPIError(w, e), false
	}
	c.body = body
	out, e := spec.apply(s, c)
	f.delayAnswer(c.r.Context(), c.action)
	if e != nil {
		return writeAPIError(w, e), false
	}
	if f.drop(c.action) {
		return 0, true
	}
	writeJSON(w, http.StatusOK, out)
	return http.StatusOK, false
}

// requestRegion is the region a request addresses: X-Region, else the
// bearer's prefix.
func requestRegion(r *http.Request) string {
	if reg := r.Header.Get("X-Region"); reg != "" {
		return reg
	}
	tok := bearer(r)
	if i := strings.IndexByte(tok, ':'); i > 0 && i <= 8 {
		return tok[:i]
	}
	return ""
}

// authorize checks the credentials: customer actions need a live
// customer token; agent and configuration actions an agent token (or any
// agent bearer when Options.AgentToken is empty) or a Personal Access
// Token (Basic), which acts as the simulated agent.
func (s *Sim) authorize(c *call, kind apiKind) *apiError {
	r := c.r
	if kind != apiCustomer && strings.HasPrefix(r.Header.Get("Authorization"), "Basic ") {
		c.agent, c.pat = AgentID, true
		return nil
	}
	tok := bearer(r)
	if tok == "" {
		return &apiError{Type: "authentication", Message: "Missing bearer token"}
	}
	info, ok := s.tokens.get(tok)
	if ok && !s.now().Before(info.expires) {
		return &apiError{Type: "authentication", Message: "Token expired"}
	}
	switch kind {
	case apiCustomer:
		if !ok {
			return &apiError{Type: "authentication", Message: "Invalid access token"}
		}
		if info.kind != kindCustomer {
			return &apiError{Type: "authorization", Message: "Customer token required"}
		}
		c.customer = info.entity
	default:
		if ok && info.kind == kindCustomer {
			return &apiError{Type: "authorization", Message: "Agent token required"}
		}
		if !ok && s.opts.AgentToken != "" && tok != s.opts.AgentToken {
			return &apiError{Type: "authentication", Message: "Invalid access token"}
		}
		c.agent, c.clientID = AgentID, info.clientID
		if !ok {
			// A configured agent bearer belongs to the configured app.
			c.clientID = s.opts.ClientID
		}
	}
	return nil
}

// agentBearerOK reports whether tok may act as the agent on the accounts
// service.
func (s *Sim) agentBearerOK(tok string) bool {
	if tok == "" {
		return false
	}
	if info, ok := s.tokens.get(tok); ok {
		return info.kind == kindAgent && s.now().Before(info.expires)
	}
	return s.opts.AgentToken == "" || tok == s.opts.AgentToken
}

func (s *Sim) issue(kind tokenKind, entity, clientID string) (string, int64) {
	life := s.tokenLifetime()
	tok := s.ids.token(s.opts.Region)
	s.tokens.put(tok, tokenInfo{kind: kind, entity: entity, clientID: clientID, expires: s.now().Add(life)})
	secs := int64(life / time.Second)
	if secs < 1 {
		secs = 1
	}
	return tok, secs
}

func (s *Sim) answerToken(tok string) string {
	if s.faults.Load().EncodeTokens {
		return url.QueryEscape(tok)
	}
	return tok
}

// handleAgentToken serves the refresh_token grant, form-encoded or JSON:
// LiveChat's accounts service takes both.
func (s *Sim) handleAgentToken(w http.ResponseWriter, r *http.Request) {
	s.count("token", s.agentToken(w, r))
}

func (s *Sim) agentToken(w http.ResponseWriter, r *http.Request) int {
	f := s.faults.Load()
	f.delay(r.Context(), "token")
	if e := f.injected("token"); e != nil {
		return writeOAuthError(w, e.httpStatus(), oauthFor(e.Type), e.Message)
	}
	form, status, msg := tokenForm(w, r)
	if status != 0 {
		return writeOAuthError(w, status, "invalid_request", msg)
	}
	switch {
	case form.Get("client_id") == "":
		return writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Missing client_id")
	case s.opts.ClientID != "" && form.Get("client_id") != s.opts.ClientID:
		return writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Unknown client_id")
	case form.Get("grant_type") == "authorization_code":
		return s.codeGrant(w, form)
	case form.Get("grant_type") != "refresh_token":
		return writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "Only refresh_token and authorization_code are supported")
	case form.Get("refresh_token") == "":
		return writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Missing refresh_token")
	case !s.refreshKnown(form.Get("refresh_token")):
		return writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "Invalid refresh token")
	}
	return s.writeAgentToken(w, form.Get("client_id"), s.rotate(form.Get("client_id"), form.Get("refresh_token")))
}

// writeAgentToken answers a token grant with a new agent access token.
func (s *Sim) writeAgentToken(w http.ResponseWriter, clientID, refreshToken string) int {
	tok, secs := s.issue(kindAgent, AgentID, clientID)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":    s.answerToken(tok),
		"account_id":      "b7eff798-f8df-4364-8059-649c35c9ed0c",
		"expires_in":      secs,
		"organization_id": s.opts.OrganizationID,
		"refresh_token":   refreshToken,
		"scope":           s.scopes(),
		"token_type":      "Bearer",
	})
	return http.StatusOK
}

// tokenForm reads a token request's parameters from a form or a JSON
// object body, whichever the Content-Type says. A non-zero status is a
// refusal with its description.
func tokenForm(w http.ResponseWriter, r *http.Request) (url.Values, int, string) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	if strings.TrimSpace(strings.ToLower(ct)) != "application/json" {
		if err := r.ParseForm(); err != nil {
			return nil, http.StatusBadRequest, "Cannot parse the form body"
		}
		return r.PostForm, 0, ""
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, http.StatusBadRequest, "Cannot read the body"
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, http.StatusBadRequest, "Cannot parse the JSON body"
	}
	form := url.Values{}
	for k, v := range m {
		switch x := v.(type) {
		case string:
			form.Set(k, x)
		case float64:
			form.Set(k, strconv.FormatFloat(x, 'f', -1, 64))
		default:
			return nil, http.StatusBadRequest, "Field " + k + " must be a string"
		}
	}
	return form, 0, ""
}

// oauthFor maps an injected Web API type onto the accounts vocabulary.
func oauthFor(t string) string {
	switch t {
	case "internal":
		return "server_error"
	case "service_unavailable", "too_many_requests":
		return "temporarily_unavailable"
	case "authentication":
		return "invalid_grant"
	case "authorization":
		return "access_denied"
	}
	return t
}

type customerTokenRequest struct {
	GrantType      string `json:"grant_type"`
	ClientID       string `json:"client_id"`
	ResponseType   string `json:"response_type"`
	OrganizationID string `json:"organization_id"`
	EntityID       string `json:"entity_id"`
	RedirectURI    string `json:"redirect_uri"`
}

// handleCustomerToken serves the agent_token grant (JSON).
func (s *Sim) handleCustomerToken(w http.ResponseWriter, r *http.Request) {
	s.count("customer_token", s.customerToken(w, r))
}

func (s *Sim) customerToken(w http.ResponseWriter, r *http.Request) int {
	f := s.faults.Load()
	f.delay(r.Context(), "customer_token")
	if e := f.injected("customer_token"); e != nil {
		return writeOAuthError(w, e.httpStatus(), oauthFor(e.Type), e.Message)
	}
	if !s.agentBearerOK(bearer(r)) {
		return writeOAuthError(w, http.StatusUnauthorized, "access_denied", "Invalid or expired agent token")
	}
	body, e := readBody(r)
	if e != nil {
		return writeOAuthError(w, e.httpStatus(), "invalid_request", e.Message)
	}
	var req customerTokenRequest
	if e := decodeBody(body, &req); e != nil {
		return writeOAuthError(w, http.StatusBadRequest, "invalid_request", e.Message)
	}
	switch {
	case req.GrantType != "agent_token":
		return writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "Only agent_token is supported")
	case req.ResponseType != "token":
		return writeOAuthError(w, http.StatusBadRequest, "invalid_request", "response_type must be token")
	case req.ClientID == "":
		return writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Missing client_id")
	case s.opts.ClientID != "" && req.ClientID != s.opts.ClientID:
		return writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Unknown client_id")
	case req.OrganizationID != s.opts.OrganizationID:
		return writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Unknown organization_id")
	}
	id := req.EntityID
	if id == "" {
		id = s.ids.uuid()
	}
	// An entity_id the sim has not seen (a restarted sim, say) becomes a
	// customer with that ID, so the caller's stored IDs keep working.
	s.customers.putNew(id, &customer{id: id, createdAt: s.now()})
	tok, secs := s.issue(kindCustomer, id, req.ClientID)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":    s.answerToken(tok),
		"client_id":       req.ClientID,
		"entity_id":       id,
		"expires_in":      secs,
		"token_type":      "Bearer",
		"organization_id": s.opts.OrganizationID,
	})
	return http.StatusOK
}

func (s *Sim) getOrganizationID(c *call) (any, *apiError) {
	lic := c.r.URL.Query().Get("license_id")
	if e := s.checkLicense(lic); e != nil {
		return nil, e
	}
	return map[string]string{"organization_id": s.opts.OrganizationID}, nil
}

func (s *Sim) checkLicense(lic string) *apiError {
	if lic == "" {
		return errValidation("`license_id` is required")
	}
	n, err := strconv.Atoi(lic)
	if err != nil || n <= 0 {
		return errValidation("`license_id` must be a positive integer")
	}
	if s.opts.LicenseID != 0 && n != s.opts.LicenseID {
		return &apiError{Type: "license_not_found", Message: "License not found"}
	}
	return nil
}

// getDynamicConfiguration names the license by license_id or, as LiveChat's
// Go SDK sends it, by organization_id (checked by serveAction).
func (s *Sim) getDynamicConfiguration(c *call) (any, *apiError) {
	q := c.r.URL.Query()
	switch {
	case q.Has("license_id"):
		if e := s.checkLicense(q.Get("license_id")); e != nil {
			return nil, e
		}
	case !q.Has("organization_id"):
		return nil, errValidation("`license_id` or `organization_id` is required")
	}
	group, _ := strconv.Atoi(q.Get("group_id"))
	online := []int{0}
	if s.faults.Load().AgentsOffline {
		online = []int{}
	}
	return map[string]any{
		"organization_id": s.opts.OrganizationID,
		"livechat": map[string]any{
			"group_id":              group,
			"online_group_ids":      online,
			"client_limit_exceeded": false,
			"domain_allowed":        true,
		},
	}, nil
}
