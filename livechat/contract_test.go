package livechat_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
)

// clock is a settable time source so token expiry is tested without
// sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	sim    *livechatsim.Sim
	srv    *httptest.Server
	client *livechat.Client
	clock  *clock
	agent  string
}

const testClientID = "handoff-test-client"

// newEnv starts a simulator and a client pointed at it; the client has no
// organization configured so it learns it from the agent token answer.
func newEnv(t testing.TB, mod ...func(*livechat.Config)) *env {
	t.Helper()
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	sim := livechatsim.New(livechatsim.Options{ClientID: testClientID, LicenseID: 12345, Now: clk.Now})
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { srv.Close(); sim.Close() })
	cfg := livechat.Config{
		APIURL: srv.URL, AccountsURL: srv.URL, ClientID: testClientID, ClientSecret: "s3cret",
		RefreshToken: "refresh-me", LicenseID: 12345,
	}
	for _, m := range mod {
		m(&cfg)
	}
	e := &env{sim: sim, srv: srv, client: livechat.New(cfg), clock: clk}
	tok, err := e.client.RefreshAgentToken(context.Background())
	if err != nil {
		t.Fatalf("agent token: %v", err)
	}
	e.agent = tok.AccessToken
	return e
}

func (e *env) customer(t testing.TB) livechat.Token {
	t.Helper()
	tok, err := e.client.IssueCustomerToken(context.Background(), e.agent, "")
	if err != nil {
		t.Fatalf("customer token: %v", err)
	}
	return tok
}

func (e *env) startChat(t testing.TB, cust livechat.Token) livechat.StartChatResponse {
	t.Helper()
	g := 0
	res, err := e.client.StartChat(context.Background(), cust.AccessToken, livechat.StartChatRequest{
		GroupID: &g,
		Events: []livechat.Event{
			{Type: "message", Text: "bot: hello", CustomID: "t-1"},
			{Type: "message", Text: "user: I need a person", CustomID: "t-2"},
		},
		Continuous: true,
	})
	if err != nil {
		t.Fatalf("start_chat: %v", err)
	}
	return res
}

func (e *env) setFaults(t testing.TB, f livechatsim.Faults) {
	t.Helper()
	if err := e.sim.SetFaults(f); err != nil {
		t.Fatalf("set faults: %v", err)
	}
}

func chatView(t testing.TB, sim *livechatsim.Sim, id string) livechatsim.ChatView {
	t.Helper()
	for _, c := range sim.Chats() {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("chat %s not in the simulator", id)
	return livechatsim.ChatView{}
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if !strings.HasPrefix(e.agent, "dal:") {
		t.Errorf("agent token %q lacks the region prefix", e.agent)
	}
	if e.client.Region() != "dal" {
		t.Errorf("region = %q, want dal learned from the token", e.client.Region())
	}
	org, err := e.client.OrganizationID(ctx)
	if err != nil || org != livechatsim.DefaultOrganizationID {
		t.Errorf("organization = %q, %v; want it learned from the token answer", org, err)
	}
	first := e.customer(t)
	if first.EntityID == "" || first.ExpiresAt.IsZero() {
		t.Fatalf("customer token lacks entity or expiry: %+v", first)
	}
	again, err := e.client.IssueCustomerToken(ctx, e.agent, first.EntityID)
	if err != nil {
		t.Fatal(err)
	}
	if again.EntityID != first.EntityID || again.AccessToken == first.AccessToken {
		t.Errorf("re-issue gave entity %q token same=%v; want the same customer with a new token",
			again.EntityID, again.AccessToken == first.AccessToken)
	}
	other := e.customer(t)
	if other.EntityID == first.EntityID {
		t.Error("a token without entity_id must create a new customer")
	}
}

func TestTokenErrors(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	// A configured AgentToken makes the sim refuse unknown agent bearers.
	strict := livechatsim.New(livechatsim.Options{AgentToken: "dal:the-one"})
	srv := httptest.NewServer(strict)
	t.Cleanup(func() { srv.Close(); strict.Close() })
	strictClient := livechat.New(livechat.Config{APIURL: srv.URL, AccountsURL: srv.URL, ClientID: testClientID, OrganizationID: livechatsim.DefaultOrganizationID})
	tests := []struct {
		name   string
		call   func() error
		status int
		typ    string
		auth   bool
	}{
		{"wrong client id", func() error {
			_, err := livechat.New(livechat.Config{APIURL: e.srv.URL, AccountsURL: e.srv.URL, ClientID: "nope", RefreshToken: "r"}).RefreshAgentToken(ctx)
			return err
		}, 401, livechat.OAuthInvalidClient, true},
		{"missing refresh token", func() error {
			_, err := livechat.New(livechat.Config{APIURL: e.srv.URL, AccountsURL: e.srv.URL, ClientID: testClientID}).RefreshAgentToken(ctx)
			return err
		}, 400, livechat.OAuthInvalidRequest, false},
		{"agent token revoked", func() error {
			_, err := strictClient.IssueCustomerToken(ctx, "dal:not-a-token", "")
			return err
		}, 401, livechat.OAuthAccessDenied, true},
		{"the configured agent token works", func() error {
			_, err := strictClient.IssueCustomerToken(ctx, "dal:the-one", "")
			return err
		}, 0, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var le *livechat.Error
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want *livechat.Error", err)
			}
			if le.Status != tc.status || le.Type != tc.typ || livechat.IsAuthentication(err) != tc.auth {
				t.Errorf("got status %d type %q auth %v; want %d %q %v", le.Status, le.Type, livechat.IsAuthentication(err), tc.status, tc.typ, tc.auth)
			}
		})
	}
}

func TestEncodedTokensAreDecoded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.setFaults(t, livechatsim.Faults{EncodeTokens: true})
	tok := e.customer(t)
	if strings.Contains(tok.AccessToken, "%") || !strings.HasPrefix(tok.AccessToken, "dal:") {
		t.Fatalf("token %q was not decoded", tok.AccessToken)
	}
	if _, err := e.client.ListGroupStatuses(ctx, tok.AccessToken, nil); err != nil {
		t.Fatalf("decoded token refused: %v", err)
	}
	// A caller holding the encoded form must work too.
	enc := strings.Replace(tok.AccessToken, ":", "%3A", 1)
	if _, err := e.client.ListGroupStatuses(ctx, enc, nil); err != nil {
		t.Fatalf("encoded token refused: %v", err)
	}
}

