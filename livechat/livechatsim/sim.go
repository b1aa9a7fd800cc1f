// Package livechatsim is an in-memory LiveChat: the accounts token
// endpoints, the Customer Chat Web API actions handoff uses, the Agent
// Chat Web API subset its reconciliation sweep uses, the Configuration
// API's webhook actions and webhook delivery, served on one address with
// the same paths, bodies, error envelope and statuses as LiveChat's public
// documentation (https://platform.text.com/docs/messaging/customer-chat-api,
// https://platform.text.com/docs/messaging/agent-chat-api,
// https://platform.text.com/docs/management/configuration-api) and its Go
// SDK (https://github.com/livechat/lc-sdk-go) describe.
//
// It exists so the client, the worker and a local run can be tested
// without LiveChat, including the failures that are hard to get from the
// real service: injected error types, 429 bursts, latency tails, expiring
// tokens, a misdirected region and the "applied but never answered" case.
// Those are set through the control API under /_sim/ (see Routes) or the
// Go methods of the same names.
//
// The simulator deliberately does not import the client package: it is an
// independent reading of LiveChat's documentation, so contract tests
// between the two catch mistakes on either side.
package livechatsim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options fields left empty.
const (
	DefaultTokenLifetime  = 8 * time.Hour
	DefaultOrganizationID = "390e44e6-f1e6-0368-c1ff-ae1fe5fd5b0a"
	DefaultRegion         = "dal"
	// AgentID is the simulated agent that writes agent messages and
	// closes chats.
	AgentID   = "agent@example.com"
	agentName = "Agent Smith"
)

// maxBodyBytes bounds a request body; above it the sim answers
// entity_too_large like LiveChat does for oversized uploads.
const maxBodyBytes = 1 << 20

// maxTextBytes is LiveChat's limit for a message's text.
const maxTextBytes = 16 * 1024

// Options configures a Sim.
type Options struct {
	// AgentToken is the only agent bearer accepted besides the tokens the
	// sim's /v2/token issues; "" accepts any agent bearer.
	AgentToken string
	// TokenLifetime of issued tokens; default DefaultTokenLifetime.
	TokenLifetime  time.Duration
	OrganizationID string // default DefaultOrganizationID
	// LicenseID, when set, is the only license get_organization_id and
	// get_dynamic_configuration know.
	LicenseID int
	// ClientID, when set, must match the client_id of token requests.
	ClientID string
	// Region prefixes issued tokens ("dal" by default).
	Region        string
	Logger        *slog.Logger
	WebhookClient *http.Client
	// Now replaces the clock, so tests can expire tokens without waiting.
	Now func() time.Time
	// Seed, when not zero, makes every generated ID and token repeatable
	// for a given sequence of requests (golden tests).
	Seed uint64
	// Scopes the authorization code flow grants, comma-separated; default
	// DefaultScopes.
	Scopes string
	// StrictRefreshTokens accepts only refresh tokens the simulator minted
	// (by the authorization code flow); otherwise any is taken.
	StrictRefreshTokens bool
	// RotateRefreshTokens answers every refresh_token grant with a new
	// refresh token, retiring the old one.
	RotateRefreshTokens bool
}

// Sim is the simulator. It implements http.Handler.
type Sim struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time
	ids  *idGen
	mux  *http.ServeMux

	faults atomic.Pointer[compiledFaults]

	tokens    shards[tokenInfo]
	customers shards[*customer]
	chats     shards[*chat]
	queue     waitQueue
	chatSeq   atomic.Uint64 // creation order for Chats()

	hooksMu sync.RWMutex
	hooks   map[string]*webhookReg // by ID
	enabled map[string]bool        // owner client ID → license webhooks on
	nHooks  atomic.Int64

	stats sync.Map // statKey → *atomic.Int64

	oauth oauthState

	deliveries chan delivery
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeOnce  sync.Once
}

// webhookSenders is how many deliveries go out at once; LiveChat's own
// concurrency is unknown, and a few are enough to show reordering.
const webhookSenders = 4

