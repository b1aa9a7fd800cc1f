package outbound

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/texts"
)

// fakeGoogle is a local Chat API and OAuth token endpoint. The token
// endpoint runs the real service-account flow: it verifies the signed JWT
// assertion with the key's public half and checks its claims, as Google's
// does; the Chat API accepts only the token it issued and keeps messages
// per request ID the way spaces.messages.create documents.
type fakeGoogle struct {
	t      *testing.T
	key    *rsa.PrivateKey
	email  string
	srv    *httptest.Server
	mu     sync.Mutex
	tokens int
	posts  []chatPost // every create call, repeats included
	stored map[string]chatPost
	byMsg  map[string]string // messageId → requestId
	// dropNext stores the next message and then drops the connection, as
	// a network fault after Chat posted it would.
	dropNext bool
	// status answers every create with this code (and Retry-After).
	status     int
	retryAfter string
}

type chatPost struct {
	Space, RequestID, MessageID, ReplyOption, Auth string
	Text, Thread                                   string
}

func newFakeGoogle(t *testing.T) *fakeGoogle {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeGoogle{t: t, key: key, email: "handoff@test-project.iam.gserviceaccount.com", stored: map[string]chatPost{}, byMsg: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("POST /v1/spaces/{space}/messages", f.create)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// credentials is a service-account key file as the Cloud console writes it.
func (f *fakeGoogle) credentials() []byte {
	der := x509.MarshalPKCS1PrivateKey(f.key)
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "test-project", "private_key_id": "kid-1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})),
		"client_email": f.email, "client_id": "1234",
		"token_uri": "https://oauth2.googleapis.com/token", // overridden by TokenURL
	})
	return b
}

func (f *fakeGoogle) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		f.t.Errorf("token: grant_type = %q", g)
		http.Error(w, `{"error":"unsupported_grant_type"}`, 400)
		return
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), claims, func(tok *jwt.Token) (any, error) {
		if kid, _ := tok.Header["kid"].(string); kid != "kid-1" {
			return nil, fmt.Errorf("kid %q", kid)
		}
		return &f.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(f.email), jwt.WithAudience(f.srv.URL+"/token"), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil || !tok.Valid {
		f.t.Errorf("token: assertion refused: %v", err)
		http.Error(w, `{"error":"invalid_grant"}`, 400)
		return
	}
	if s := claims["scope"]; s != "https://www.googleapis.com/auth/chat.bot" {
		f.t.Errorf("token: scope = %v, want chat.bot", s)
	}
	f.mu.Lock()
	f.tokens++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"access_token":"ya29.test-token","token_type":"Bearer","expires_in":3600}`)
}

var clientMessageID = regexp.MustCompile(`^client-[a-z0-9-]{1,56}$`)

func (f *fakeGoogle) create(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text   string `json:"text"`
		Thread *struct {
			Name string `json:"name"`
		} `json:"thread"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"error":{"code":400,"message":"bad body","status":"INVALID_ARGUMENT"}}`, 400)
		return
	}
	q := r.URL.Query()
	p := chatPost{Space: "spaces/" + r.PathValue("space"), RequestID: q.Get("requestId"), MessageID: q.Get("messageId"),
		ReplyOption: q.Get("messageReplyOption"), Auth: r.Header.Get("Authorization"), Text: body.Text}
	if body.Thread != nil {
		p.Thread = body.Thread.Name
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.posts = append(f.posts, p)
	if p.Auth != "Bearer ya29.test-token" {
		w.WriteHeader(401)
		fmt.Fprint(w, `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`)
		return
	}
	if f.status != 0 {
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		w.WriteHeader(f.status)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":"test","status":"X"}}`, f.status)
		return
	}
	if p.MessageID != "" && !clientMessageID.MatchString(p.MessageID) {
		w.WriteHeader(400)
		fmt.Fprint(w, `{"error":{"code":400,"message":"invalid message id","status":"INVALID_ARGUMENT"}}`)
		return
	}
	name := p.Space + "/messages/" + p.MessageID
	if _, ok := f.stored[p.RequestID]; !ok {
		if other, taken := f.byMsg[p.MessageID]; taken && other != p.RequestID {
			w.WriteHeader(409)
			fmt.Fprint(w, `{"error":{"code":409,"message":"Message already exists","status":"ALREADY_EXISTS"}}`)
			return
		}
		f.stored[p.RequestID] = p
		f.byMsg[p.MessageID] = p.RequestID
	}
	if f.dropNext {
		f.dropNext = false
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"name": name, "text": f.stored[p.RequestID].Text})
}