func TestChatLifecycle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	cust := e.customer(t)
	tok := cust.AccessToken
	start := e.startChat(t, cust)
	if start.ChatID == "" || start.ThreadID == "" || len(start.EventIDs) != 2 || start.EventIDs[0] != start.ThreadID+"_1" {
		t.Fatalf("start_chat = %+v", start)
	}

	// One chat per customer.
	_, err := e.client.StartChat(ctx, tok, livechat.StartChatRequest{Continuous: true})
	if !livechat.IsType(err, livechat.ErrTypeLimitReached) {
		t.Errorf("second start_chat: %v, want limit_reached", err)
	}

	chats, err := e.client.ListChats(ctx, tok, 1)
	if err != nil || len(chats) != 1 || chats[0].ID != start.ChatID || !chats[0].Active || chats[0].LastThreadID != start.ThreadID {
		t.Fatalf("list_chats = %+v, %v", chats, err)
	}

	id, err := e.client.SendEvent(ctx, tok, start.ChatID, livechat.Event{Text: "hello agent", CustomID: "m-1"}, false)
	if err != nil || id != start.ThreadID+"_3" {
		t.Fatalf("send_event = %q, %v", id, err)
	}

	chat, err := e.client.GetChat(ctx, tok, start.ChatID, "")
	if err != nil {
		t.Fatal(err)
	}
	if chat.Thread.ID != start.ThreadID || !chat.Thread.Active || len(chat.Thread.Events) != 3 || chat.Thread.Queue == nil {
		t.Fatalf("get_chat thread = %+v", chat.Thread)
	}
	if ev := chat.Thread.Events[2]; ev.CustomID != "m-1" || ev.Text != "hello agent" || ev.AuthorID != cust.EntityID || ev.CreatedAt.IsZero() || ev.Recipients != "all" {
		t.Errorf("event = %+v", ev)
	}
	if len(chat.Access.GroupIDs) != 1 || chat.Access.GroupIDs[0] != 0 || len(chat.Users) != 1 || chat.Users[0].ID != cust.EntityID {
		t.Errorf("chat access/users = %+v / %+v", chat.Access, chat.Users)
	}

	// The agent answers: the thread leaves the queue and the agent joins.
	if err := e.sim.AgentMessage(start.ChatID, "Hi, I'm Tom"); err != nil {
		t.Fatal(err)
	}
	chat, err = e.client.GetChat(ctx, tok, start.ChatID, start.ThreadID)
	if err != nil || chat.Thread.Queue != nil || len(chat.Users) != 2 || chat.Users[1].Type != "agent" {
		t.Fatalf("after agent message: %+v, %v", chat, err)
	}

	if err := e.client.DeactivateChat(ctx, tok, start.ChatID); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.SendEvent(ctx, tok, start.ChatID, livechat.Event{Text: "still there?", CustomID: "m-2"}, false)
	if !livechat.IsChatInactive(err) || livechat.IsRetryable(err) || livechat.IsUncertain(err) {
		t.Fatalf("send to inactive chat: %v, want chat_inactive (permanent, certain)", err)
	}
	var le *livechat.Error
	if errors.As(err, &le); le.Status != http.StatusUnprocessableEntity || !strings.HasPrefix(err.Error(), "livechat: send_event: chat_inactive") {
		t.Errorf("error = %v (status %d)", err, le.Status)
	}
	// attach_to_last_thread files it in the closed thread without reopening.
	if _, err := e.client.SendEvent(ctx, tok, start.ChatID, livechat.Event{Text: "late note", CustomID: "m-late"}, true); err != nil {
		t.Fatalf("attach_to_last_thread: %v", err)
	}

	res, err := e.client.ResumeChat(ctx, tok, livechat.ResumeChatRequest{ChatID: start.ChatID,
		Events: []livechat.Event{{Text: "still there?", CustomID: "m-2"}}, Continuous: true})
	if err != nil || res.ThreadID == "" || res.ThreadID == start.ThreadID || len(res.EventIDs) != 1 {
		t.Fatalf("resume_chat = %+v, %v", res, err)
	}
	_, err = e.client.ResumeChat(ctx, tok, livechat.ResumeChatRequest{ChatID: start.ChatID, Continuous: true})
	if !livechat.IsType(err, livechat.ErrTypeNotAllowed) {
		t.Errorf("resume of an active chat: %v, want not_allowed", err)
	}

	page, err := e.client.ListThreads(ctx, tok, livechat.ListThreadsRequest{ChatID: start.ChatID, SortOrder: "desc", Limit: 1})
	if err != nil || page.FoundThreads != 2 || len(page.Threads) != 1 || page.Threads[0].ID != res.ThreadID || page.NextPageID == "" {
		t.Fatalf("list_threads page 1 = %+v, %v", page, err)
	}
	page, err = e.client.ListThreads(ctx, tok, livechat.ListThreadsRequest{ChatID: start.ChatID, Limit: 1, PageID: page.NextPageID})
	if err != nil || len(page.Threads) != 1 || page.Threads[0].ID != start.ThreadID || page.PreviousPageID == "" || page.NextPageID != "" {
		t.Fatalf("list_threads page 2 = %+v, %v", page, err)
	}

	// FindEvent looks in the latest thread and the ones before it.
	for _, tc := range []struct {
		customID string
		found    bool
	}{{"m-2", true}, {"m-1", true}, {"t-1", true}, {"never-sent", false}} {
		ev, found, err := e.client.FindEvent(ctx, tok, start.ChatID, tc.customID)
		if err != nil || found != tc.found || (found && ev.CustomID != tc.customID) {
			t.Errorf("FindEvent(%s) = %+v, %v, %v; want found=%v", tc.customID, ev, found, err, tc.found)
		}
	}

	// Another customer cannot see the chat.
	other := e.customer(t)
	if _, err := e.client.GetChat(ctx, other.AccessToken, start.ChatID, ""); !livechat.IsType(err, livechat.ErrTypeNotFound) {
		t.Errorf("foreign get_chat: %v, want not_found", err)
	}
}