// New returns a running simulator. Call Close to stop its webhook senders.
func New(opts Options) *Sim {
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = DefaultTokenLifetime
	}
	if opts.OrganizationID == "" {
		opts.OrganizationID = DefaultOrganizationID
	}
	if opts.Region == "" {
		opts.Region = DefaultRegion
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.WebhookClient == nil {
		opts.WebhookClient = &http.Client{Timeout: 10 * time.Second}
	}
	s := &Sim{opts: opts, log: opts.Logger, now: opts.Now, ids: newIDGen(opts.Seed)}
	if s.now == nil {
		s.now = time.Now
	}
	s.resetState()
	s.oauth.codes, s.oauth.refresh = map[string]authCode{}, map[string]bool{}
	s.faults.Store(&compiledFaults{})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.deliveries = make(chan delivery, 1024)
	for range webhookSenders {
		s.wg.Add(1)
		go s.sendWebhooks()
	}
	s.routes()
	return s
}

// Close stops the webhook senders; deliveries still queued are dropped.
func (s *Sim) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
	})
}

// Routes lists what the simulator serves.
//
//	POST /v2/token                                  refresh_token grant (form or JSON)
//	POST /v2/customer/token, /customer/token        agent_token grant (JSON, agent bearer)
//	POST /v3.5|v3.6|v3.7/customer/action/{action}   start_chat resume_chat send_event
//	     deactivate_chat get_chat list_threads list_chats update_customer
//	     set_customer_session_fields send_sneak_peek list_group_statuses
//	     get_customer mark_events_as_seen send_rich_message_postback;
//	     GET get_dynamic_configuration?license_id= or ?organization_id=
//	POST /v3.5|v3.6|v3.7/agent/action/{action}      list_chats get_chat list_threads
//	     send_event transfer_chat deactivate_chat add_user_to_chat
//	/v3.4-v3.7/configuration/action/{action}        GET get_organization_id?license_id=,
//	     register_webhook list_webhooks unregister_webhook
//	     enable_license_webhooks disable_license_webhooks get_license_webhooks_state
//	GET    /_sim/chats                              every chat with its events
//	POST   /_sim/chats/{chat_id}/agent_message      {"text":..,"visibility":"all|agents"}
//	POST   /_sim/chats/{chat_id}/close              {"by_router":false}
//	GET|PUT|DELETE /_sim/faults                     Faults document
//	GET    /_sim/stats                              requests per action and status
//	                                                (Agent Chat API actions as agent/<action>)
//	POST   /_sim/reset                              forget everything
func (s *Sim) Routes() string {
	return routesDoc
}

const routesDoc = `POST /v2/token
GET  /?response_type=code&... (authorization code flow; approves at once)
POST /v2/customer/token
POST /customer/token
POST /v{3.5,3.6,3.7}/customer/action/{action}
GET  /v{3.5,3.6,3.7}/customer/action/get_dynamic_configuration
POST /v{3.5,3.6,3.7}/agent/action/{action}
POST /v{3.5,3.6,3.7}/configuration/action/{action}
GET  /v{3.4,3.5,3.6,3.7}/configuration/action/get_organization_id
GET  /_sim/chats
POST /_sim/chats/{chat_id}/agent_message
POST /_sim/chats/{chat_id}/close
GET|PUT|DELETE /_sim/faults
GET  /_sim/stats
POST /_sim/reset
`

func (s *Sim) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", s.handleAuthorize)
	m.HandleFunc("POST /v2/token", s.handleAgentToken)
	m.HandleFunc("POST /v2/customer/token", s.handleCustomerToken)
	m.HandleFunc("POST /customer/token", s.handleCustomerToken)
	m.HandleFunc("/{version}/customer/action/{action}", s.handleAPI(apiCustomer))
	m.HandleFunc("/{version}/configuration/action/{action}", s.handleAPI(apiConfiguration))
	m.HandleFunc("/{version}/agent/action/{action}", s.handleAPI(apiAgent))
	m.HandleFunc("GET /_sim/chats", s.handleSimChats)
	m.HandleFunc("POST /_sim/chats/{chat_id}/agent_message", s.handleSimAgentMessage)
	m.HandleFunc("POST /_sim/chats/{chat_id}/close", s.handleSimClose)
	m.HandleFunc("GET /_sim/faults", s.handleSimFaults)
	m.HandleFunc("PUT /_sim/faults", s.handleSimFaults)
	m.HandleFunc("DELETE /_sim/faults", s.handleSimFaults)
	m.HandleFunc("GET /_sim/stats", s.handleSimStats)
	m.HandleFunc("POST /_sim/reset", s.handleSimReset)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, &apiError{Type: "not_found", Message: "No such path: " + r.URL.Path})
	})
	s.mux = m
}