func (f *fakeGoogle) snapshot() (posts []chatPost, stored int, tokens int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]chatPost(nil), f.posts...), len(f.stored), f.tokens
}

func newTestChat(t *testing.T, f *fakeGoogle) *GoogleChat {
	t.Helper()
	g, err := NewGoogleChat(context.Background(), GoogleChatConfig{
		CredentialsJSON: f.credentials(), Endpoint: f.srv.URL + "/", TokenURL: f.srv.URL + "/token",
		Breaker: BreakerConfig{Failures: 100},
	}, testMetrics(t))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Acceptance 2: the app posts the agent's words, with the agent's name,
// into the thread the user wrote from, authenticated with a token obtained
// by the service-account JWT flow; a delivery retried after a lost answer
// posts once.
func TestGoogleChatPostsIntoTheThreadOnce(t *testing.T) {
	f := newFakeGoogle(t)
	g := newTestChat(t, f)
	to := handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: "spaces/AAAAx/threads/t1"}
	ev := agentEvent(t, "spaces/AAAAx/threads/t1", "lc-PZ070E0W1B_3", "Anna", "Your order ships today.")

	f.dropNext = true // Chat posts it, the answer never arrives
	err := g.Deliver(context.Background(), outgoing(ev, to))
	if e, ok := AsError(err); !ok || e.Class != Transient || !e.Uncertain {
		t.Fatalf("lost answer: err = %v, want a transient, uncertain failure", err)
	}
	if err := g.Deliver(context.Background(), outgoing(ev, to)); err != nil {
		t.Fatalf("retry: %v", err)
	}

	posts, stored, tokens := f.snapshot()
	if stored != 1 {
		t.Fatalf("Chat holds %d messages, want 1 (the retry must not post again)", stored)
	}
	if len(posts) != 2 || posts[0].RequestID != posts[1].RequestID || posts[0].MessageID != posts[1].MessageID {
		t.Fatalf("calls = %+v, want two with the same requestId and messageId", posts)
	}
	p := posts[0]
	if p.RequestID != ev.ID {
		t.Errorf("requestId = %q, want the event ID %q", p.RequestID, ev.ID)
	}
	if !clientMessageID.MatchString(p.MessageID) || len(p.MessageID) > 63 {
		t.Errorf("messageId = %q, want client- and at most 63 of [a-z0-9-]", p.MessageID)
	}
	if p.Space != "spaces/AAAAx" || p.Thread != "spaces/AAAAx/threads/t1" || p.ReplyOption != "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD" {
		t.Errorf("posted to %s thread %q option %q; want the user's space and thread", p.Space, p.Thread, p.ReplyOption)
	}
	if p.Auth != "Bearer ya29.test-token" {
		t.Errorf("Authorization = %q, want the token from the JWT flow", p.Auth)
	}
	if p.Text != "Anna: Your order ships today." {
		t.Errorf("text = %q, want the agent's name and words", p.Text)
	}
	if tokens != 1 {
		t.Errorf("%d token exchanges, want 1 (cached)", tokens)
	}
}