func TestCustomerActions(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	cust := e.customer(t)
	tok := cust.AccessToken
	start := e.startChat(t, cust)

	if err := e.client.UpdateCustomer(ctx, tok, livechat.CustomerUpdate{Name: "Ana Souza", Email: "ana@example.com",
		SessionFields: []map[string]string{{"conversation": "c-1"}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.client.SetCustomerSessionFields(ctx, tok, []map[string]string{{"order_id": "123"}, {"channel": "google-chat"}}); err != nil {
		t.Fatal(err)
	}
	v := chatView(t, e.sim, start.ChatID)
	if v.Customer.Name != "Ana Souza" || v.Customer.Email != "ana@example.com" || len(v.Customer.SessionFields) != 2 || v.Customer.SessionFields[0]["order_id"] != "123" {
		t.Errorf("customer = %+v", v.Customer)
	}
	err := e.client.SetCustomerSessionFields(ctx, tok, []map[string]string{{"a": "1", "b": "2"}})
	if !livechat.IsType(err, livechat.ErrTypeValidation) {
		t.Errorf("two keys in one session field: %v, want validation", err)
	}
	if err := e.client.SendSneakPeek(ctx, tok, start.ChatID, "I have a prob"); err != nil {
		t.Fatal(err)
	}

	statuses, err := e.client.ListGroupStatuses(ctx, tok, nil)
	if err != nil || statuses[0] != livechat.GroupOnline {
		t.Errorf("list_group_statuses all = %v, %v", statuses, err)
	}
	e.setFaults(t, livechatsim.Faults{AgentsOffline: true})
	statuses, err = e.client.ListGroupStatuses(ctx, tok, []int{0, 19})
	if err != nil || len(statuses) != 2 || statuses[19] != livechat.GroupOffline {
		t.Errorf("list_group_statuses ids = %v, %v", statuses, err)
	}
	fresh := e.customer(t)
	_, err = e.client.StartChat(ctx, fresh.AccessToken, livechat.StartChatRequest{Events: []livechat.Event{{Text: "hi"}}})
	if !livechat.IsType(err, livechat.ErrTypeGroupsOffline) {
		t.Errorf("start_chat with agents offline: %v, want groups_offline", err)
	}
	if _, err := e.client.StartChat(ctx, fresh.AccessToken, livechat.StartChatRequest{Continuous: true}); err != nil {
		t.Errorf("continuous start_chat with agents offline: %v", err)
	}
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	cust := e.customer(t)
	start := e.startChat(t, cust)
	tests := []struct {
		name string
		ev   livechat.Event
	}{
		{"empty text", livechat.Event{Type: "message"}},
		{"unknown type", livechat.Event{Type: "smoke_signal", Text: "x"}},
		{"file without url", livechat.Event{Type: "file"}},
		{"bad recipients", livechat.Event{Text: "x", Recipients: "everyone"}},
		// LiveChat requires a system message's type (its text is optional).
		{"system message without its type", livechat.Event{Type: "system_message", Text: "x"}},
		{"system event (not sendable in 3.6)", livechat.Event{Type: "system", Text: "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.SendEvent(ctx, cust.AccessToken, start.ChatID, tc.ev, false)
			var le *livechat.Error
			if !errors.As(err, &le) || le.Type != livechat.ErrTypeValidation || le.Status != 400 || le.Retryable() {
				t.Errorf("err = %v, want validation 400", err)
			}
		})
	}
	// A customer may send a system message of its own type, with or
	// without text.
	for _, ev := range []livechat.Event{{Type: "system_message", SystemMessageType: "handoff_cancelled", Text: "left"}, {Type: "system_message", SystemMessageType: "handoff_cancelled"}} {
		if _, err := e.client.SendEvent(ctx, cust.AccessToken, start.ChatID, ev, false); err != nil {
			t.Errorf("customer system message %+v: %v", ev, err)
		}
	}
	// Over-long text is refused before it leaves the client...
	long := strings.Repeat("a", livechat.MaxTextBytes+1)
	if _, err := e.client.SendEvent(ctx, cust.AccessToken, start.ChatID, livechat.Event{Text: long}, false); err == nil {
		t.Error("client sent text over MaxTextBytes")
	}
	// ...and by the simulator when someone else sends it.
	body := `{"chat_id":"` + start.ChatID + `","event":{"type":"message","text":"` + long + `"}}`
	status, answer := rawPost(t, e, "/v3.6/customer/action/send_event?organization_id="+livechatsim.DefaultOrganizationID, cust.AccessToken, body)
	if status != 400 || !strings.Contains(answer, `"type":"validation"`) {
		t.Errorf("sim took long text: %d %s", status, answer)
	}
	status, answer = rawPost(t, e, "/v3.6/customer/action/send_event", cust.AccessToken, `{}`)
	if status != 400 || !strings.Contains(answer, "organization_id") {
		t.Errorf("no organization_id: %d %s", status, answer)
	}
	status, answer = rawPost(t, e, "/v3.6/customer/action/send_event?organization_id="+livechatsim.DefaultOrganizationID, cust.AccessToken, `{"chat_id":`)
	if status != 400 || !strings.Contains(answer, `"validation"`) {
		t.Errorf("malformed JSON: %d %s", status, answer)
	}
}

func rawPost(t testing.TB, e *env, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestErrorTypes injects every error type of the reference and checks the
// status, the envelope and the client's classification.
func TestErrorTypes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tok := e.customer(t).AccessToken
	retryable := map[string]bool{"internal": true, "service_unavailable": true, "request_timeout": true,
		"too_many_requests": true, "pending_requests_limit_reached": true}
	uncertain := map[string]bool{"internal": true, "service_unavailable": true, "request_timeout": true}
	status := map[string]int{
		"validation": 400, "unsupported_version": 400, "wrong_product_version": 400,
		"authentication": 401, "license_expired": 402, "authorization": 403, "customer_banned": 403,
		"not_found": 404, "group_not_found": 404, "greeting_not_found": 404, "license_not_found": 404,
		"entity_too_large": 413, "misdirected_request": 421,
		"chat_inactive": 422, "chat_anonymized": 422, "group_offline": 422, "groups_offline": 422,
		"group_unavailable": 422, "limit_reached": 422, "users_limit_reached": 422, "not_allowed": 422,
		"too_many_requests": 429, "pending_requests_limit_reached": 429,
		"internal": 500, "service_unavailable": 503, "request_timeout": 504,
	}
	if len(status) != len(livechat.ErrorTypes) {
		t.Fatalf("table covers %d types, the reference lists %d", len(status), len(livechat.ErrorTypes))
	}
	for _, typ := range livechat.ErrorTypes {
		t.Run(typ, func(t *testing.T) {
			e.setFaults(t, livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Action: "list_group_statuses", Rate: 1, Type: typ,
				Data: map[string]any{"region": "dal"}}}})
			defer e.sim.ResetFaults()
			_, err := e.client.ListGroupStatuses(ctx, tok, nil)
			var le *livechat.Error
			if !errors.As(err, &le) {
				t.Fatalf("err = %v", err)
			}
			if le.Type != typ || le.Status != status[typ] || le.Action != "list_group_statuses" || le.Message == "" {
				t.Errorf("got %+v, want type %s status %d", le, typ, status[typ])
			}
			if got := livechat.IsRetryable(err); got != retryable[typ] {
				t.Errorf("IsRetryable = %v", got)
			}
			if got := livechat.IsUncertain(err); got != uncertain[typ] {
				t.Errorf("IsUncertain = %v", got)
			}
			if got := livechat.IsAuthentication(err); got != (typ == "authentication") {
				t.Errorf("IsAuthentication = %v", got)
			}
			if got := livechat.IsChatInactive(err); got != (typ == "chat_inactive") {
				t.Errorf("IsChatInactive = %v", got)
			}
		})
	}
	// The status comes from the fault when given, and classification
	// falls back to it: a 502 without a known type is retryable and
	// uncertain.
	e.setFaults(t, livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Action: "*", Rate: 1, Type: "bad_gateway", Status: 502}}})
	_, err := e.client.ListGroupStatuses(ctx, tok, nil)
	if !livechat.IsRetryable(err) || !livechat.IsUncertain(err) {
		t.Errorf("502: %v retryable=%v uncertain=%v", err, livechat.IsRetryable(err), livechat.IsUncertain(err))
	}
}

func TestRetryAfter(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tok := e.customer(t).AccessToken
	date := time.Now().Add(2 * time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		name     string
		faults   livechatsim.Faults
		min, max time.Duration
	}{
		{"rate limit seconds", livechatsim.Faults{RateLimit: &livechatsim.RateLimit{Rate: 1, RetryAfterS: 7}}, 7 * time.Second, 7 * time.Second},
		{"seconds on 503", livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Rate: 1, Type: "service_unavailable", RetryAfter: "30"}}}, 30 * time.Second, 30 * time.Second},
		// An HTTP date is relative to now; the bounds leave room for a
		// slow machine without asserting on timing.
		{"http date", livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Rate: 1, Type: "too_many_requests", RetryAfter: date}}}, time.Hour, 2 * time.Hour},
		{"date in the past", livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Rate: 1, Type: "too_many_requests", RetryAfter: "Mon, 02 Jan 2006 15:04:05 GMT"}}}, 0, 0},
		{"garbage", livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Rate: 1, Type: "too_many_requests", RetryAfter: "soon"}}}, 0, 0},
		{"absent", livechatsim.Faults{RateLimit: &livechatsim.RateLimit{Rate: 1}}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.setFaults(t, tc.faults)
			defer e.sim.ResetFaults()
			_, err := e.client.ListGroupStatuses(ctx, tok, nil)
			if !livechat.IsType(err, livechat.ErrTypeTooManyRequests) && !livechat.IsType(err, livechat.ErrTypeServiceUnavailable) {
				t.Fatalf("err = %v", err)
			}
			if d := livechat.RetryAfter(err); d < tc.min || d > tc.max {
				t.Errorf("RetryAfter = %v, want in [%v, %v]", d, tc.min, tc.max)
			}
			if !livechat.IsRetryable(err) {
				t.Error("not retryable")
			}
		})
	}
}

// TestTokenExpiry: after the lifetime the token is refused with
// authentication; re-issuing for the same entity continues the same
// customer and chat.
func TestTokenExpiry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	cust := e.customer(t)
	start := e.startChat(t, cust)
	e.clock.Add(livechatsim.DefaultTokenLifetime + time.Second)

	_, err := e.client.SendEvent(ctx, cust.AccessToken, start.ChatID, livechat.Event{Text: "x", CustomID: "a"}, false)
	if !livechat.IsAuthentication(err) || livechat.IsRetryable(err) {
		t.Fatalf("expired token: %v, want authentication", err)
	}
	// The agent token expired too; the accounts service says so.
	if _, err := e.client.IssueCustomerToken(ctx, e.agent, cust.EntityID); !livechat.IsAuthentication(err) {
		t.Fatalf("expired agent token: %v, want an authentication error", err)
	}
	agent, err := e.client.RefreshAgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.agent = agent.AccessToken
	again, err := e.client.IssueCustomerToken(ctx, agent.AccessToken, cust.EntityID)
	if err != nil || again.EntityID != cust.EntityID {
		t.Fatalf("re-issue: %+v, %v", again, err)
	}
	if _, err := e.client.SendEvent(ctx, again.AccessToken, start.ChatID, livechat.Event{Text: "x", CustomID: "a"}, false); err != nil {
		t.Fatalf("send with re-issued token: %v", err)
	}
	if chats := e.sim.Chats(); len(chats) != 1 || chats[0].Customer.ID != cust.EntityID || len(chats[0].Events) != 3 {
		t.Errorf("want one chat of the same customer with 3 events, got %+v", chats)
	}

	// A shorter lifetime set through faults applies to new tokens.
	e.setFaults(t, livechatsim.Faults{TokenLifetimeS: 60})
	short := e.customer(t)
	if d := short.ExpiresAt.Sub(time.Now()); d > 2*time.Minute {
		t.Errorf("token lifetime fault ignored: expires in %v", d)
	}
}