// ServeHTTP serves the LiveChat paths and the control API.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// apiError is the Web API error envelope's content.
type apiError struct {
	Type       string         `json:"type"`
	Message    string         `json:"message"`
	Data       map[string]any `json:"data,omitempty"`
	status     int
	retryAfter string
}

// statusFor is the HTTP status for an error type. LiveChat documents only
// 429; the rest follows the reference's unverified mapping, and the types
// it does not map are chosen here (see docs/livechat.md).
func statusFor(t string) int {
	switch t {
	case "validation", "unsupported_version", "wrong_product_version":
		return http.StatusBadRequest
	case "authentication":
		return http.StatusUnauthorized
	case "license_expired":
		return http.StatusPaymentRequired
	case "authorization", "customer_banned":
		return http.StatusForbidden
	case "not_found", "group_not_found", "greeting_not_found", "license_not_found":
		return http.StatusNotFound
	case "entity_too_large":
		return http.StatusRequestEntityTooLarge
	case "misdirected_request":
		return http.StatusMisdirectedRequest
	case "chat_inactive", "chat_anonymized", "group_offline", "groups_offline",
		"group_unavailable", "limit_reached", "users_limit_reached", "not_allowed":
		return http.StatusUnprocessableEntity
	case "too_many_requests", "pending_requests_limit_reached":
		return http.StatusTooManyRequests
	case "request_timeout":
		return http.StatusGatewayTimeout
	case "service_unavailable":
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (e *apiError) httpStatus() int {
	if e.status != 0 {
		return e.status
	}
	return statusFor(e.Type)
}

func errValidation(msg string) *apiError { return &apiError{Type: "validation", Message: msg} }
func errNotFound(msg string) *apiError   { return &apiError{Type: "not_found", Message: msg} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"type":"internal","message":"encode answer"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeAPIError(w http.ResponseWriter, e *apiError) int {
	if e.retryAfter != "" {
		w.Header().Set("Retry-After", e.retryAfter)
	}
	st := e.httpStatus()
	writeJSON(w, st, struct {
		Error *apiError `json:"error"`
	}{e})
	return st
}

// writeOAuthError answers in the accounts service's envelope.
func writeOAuthError(w http.ResponseWriter, status int, exception, desc string) int {
	writeJSON(w, status, map[string]string{"oauth_exception": exception, "exception_description": desc})
	return status
}

// bearer returns the token of the Authorization header, URL-decoded the way
// LiveChat tolerates "dal%3A...".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return ""
	}
	if strings.Contains(tok, "%") {
		if d, err := url.QueryUnescape(tok); err == nil {
			tok = d
		}
	}
	return strings.TrimSpace(tok)
}

// readBody reads a bounded request body.
func readBody(r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return nil, errValidation("Cannot read the request body")
	}
	if len(b) > maxBodyBytes {
		return nil, &apiError{Type: "entity_too_large", Message: "Request body too large"}
	}
	return b, nil
}

// decodeBody unmarshals a JSON request body; an empty body is {}.
func decodeBody(b []byte, v any) *apiError {
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return errValidation("Wrong type of field: " + ute.Field)
		}
		return errValidation("Invalid JSON")
	}
	return nil
}

type statKey struct {
	action string
	status int
}

func (s *Sim) count(action string, status int) {
	k := statKey{action, status}
	v, ok := s.stats.Load(k)
	if !ok {
		v, _ = s.stats.LoadOrStore(k, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// Stats is requests per action and HTTP status since the last reset.
type Stats map[string]map[int]int64

// Stats returns the request counts.
func (s *Sim) Stats() Stats {
	out := Stats{}
	s.stats.Range(func(k, v any) bool {
		key := k.(statKey)
		if out[key.action] == nil {
			out[key.action] = map[int]int64{}
		}
		out[key.action][key.status] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// Reset forgets every customer, chat, token, webhook, fault and counter.
func (s *Sim) Reset() {
	s.resetState()
	s.oauth.codes, s.oauth.refresh = map[string]authCode{}, map[string]bool{}
	s.faults.Store(&compiledFaults{})
	s.stats.Clear()
}

func (s *Sim) resetState() {
	s.tokens.reset()
	s.customers.reset()
	s.chats.reset()
	s.queue.reset()
	s.hooksMu.Lock()
	s.hooks = map[string]*webhookReg{}
	s.enabled = map[string]bool{}
	s.nHooks.Store(0)
	s.hooksMu.Unlock()
}