// A direct message has no thread to answer in: the message goes to the
// space, without a thread or reply option. Status events are short texts
// in the user's language.
func TestGoogleChatSpaceAndStatusTexts(t *testing.T) {
	f := newFakeGoogle(t)
	g := newTestChat(t, f)
	to := handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: "spaces/DM1"}
	closed, err := handoff.NewEvent(handoff.TypeChatClosed, "spaces/DM1", handoff.ChatClosed{ChatID: "C1", ClosedBy: "anna@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	m := outgoing(closed, to)
	m.Language = "de-DE"
	set := texts.Defaults()
	set.Closed["de"] = "Der Mitarbeiter hat den Chat beendet."
	g.cfg.Texts = &set
	if err := g.Deliver(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	posts, _, _ := f.snapshot()
	if len(posts) != 1 || posts[0].Space != "spaces/DM1" || posts[0].Thread != "" || posts[0].ReplyOption != "" {
		t.Fatalf("posts = %+v, want one into the space without a thread", posts)
	}
	if want := "Der Mitarbeiter hat den Chat beendet."; posts[0].Text != want {
		t.Errorf("text = %q, want the German closed text %q", posts[0].Text, want)
	}
}

func TestGoogleChatAnswers(t *testing.T) {
	for _, tc := range []struct {
		status    int
		retry     string
		class     Class
		reason    string
		uncertain bool
	}{
		{403, "", Permanent, "google_chat_403", false},
		{404, "", Permanent, "google_chat_404", false},
		{429, "3", Transient, "google_chat_429", false},
		{503, "", Transient, "google_chat_503", true},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			f := newFakeGoogle(t)
			f.status, f.retryAfter = tc.status, tc.retry
			g := newTestChat(t, f)
			err := g.Deliver(context.Background(), outgoing(agentEvent(t, "spaces/S", "e1", "", "x"), handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: "spaces/S"}))
			e, ok := AsError(err)
			if !ok || e.Class != tc.class || e.Reason != tc.reason || e.Uncertain != tc.uncertain {
				t.Fatalf("err = %v (%+v), want class %d reason %s uncertain %v", err, e, tc.class, tc.reason, tc.uncertain)
			}
			if tc.retry != "" && e.RetryAfter.Seconds() != 3 {
				t.Errorf("RetryAfter = %s, want 3s", e.RetryAfter)
			}
		})
	}
}

// A message Chat already holds under our messageId (posted by an attempt
// Chat no longer remembers the request ID of) counts as delivered.
func TestGoogleChatAlreadyExistsIsDelivered(t *testing.T) {
	f := newFakeGoogle(t)
	g := newTestChat(t, f)
	ev := agentEvent(t, "spaces/S", "e-409", "", "x")
	f.byMsg[ClientMessageID(ev.ID)] = "an-older-request"
	if err := g.Deliver(context.Background(), outgoing(ev, handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: "spaces/S"})); err != nil {
		t.Fatalf("err = %v, want delivered", err)
	}
}

func TestGoogleChatRefusesAddresses(t *testing.T) {
	f := newFakeGoogle(t)
	g := newTestChat(t, f)
	for _, addr := range []string{"", "spaces/", "users/1", "spaces/A/messages/m", "https://evil.example/spaces/A", "spaces/A/threads/t/../../x"} {
		err := g.Deliver(context.Background(), outgoing(agentEvent(t, "c", "e", "", "x"), handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: addr}))
		if e, ok := AsError(err); !ok || e.Class != Permanent || e.Reason != "bad_address" {
			t.Errorf("address %q: err = %v, want permanent bad_address", addr, err)
		}
	}
	if posts, _, _ := f.snapshot(); len(posts) != 0 {
		t.Fatalf("%d calls to Chat for bad addresses", len(posts))
	}
}

// Long messages go out in parts, in order, each with its own request ID.
func TestGoogleChatSplitsLongMessages(t *testing.T) {
	f := newFakeGoogle(t)
	g := newTestChat(t, f)
	long := strings.Repeat("ação ", 12000) // 84,000 bytes, "ç" and "ã" two each
	ev := agentEvent(t, "spaces/S", "e-long", "Anna", long)
	if err := g.Deliver(context.Background(), outgoing(ev, handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: "spaces/S"})); err != nil {
		t.Fatal(err)
	}
	posts, _, _ := f.snapshot()
	if len(posts) != 3 {
		t.Fatalf("%d parts, want 3", len(posts))
	}
	var joined strings.Builder
	for i, p := range posts {
		if len(p.Text) > chatTextLimit {
			t.Errorf("part %d is %d bytes", i, len(p.Text))
		}
		want := ev.ID
		if i > 0 {
			want = fmt.Sprintf("%s-%d", ev.ID, i)
		}
		if p.RequestID != want {
			t.Errorf("part %d requestId = %q, want %q", i, p.RequestID, want)
		}
		joined.WriteString(p.Text)
	}
	if joined.String() != "Anna: "+long {
		t.Error("parts do not add up to the message")
	}
}