func TestMisdirectedRegion(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tok := e.customer(t).AccessToken
	e.setFaults(t, livechatsim.Faults{Region: "fra"})
	if _, err := e.client.ListGroupStatuses(ctx, tok, nil); err != nil {
		t.Fatalf("call after misdirection: %v", err)
	}
	if e.client.Region() != "fra" {
		t.Errorf("region = %q, want fra", e.client.Region())
	}
	st := e.sim.Stats()["list_group_statuses"]
	if st[421] != 1 || st[200] != 1 {
		t.Errorf("stats = %v, want one 421 then one 200", st)
	}
	// From now on the right region is sent first time.
	if _, err := e.client.ListGroupStatuses(ctx, tok, nil); err != nil {
		t.Fatal(err)
	}
	if st := e.sim.Stats()["list_group_statuses"]; st[421] != 1 {
		t.Errorf("misdirected again: %v", st)
	}
}

// TestUnknownOutcome is the reason FindEvent exists: the sim applies the
// send and drops the connection; the client must call it uncertain, and a
// reconciliation must find the event so it is not sent twice.
func TestUnknownOutcome(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	cust := e.customer(t)
	start := e.startChat(t, cust)
	e.setFaults(t, livechatsim.Faults{DropAfterApply: &livechatsim.Drop{Rate: 1, Actions: []string{"send_event"}}})

	ev := livechat.Event{Text: "did this arrive?", CustomID: "evt-uncertain-1"}
	_, err := e.client.SendEvent(ctx, cust.AccessToken, start.ChatID, ev, false)
	if err == nil || !livechat.IsUncertain(err) || !livechat.IsRetryable(err) {
		t.Fatalf("dropped send: %v; uncertain=%v retryable=%v", err, livechat.IsUncertain(err), livechat.IsRetryable(err))
	}
	e.sim.ResetFaults()

	// What a worker does: reconcile, and send only if not found.
	got, found, err := e.client.FindEvent(ctx, cust.AccessToken, start.ChatID, ev.CustomID)
	if err != nil || !found || got.Text != ev.Text {
		t.Fatalf("FindEvent = %+v, %v, %v", got, found, err)
	}
	if !found {
		_, _ = e.client.SendEvent(ctx, cust.AccessToken, start.ChatID, ev, false)
	}
	n := 0
	for _, x := range chatView(t, e.sim, start.ChatID).Events {
		if x.CustomID == ev.CustomID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("event %s is in the chat %d times, want 1", ev.CustomID, n)
	}
}

func TestTransportErrors(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := livechat.New(livechat.Config{APIURL: url, AccountsURL: url, OrganizationID: "org"})
	_, err := c.SendEvent(ctx, "dal:x", "CHAT", livechat.Event{Text: "x"}, false)
	if err == nil || !livechat.IsRetryable(err) || livechat.IsUncertain(err) {
		t.Errorf("connection refused: %v; want retryable and certain (nothing was sent)", err)
	}
	if !strings.HasPrefix(err.Error(), "livechat: send_event:") {
		t.Errorf("error lacks the operation: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.SendEvent(cctx, "dal:x", "CHAT", livechat.Event{Text: "x"}, false); livechat.IsRetryable(err) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v; want context.Canceled, not retryable", err)
	}
}

func TestOrganizationLookup(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tests := []struct {
		name    string
		license int
		want    string
		errType string
	}{
		{"known license", 12345, livechatsim.DefaultOrganizationID, ""},
		{"unknown license", 999, "", livechat.ErrTypeLicenseNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := livechat.New(livechat.Config{APIURL: e.srv.URL, AccountsURL: e.srv.URL, LicenseID: tc.license})
			org, err := c.OrganizationID(ctx)
			if org != tc.want || (tc.errType == "" && err != nil) || (tc.errType != "" && !livechat.IsType(err, tc.errType)) {
				t.Errorf("OrganizationID = %q, %v", org, err)
			}
		})
	}
	none := livechat.New(livechat.Config{APIURL: e.srv.URL})
	if _, err := none.ListChats(ctx, "dal:x", 1); err == nil || !strings.Contains(err.Error(), "list_chats") {
		t.Errorf("no organization configured: %v", err)
	}
}

func TestUnsupportedVersion(t *testing.T) {
	e := newEnv(t, func(c *livechat.Config) { c.Version = "3.3" })
	_, err := e.client.ListChats(context.Background(), e.customer(t).AccessToken, 1)
	if !livechat.IsType(err, livechat.ErrTypeUnsupportedVersion) {
		t.Errorf("err = %v, want unsupported_version", err)
	}
	for _, v := range []string{"3.5", "3.7"} {
		e := newEnv(t, func(c *livechat.Config) { c.Version = v })
		tok := e.customer(t)
		e.startChat(t, tok)
		if chats, err := e.client.ListChats(context.Background(), tok.AccessToken, 1); err != nil || len(chats) != 1 {
			t.Errorf("version %s list_chats = %v, %v", v, chats, err)
		}
	}
}

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLoggingRedactsAndWarnsOnce(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := newEnv(t, func(c *livechat.Config) { c.Logger = logger })
	cust := e.customer(t)
	e.setFaults(t, livechatsim.Faults{Legacy: "2026-12-31"})
	for range 3 {
		if _, err := e.client.ListGroupStatuses(context.Background(), cust.AccessToken, nil); err != nil {
			t.Fatal(err)
		}
	}
	out := buf.String()
	for _, secret := range []string{e.agent, cust.AccessToken, "s3cret", "refresh-me"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret %q", secret)
		}
	}
	if !strings.Contains(out, "REDACTED") {
		t.Error("no redaction marker: bodies were not logged at debug")
	}
	if n := strings.Count(out, "level=WARN"); n != 1 || !strings.Contains(out, "2026-12-31") {
		t.Errorf("Legacy warned %d times, want once:\n%s", n, out)
	}
}

func TestWebhooksEndToEnd(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	got := make(chan []byte, 16)
	fails := 1 // the first delivery is refused, to see LiveChat's retry
	var mu sync.Mutex
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		refuse := fails > 0
		fails--
		mu.Unlock()
		if refuse {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got <- b
	}))
	t.Cleanup(recv.Close)

	ids := map[string]string{}
	for _, action := range []string{livechat.ActionIncomingEvent, livechat.ActionChatDeactivated} {
		id, err := e.client.RegisterWebhook(ctx, e.agent, livechat.Webhook{URL: recv.URL, Description: "handoff", Action: action,
			SecretKey: "hook-secret", Filters: map[string]any{"author_type": "agent"}, AdditionalData: []string{"chat_properties"}})
		if err != nil {
			t.Fatalf("register %s: %v", action, err)
		}
		ids[action] = id
	}
	extra, err := e.client.RegisterWebhook(ctx, e.agent, livechat.Webhook{URL: recv.URL, Action: "incoming_chat", SecretKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := e.client.ListWebhooks(ctx, e.agent)
	if err != nil || len(hooks) != 3 || hooks[0].OwnerClientID != testClientID || hooks[0].Type != "license" {
		t.Fatalf("list_webhooks = %+v, %v", hooks, err)
	}
	if err := e.client.UnregisterWebhook(ctx, e.agent, extra); err != nil {
		t.Fatal(err)
	}
	if err := e.client.UnregisterWebhook(ctx, e.agent, extra); !livechat.IsType(err, livechat.ErrTypeNotFound) {
		t.Errorf("second unregister: %v, want not_found", err)
	}
	if on, err := e.client.LicenseWebhooksEnabled(ctx, e.agent); err != nil || on {
		t.Fatalf("enabled before enable_license_webhooks: %v %v", on, err)
	}
	if _, err := e.client.RegisterWebhook(ctx, e.agent, livechat.Webhook{Action: "incoming_event", SecretKey: "k"}); !livechat.IsType(err, livechat.ErrTypeValidation) {
		t.Errorf("register without url: %v", err)
	}

	cust := e.customer(t)
	start := e.startChat(t, cust)
	// Not yet enabled: nothing is delivered for this message.
	if err := e.sim.AgentMessage(start.ChatID, "too early"); err != nil {
		t.Fatal(err)
	}
	if err := e.client.EnableLicenseWebhooks(ctx, e.agent); err != nil {
		t.Fatal(err)
	}
	// The customer's own message is filtered out by author_type=agent.
	if _, err := e.client.SendEvent(ctx, cust.AccessToken, start.ChatID, livechat.Event{Text: "mine", CustomID: "c"}, false); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.AgentMessage(start.ChatID, "Hi, I'm Tom"); err != nil {
		t.Fatal(err)
	}
	d := receive(t, got)
	if !d.CheckSecret("hook-secret") || d.CheckSecret("wrong") || d.WebhookID != ids[livechat.ActionIncomingEvent] || d.OrganizationID != livechatsim.DefaultOrganizationID {
		t.Errorf("delivery = %+v", d)
	}
	in, err := d.IncomingEvent()
	if err != nil || in.ChatID != start.ChatID || in.Event.Text != "Hi, I'm Tom" || in.Event.AuthorID != livechatsim.AgentID || in.Event.Visibility != "all" {
		t.Errorf("incoming_event = %+v, %v", in, err)
	}

	if err := e.sim.CloseChat(start.ChatID); err != nil {
		t.Fatal(err)
	}
	d = receive(t, got)
	cd, err := d.ChatDeactivated()
	if err != nil || cd.ChatID != start.ChatID || cd.ThreadID != start.ThreadID || cd.UserID != livechatsim.AgentID {
		t.Errorf("chat_deactivated = %+v, %v", cd, err)
	}
	if err := e.sim.CloseChat(start.ChatID); !errors.Is(err, livechatsim.ErrChatInactive) {
		t.Errorf("second close: %v", err)
	}
	select {
	case b := <-got:
		t.Errorf("unexpected extra delivery: %s", b)
	default:
	}
}

func receive(t *testing.T, ch chan []byte) livechat.WebhookDelivery {
	t.Helper()
	select {
	case b := <-ch:
		d, err := livechat.ParseWebhook(b)
		if err != nil {
			t.Fatalf("parse %s: %v", b, err)
		}
		return d
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook delivered")
	}
	return livechat.WebhookDelivery{}
}

func TestControlAPI(t *testing.T) {
	e := newEnv(t)
	cust := e.customer(t)
	start := e.startChat(t, cust)
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"POST", "/_sim/chats/" + start.ChatID + "/agent_message", `{"text":"hello from the agent"}`, 200, start.ThreadID + "_3"},
		{"POST", "/_sim/chats/" + start.ChatID + "/agent_message", `{"text":"note","visibility":"agents"}`, 200, "event_id"},
		{"POST", "/_sim/chats/NOPE/agent_message", `{"text":"x"}`, 404, "no such chat"},
		{"POST", "/_sim/chats/" + start.ChatID + "/agent_message", `{}`, 400, "text"},
		{"GET", "/_sim/chats", "", 200, `"custom_id":"t-2"`},
		{"PUT", "/_sim/faults", `{"latency":{"fixed_ms":1,"tail_ms":5,"tail_ratio":0.01},"errors":[{"action":"send_event","rate":0.1,"status":503,"type":"service_unavailable"}],"rate_limit":{"rate":0.05,"retry_after_s":1},"drop_after_apply":{"rate":0.01},"agents_offline":true,"token_lifetime_s":3600}`, 200, `"agents_offline":true`},
		{"PUT", "/_sim/faults", `{"errors":[{"rate":2}]}`, 400, "rate"},
		{"PUT", "/_sim/faults", `{"unknown":1}`, 400, "unknown"},
		{"GET", "/_sim/faults", "", 200, `"retry_after_s":1`},
		{"DELETE", "/_sim/faults", "", 200, "{}"},
		{"POST", "/_sim/chats/" + start.ChatID + "/close", `{"by_router":true}`, 200, "{}"},
		{"POST", "/_sim/chats/" + start.ChatID + "/close", ``, 409, "inactive"},
		{"GET", "/_sim/stats", "", 200, `"start_chat":{"200":1}`},
		{"POST", "/_sim/reset", "", 200, "{}"},
		{"GET", "/_sim/chats", "", 200, "[]"},
	}
	for _, tc := range tests {
		status, body := do(tc.method, tc.path, tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s = %d %s; want %d containing %q", tc.method, tc.path, status, body, tc.status, tc.contains)
		}
	}
	var chats []livechatsim.ChatView
	_, body := do("GET", "/_sim/chats", "")
	if err := json.Unmarshal([]byte(body), &chats); err != nil || len(chats) != 0 {
		t.Errorf("after reset: %s", body)
	}
}

// rawCall posts body to a simulator path with the given Authorization and
// Content-Type and returns the status and answer.
func rawCall(t *testing.T, e *env, method, path, auth, ctype, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// LiveChat's actions are enable_license_webhooks and
// disable_license_webhooks (plural); the singular never existed, and a
// client calling it would never get a webhook from the real LiveChat.
func TestLicenseWebhooksPlural(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	got := make(chan []byte, 16)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- b
	}))
	t.Cleanup(recv.Close)
	if _, err := e.client.RegisterWebhook(ctx, e.agent, livechat.Webhook{URL: recv.URL, Action: livechat.ActionIncomingEvent,
		SecretKey: "k", Filters: map[string]any{"author_type": "agent"}}); err != nil {
		t.Fatal(err)
	}
	status, body := rawCall(t, e, "POST", "/v3.6/configuration/action/enable_license_webhook", "Bearer "+e.agent, "application/json", `{}`)
	if status != http.StatusNotFound || !strings.Contains(body, `"not_found"`) {
		t.Errorf("singular enable_license_webhook = %d %s, want LiveChat's not_found", status, body)
	}
	if err := e.client.EnableLicenseWebhooks(ctx, e.agent); err != nil {
		t.Fatal(err)
	}
	if on, err := e.client.LicenseWebhooksEnabled(ctx, e.agent); err != nil || !on {
		t.Fatalf("after enable_license_webhooks: %v %v", on, err)
	}
	chat := e.startChat(t, e.customer(t))
	if err := e.sim.AgentMessage(chat.ChatID, "on"); err != nil {
		t.Fatal(err)
	}
	if in, err := receive(t, got).IncomingEvent(); err != nil || in.Event.Text != "on" {
		t.Fatalf("delivery while enabled = %+v, %v", in, err)
	}
	if err := e.client.DisableLicenseWebhooks(ctx, e.agent); err != nil {
		t.Fatal(err)
	}
	if on, err := e.client.LicenseWebhooksEnabled(ctx, e.agent); err != nil || on {
		t.Fatalf("after disable_license_webhooks: %v %v", on, err)
	}
	if err := e.sim.AgentMessage(chat.ChatID, "off"); err != nil {
		t.Fatal(err)
	}
	// Re-enabling proves the sender is idle: the next delivery is "again",
	// not the "off" message.
	if err := e.client.EnableLicenseWebhooks(ctx, e.agent); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.AgentMessage(chat.ChatID, "again"); err != nil {
		t.Fatal(err)
	}
	if in, err := receive(t, got).IncomingEvent(); err != nil || in.Event.Text != "again" {
		t.Errorf("delivery after disable and enable = %+v, %v; the message sent while disabled must not fire", in, err)
	}
	stats := e.sim.Stats()
	if stats["enable_license_webhooks"][200] != 2 || stats["disable_license_webhooks"][200] != 1 {
		t.Errorf("stats = %v", stats)
	}
}

// owner_client_id is needed only with a Personal Access Token: a bearer
// token was issued to an app, and LiveChat takes the owner from it.
func TestWebhookOwnerOnlyWithPersonalAccessToken(t *testing.T) {
	e := newEnv(t)
	pat := "Basic " + base64.StdEncoding.EncodeToString([]byte("account:pat"))
	bearer := "Bearer " + e.agent
	hook := func(owner string) string {
		b, _ := json.Marshal(map[string]any{"url": "https://gw.example/hook", "action": "incoming_event", "secret_key": "k",
			"type": "license", "owner_client_id": owner})
		return strings.Replace(string(b), `,"owner_client_id":""`, "", 1)
	}
	tests := []struct {
		name, action, auth, body string
		status                   int
		contains                 string
	}{
		{"bearer registers without owner", "register_webhook", bearer, hook(""), 200, `"id"`},
		{"bearer lists without owner", "list_webhooks", bearer, `{}`, 200, `"owner_client_id":"` + testClientID + `"`},
		{"bearer states without owner", "get_license_webhooks_state", bearer, `{}`, 200, `"license_webhooks_enabled":false`},
		{"bearer enables without owner", "enable_license_webhooks", bearer, `{}`, 200, `{}`},
		{"bearer naming its own app", "list_webhooks", bearer, `{"owner_client_id":"` + testClientID + `"}`, 200, `"incoming_event"`},
		{"bearer naming another app", "list_webhooks", bearer, `{"owner_client_id":"someone-else"}`, 403, `"authorization"`},
		{"PAT without owner", "register_webhook", pat, hook(""), 400, "owner_client_id"},
		{"PAT without owner lists", "list_webhooks", pat, `{}`, 400, "owner_client_id"},
		{"PAT with owner", "list_webhooks", pat, `{"owner_client_id":"` + testClientID + `"}`, 200, `"incoming_event"`},
		{"PAT unregisters with owner", "unregister_webhook", pat, `{"id":"nope","owner_client_id":"` + testClientID + `"}`, 404, `"not_found"`},
	}
	for _, tc := range tests {
		status, body := rawCall(t, e, "POST", "/v3.6/configuration/action/"+tc.action, tc.auth, "application/json", tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %d %s; want %d containing %s", tc.name, status, body, tc.status, tc.contains)
		}
	}
	// The client sends owner_client_id exactly when it holds a PAT.
	ctx := context.Background()
	hooks, err := e.client.ListWebhooks(ctx, pat)
	if err != nil || len(hooks) != 1 {
		t.Errorf("client with a PAT: %+v, %v", hooks, err)
	}
	if _, err := e.client.ListWebhooks(ctx, e.agent); err != nil {
		t.Errorf("client with a bearer: %v", err)
	}
}

// The accounts service takes a token request as JSON as well as a form.
func TestTokenAcceptsJSONAndForm(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, ctype, body string
		status            int
		contains          string
	}{
		{"json", "application/json", `{"grant_type":"refresh_token","refresh_token":"r","client_id":"` + testClientID + `","client_secret":"s"}`, 200, `"access_token":"dal:`},
		{"json with charset", "application/json; charset=utf-8", `{"grant_type":"refresh_token","refresh_token":"r","client_id":"` + testClientID + `"}`, 200, `"token_type":"Bearer"`},
		{"form", "application/x-www-form-urlencoded", "grant_type=refresh_token&refresh_token=r&client_id=" + testClientID, 200, `"access_token":"dal:`},
		{"json wrong grant", "application/json", `{"grant_type":"password","client_id":"` + testClientID + `"}`, 400, "unsupported_grant_type"},
		{"json broken", "application/json", `{"grant_type":`, 400, "invalid_request"},
		{"json not strings", "application/json", `{"grant_type":["refresh_token"]}`, 400, "invalid_request"},
	}
	for _, tc := range tests {
		status, body := rawCall(t, e, "POST", "/v2/token", "", tc.ctype, tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %d %s; want %d containing %s", tc.name, status, body, tc.status, tc.contains)
		}
	}
}

// Events keep what makes them what they are: a file its metadata, a rich
// message its template and cards, a filled form its answers; both sides
// read them back.
func TestEventsKeepTheirContent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	cust := e.customer(t)
	start := e.startChat(t, cust)
	file := livechat.Event{Type: "file", CustomID: "f-1", URL: "https://cdn.livechat-files.com/api/file/lc/att/1/receipt.png",
		Name: "receipt.png", ContentType: "image/png", Size: 48213, Width: 640, Height: 480,
		ThumbnailURL: "https://cdn.livechat-files.com/api/file/lc/att/1/receipt-thumb.png"}
	form := livechat.Event{Type: "filled_form", CustomID: "form-1",
		Fields: []livechat.FormField{{Type: "name", Label: "Your name", Value: "Ana"}, {Type: "email", Label: "E-mail", Value: "ana@example.com"}}}
	for _, ev := range []livechat.Event{file, form} {
		if _, err := e.client.SendEvent(ctx, cust.AccessToken, start.ChatID, ev, false); err != nil {
			t.Fatalf("send %s: %v", ev.Type, err)
		}
	}
	rich := livechat.Event{Type: "rich_message", TemplateID: "quick_replies", Elements: livechat.RichElements{{Title: "Pick one",
		Buttons: []livechat.RichButton{{Text: "Yes", Type: "message", Value: "yes", PostbackID: "yes"}}}}}
	richID, err := e.client.AgentSendEvent(ctx, e.agent, start.ChatID, rich, false)
	if err != nil {
		t.Fatal(err)
	}
	customerSide, err := e.client.GetChat(ctx, cust.AccessToken, start.ChatID, "")
	if err != nil {
		t.Fatal(err)
	}
	agentSide, err := e.client.AgentGetChat(ctx, e.agent, start.ChatID, "")
	if err != nil {
		t.Fatal(err)
	}
	for side, chat := range map[string]livechat.Chat{"customer": customerSide, "agent": agentSide} {
		byType := map[string]livechat.Event{}
		for _, ev := range chat.Thread.Events {
			byType[ev.Type] = ev
		}
		f := byType["file"]
		if f.URL != file.URL || f.Name != file.Name || f.ContentType != file.ContentType || f.Size != file.Size ||
			f.Width != file.Width || f.Height != file.Height || f.ThumbnailURL != file.ThumbnailURL {
			t.Errorf("%s side: file = %+v, want every field of %+v", side, f, file)
		}
		if got := byType["filled_form"].Fields; len(got) != 2 || got[0] != form.Fields[0] || got[1] != form.Fields[1] {
			t.Errorf("%s side: filled_form fields = %+v", side, got)
		}
		r := byType["rich_message"]
		if r.ID != richID || r.TemplateID != "quick_replies" || len(r.Elements) != 1 || r.Elements[0].Buttons[0].PostbackID != "yes" {
			t.Errorf("%s side: rich_message = %+v", side, r)
		}
	}
	if err := e.client.SendRichMessagePostback(ctx, cust.AccessToken, start.ChatID, start.ThreadID, richID, "yes", true); err != nil {
		t.Errorf("postback: %v", err)
	}
	if err := e.client.SendRichMessagePostback(ctx, cust.AccessToken, start.ChatID, start.ThreadID, richID, "no-such", true); !livechat.IsType(err, livechat.ErrTypeNotFound) {
		t.Errorf("postback of a button that is not there: %v, want not_found", err)
	}
	if err := e.client.SendRichMessagePostback(ctx, cust.AccessToken, start.ChatID, start.ThreadID, start.ThreadID+"_1", "yes", true); !livechat.IsType(err, livechat.ErrTypeValidation) {
		t.Errorf("postback on a plain message: %v, want validation", err)
	}
}

// The summary, customer and user fields LiveChat documents are there.
func TestSummaryCustomerAndAgentFields(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	cust := e.customer(t)
	start := e.startChat(t, cust)
	chats, err := e.client.ListChats(ctx, cust.AccessToken, 10)
	if err != nil || len(chats) != 1 || !chats[0].LastThreadCreatedAt.Equal(e.clock.Now()) {
		t.Errorf("list_chats = %+v, %v; want last_thread_created_at", chats, err)
	}
	c, err := e.client.GetCustomer(ctx, cust.AccessToken)
	if err != nil || c.ID != cust.EntityID || c.EmailVerified || !c.Present || !c.EventsSeenUpTo.IsZero() {
		t.Errorf("get_customer before seen = %+v, %v", c, err)
	}
	seen := e.clock.Now().Add(time.Minute)
	if err := e.client.MarkEventsAsSeen(ctx, cust.AccessToken, start.ChatID, seen); err != nil {
		t.Fatal(err)
	}
	// An earlier time does not move it back.
	if err := e.client.MarkEventsAsSeen(ctx, cust.AccessToken, start.ChatID, seen.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := e.client.MarkEventsAsSeen(ctx, cust.AccessToken, "NOSUCHCHAT", seen); !livechat.IsType(err, livechat.ErrTypeNotFound) {
		t.Errorf("mark_events_as_seen of another chat: %v", err)
	}
	c, err = e.client.GetCustomer(ctx, cust.AccessToken)
	if err != nil || !c.EventsSeenUpTo.Equal(seen) {
		t.Errorf("get_customer after seen = %+v, %v; want events_seen_up_to %v", c, err, seen)
	}
	if err := e.sim.AgentMessage(start.ChatID, "hi"); err != nil {
		t.Fatal(err)
	}
	chat, err := e.client.GetChat(ctx, cust.AccessToken, start.ChatID, "")
	if err != nil || len(chat.Users) != 2 {
		t.Fatalf("get_chat = %+v, %v", chat, err)
	}
	if a := chat.Users[1]; a.Type != "agent" || a.Avatar == "" || a.JobTitle == "" || a.Name == "" || !a.Present {
		t.Errorf("agent user = %+v, want name, avatar and job_title", a)
	}
	if err := e.sim.CloseChat(start.ChatID); err != nil {
		t.Fatal(err)
	}
	if c, err := e.client.GetCustomer(ctx, cust.AccessToken); err != nil || c.Present {
		t.Errorf("get_customer after the chat ended = %+v, %v; want present false", c, err)
	}
}

// get_dynamic_configuration names the license by license_id or, as the
// Go SDK sends it, by organization_id.
func TestDynamicConfigurationByOrganization(t *testing.T) {
	e := newEnv(t)
	base := "/v3.6/customer/action/get_dynamic_configuration?group_id=0&"
	tests := []struct {
		query    string
		status   int
		contains string
	}{
		{"license_id=12345", 200, `"organization_id":"` + livechatsim.DefaultOrganizationID + `"`},
		{"organization_id=" + livechatsim.DefaultOrganizationID, 200, `"online_group_ids":[0]`},
		{"organization_id=not-ours", 400, "organization_id"},
		{"license_id=999", 404, "license_not_found"},
		{"", 400, "license_id"},
	}
	for _, tc := range tests {
		status, body := rawCall(t, e, "GET", base+tc.query, "", "", "")
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s: %d %s; want %d containing %s", tc.query, status, body, tc.status, tc.contains)
		}
	}
}

// The Agent Chat API subset: list_chats with filters and stable paging,
// get_chat and list_threads with every event, send_event as the agent,
// add_user_to_chat, transfer_chat and deactivate_chat, with LiveChat's
// envelopes and errors.
func TestAgentChatAPI(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	lc := e.client
	var chats []string
	for i := range 5 {
		cust := e.customer(t)
		g := i % 2
		res, err := lc.StartChat(ctx, cust.AccessToken, livechat.StartChatRequest{GroupID: &g, Continuous: true,
			Properties: map[string]map[string]any{"handoff": {"conversation": fmt.Sprintf("conv-%d", i)}},
			Events:     []livechat.Event{{Text: "hello", CustomID: fmt.Sprintf("t-%d", i)}}})
		if err != nil {
			t.Fatal(err)
		}
		chats = append(chats, res.ChatID)
	}
	// A chat from another integration, without our property.
	foreign := e.startChat(t, e.customer(t))
	if err := lc.AgentDeactivateChat(ctx, e.agent, chats[4]); err != nil {
		t.Fatal(err)
	}

	// Paging walks every chat once, newest first, even when a chat starts
	// between pages.
	var seen []string
	page := livechat.AgentListChatsRequest{Limit: 2, Filters: &livechat.ChatsFilters{
		Properties: map[string]map[string]livechat.PropertyFilter{"handoff": {"conversation": {Exists: ptr(true)}}}}}
	for n := 0; ; n++ {
		res, err := lc.AgentListChats(ctx, e.agent, page)
		if err != nil {
			t.Fatal(err)
		}
		if res.FoundChats != 5 && n == 0 {
			t.Errorf("found_chats = %d, want 5", res.FoundChats)
		}
		for _, c := range res.Chats {
			seen = append(seen, c.ID)
		}
		if n == 0 {
			e.startChat(t, e.customer(t))
		}
		if res.NextPageID == "" {
			break
		}
		page = livechat.AgentListChatsRequest{PageID: res.NextPageID}
	}
	want := []string{chats[4], chats[3], chats[2], chats[1], chats[0]}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("pages gave %v, want %v", seen, want)
	}
	filtered := []struct {
		name    string
		filters livechat.ChatsFilters
		want    []string
	}{
		{"inactive only", livechat.ChatsFilters{IncludeActive: ptr(false)}, []string{chats[4]}},
		{"group 1", livechat.ChatsFilters{GroupIDs: []int{1}}, []string{chats[3], chats[1]}},
		{"property value", livechat.ChatsFilters{Properties: map[string]map[string]livechat.PropertyFilter{"handoff": {"conversation": {Values: []any{"conv-2"}}}}}, []string{chats[2]}},
		{"property absent", livechat.ChatsFilters{Properties: map[string]map[string]livechat.PropertyFilter{"handoff": {"conversation": {Exists: ptr(false)}}}}, nil},
	}
	for _, f := range filtered {
		res, err := lc.AgentListChats(ctx, e.agent, livechat.AgentListChatsRequest{Limit: 100, Filters: &f.filters})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range res.Chats {
			if c.ID != foreign.ChatID || f.want == nil {
				got = append(got, c.ID)
			}
		}
		if f.want == nil {
			// Chats without the property: the foreign one and the one
			// started while paging.
			if len(got) != 2 || !slices.Contains(got, foreign.ChatID) {
				t.Errorf("%s: %v", f.name, got)
			}
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(f.want) {
			t.Errorf("%s: %v, want %v", f.name, got, f.want)
		}
	}

	id := chats[0]
	if err := lc.AddUserToChat(ctx, e.agent, id, livechatsim.AgentID, "all"); err != nil {
		t.Fatal(err)
	}
	note, err := lc.AgentSendEvent(ctx, e.agent, id, livechat.Event{Text: "VIP", Visibility: "agents"}, false)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := lc.AgentSendEvent(ctx, e.agent, id, livechat.Event{Text: "Hi, I'm Tom"}, false)
	if err != nil {
		t.Fatal(err)
	}
	agentView, err := lc.AgentGetChat(ctx, e.agent, id, "")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(agentView.Thread.Events); n != 3 || agentView.Thread.Events[1].ID != note || agentView.Thread.Events[1].Visibility != "agents" ||
		agentView.Thread.Events[2].ID != msg || agentView.Thread.Events[2].AuthorID != livechatsim.AgentID {
		t.Errorf("agent get_chat events = %+v", agentView.Thread.Events)
	}
	threads, err := lc.AgentListThreads(ctx, e.agent, livechat.ListThreadsRequest{ChatID: id, SortOrder: "desc", Limit: 10})
	if err != nil || len(threads.Threads) != 1 || len(threads.Threads[0].Events) != 3 {
		t.Errorf("agent list_threads = %+v, %v", threads, err)
	}
	sum, err := lc.AgentListChats(ctx, e.agent, livechat.AgentListChatsRequest{Limit: 100, Filters: &livechat.ChatsFilters{
		Properties: map[string]map[string]livechat.PropertyFilter{"handoff": {"conversation": {Values: []any{"conv-0"}}}}}})
	if err != nil || len(sum.Chats) != 1 || sum.Chats[0].LastEventPerType["message"].Event.ID != msg ||
		sum.Chats[0].LastThreadSummary == nil || !sum.Chats[0].LastThreadSummary.Active || sum.Chats[0].LastThreadSummary.Queue != nil {
		t.Errorf("summary after the agent wrote = %+v, %v", sum, err)
	}

	if err := lc.TransferChat(ctx, e.agent, id, livechat.TransferTarget{Type: "agent", IDs: []any{livechatsim.OtherAgentID}}); err != nil {
		t.Fatal(err)
	}
	after, err := lc.AgentGetChat(ctx, e.agent, id, "")
	if err != nil || !slices.ContainsFunc(after.Users, func(u livechat.User) bool { return u.ID == livechatsim.OtherAgentID && u.Present }) {
		t.Errorf("after transfer to an agent: %+v, %v", after.Users, err)
	}
	if err := lc.TransferChat(ctx, e.agent, id, livechat.TransferTarget{Type: "group", IDs: []any{3}}); err != nil {
		t.Fatal(err)
	}
	after, err = lc.AgentGetChat(ctx, e.agent, id, "")
	if err != nil || after.Access.GroupIDs[0] != 3 || after.Thread.Queue == nil {
		t.Errorf("after transfer to a group: access %+v queue %+v, %v; want group 3 and queued", after.Access, after.Thread.Queue, err)
	}

	errs := []struct {
		name string
		err  error
		typ  string
	}{
		{"get_chat of no chat", func() error { _, err := lc.AgentGetChat(ctx, e.agent, "NOSUCHCHAT", ""); return err }(), livechat.ErrTypeNotFound},
		{"add an unknown agent", lc.AddUserToChat(ctx, e.agent, id, "nobody@example.com", "all"), livechat.ErrTypeNotFound},
		{"transfer to no target", lc.TransferChat(ctx, e.agent, id, livechat.TransferTarget{Type: "group"}), livechat.ErrTypeValidation},
		{"transfer to a bad type", lc.TransferChat(ctx, e.agent, id, livechat.TransferTarget{Type: "bot", IDs: []any{"x"}}), livechat.ErrTypeValidation},
		{"send to an inactive chat", func() error {
			_, err := lc.AgentSendEvent(ctx, e.agent, chats[4], livechat.Event{Text: "late"}, false)
			return err
		}(), livechat.ErrTypeChatInactive},
		{"deactivate an inactive chat", lc.AgentDeactivateChat(ctx, e.agent, chats[4]), livechat.ErrTypeChatInactive},
		{"list_chats limit over 100", func() error {
			_, err := lc.AgentListChats(ctx, e.agent, livechat.AgentListChatsRequest{Limit: 101})
			return err
		}(), livechat.ErrTypeValidation},
		{"a customer token", func() error {
			_, err := lc.AgentGetChat(ctx, e.customer(t).AccessToken, id, "")
			return err
		}(), livechat.ErrTypeAuthorization},
	}
	for _, x := range errs {
		if !livechat.IsType(x.err, x.typ) {
			t.Errorf("%s: %v, want %s", x.name, x.err, x.typ)
		}
	}
	status, body := rawCall(t, e, "POST", "/v3.6/agent/action/send_event", "Bearer "+e.agent, "application/json",
		`{"chat_id":"`+chats[1]+`","event":{"type":"message","text":"x","recipients":"all"}}`)
	if status != 400 || !strings.Contains(body, `{"error":{"type":"validation"`) {
		t.Errorf("agent event with recipients: %d %s", status, body)
	}
	status, body = rawCall(t, e, "POST", "/v3.6/agent/action/no_such_action", "Bearer "+e.agent, "application/json", `{}`)
	if status != 404 || !strings.Contains(body, `"not_found"`) {
		t.Errorf("unknown agent action: %d %s", status, body)
	}
	if n := e.sim.Stats()["agent/list_chats"][200]; n < 5 {
		t.Errorf("stats count agent list_chats %d times", n)
	}
}

// The control API's agent goes through the Agent Chat API's own code: an
// agent_message is an agent send_event, a close a deactivate_chat.
func TestControlAgentIsTheAgentChatAPI(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	start := e.startChat(t, e.customer(t))
	status, body := rawCall(t, e, "POST", "/_sim/chats/"+start.ChatID+"/agent_message", "", "application/json", `{"text":"from the control API"}`)
	if status != 200 {
		t.Fatalf("agent_message: %d %s", status, body)
	}
	chat, err := e.client.AgentGetChat(ctx, e.agent, start.ChatID, "")
	if err != nil {
		t.Fatal(err)
	}
	last := chat.Thread.Events[len(chat.Thread.Events)-1]
	if last.Text != "from the control API" || last.AuthorID != livechatsim.AgentID || last.Visibility != "all" ||
		!slices.ContainsFunc(chat.Users, func(u livechat.User) bool { return u.ID == livechatsim.AgentID && u.Present }) {
		t.Errorf("after the control API's message: %+v / %+v", last, chat.Users)
	}
	if status, body := rawCall(t, e, "POST", "/_sim/chats/"+start.ChatID+"/close", "", "application/json", ``); status != 200 {
		t.Fatalf("close: %d %s", status, body)
	}
	if err := e.client.AgentDeactivateChat(ctx, e.agent, start.ChatID); !livechat.IsChatInactive(err) {
		t.Errorf("deactivate after the control API closed it: %v, want chat_inactive", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestQueuePosition: get_chat (customer API) carries thread.queue
// (position, wait_time, queued_at) while nobody took the thread, as
// LiveChat's does (https://platform.text.com/docs/messaging/customer-chat-api#get-chat);
// the position counts the chats queued before it and falls when one of
// them is picked up; a taken thread has no queue.
func TestQueuePosition(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	type chat struct {
		tok livechat.Token
		res livechat.StartChatResponse
	}
	var chats []chat
	for range 3 {
		tok := e.customer(t)
		chats = append(chats, chat{tok, e.startChat(t, tok)})
		e.clock.Add(10 * time.Second)
	}
	position := func(c chat) *livechat.Queue {
		t.Helper()
		got, err := e.client.GetChat(ctx, c.tok.AccessToken, c.res.ChatID, "")
		if err != nil {
			t.Fatal(err)
		}
		return got.Thread.Queue
	}
	for i, c := range chats {
		q := position(c)
		if q == nil || q.Position != i+1 || q.WaitTime != 30-10*i || q.QueuedAt.IsZero() {
			t.Errorf("chat %d queue %+v, want position %d, wait %d s and when it was queued", i, q, i+1, 30-10*i)
		}
	}
	if err := e.sim.AgentMessage(chats[0].res.ChatID, "Hi, I'm Tom"); err != nil {
		t.Fatal(err)
	}
	if q := position(chats[0]); q != nil {
		t.Errorf("a chat an agent took has queue %+v, want none", q)
	}
	for i, c := range chats[1:] {
		if q := position(c); q == nil || q.Position != i+1 {
			t.Errorf("after the first chat was picked up, chat %d queue %+v, want position %d", i+1, q, i+1)
		}
	}
}
