package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Test credentials. They only exist in tests.
const (
	testUser     = "dialogflow"
	testPassword = "s3cret-password"
	testAPIKey   = "api-key-1"
	testAudience = "123456789012"
)

// fixedNow is the clock of every test gateway and publisher, so event
// times and transcript times are exact.
var fixedNow = time.Date(2026, 3, 4, 10, 15, 30, 0, time.UTC)

// chatKeys is an RSA key pair playing Google, with a JWKS served by an
// httptest server. Generated once per test binary: RSA key generation is
// slow under the race detector.
type chatKeys struct {
	key   *rsa.PrivateKey
	other *rsa.PrivateKey // a key not in the JWKS
	srv   *httptest.Server
	mu    sync.Mutex
	kids  map[string]*rsa.PrivateKey
}

var (
	keysOnce sync.Once
	keys     *chatKeys
)

func testKeys(t testing.TB) *chatKeys {
	t.Helper()
	keysOnce.Do(func() {
		k1, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		k2, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys = &chatKeys{key: k1, other: k2, kids: map[string]*rsa.PrivateKey{"k1": k1}}
		keys.srv = httptest.NewServer(http.HandlerFunc(keys.serveJWKS))
	})
	return keys
}

func (k *chatKeys) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	for kid, pk := range k.kids {
		set.Keys = append(set.Keys, map[string]string{
			"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
			"n": base64.RawURLEncoding.EncodeToString(pk.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pk.E)).Bytes()),
		})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set)
}

// addKey publishes another key ID, as Google does when it rotates keys.
func (k *chatKeys) addKey(kid string, pk *rsa.PrivateKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kids[kid] = pk
}

// token signs claims with key under key ID kid (RS256).
func token(t testing.TB, key *rsa.PrivateKey, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// chatToken is a valid Chat token: issuer chat@system.gserviceaccount.com,
// audience the project number.
func chatToken(t testing.TB) string {
	k := testKeys(t)
	now := time.Now()
	return token(t, k.key, "k1", jwt.MapClaims{
		"iss": DefaultChatIssuer, "aud": testAudience,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
}

// env is a gateway on a real embedded NATS (streams set up) and a real
// Redis store, served by httptest.
type env struct {
	t    *testing.T
	nats *testenv.NATS
	js   jetstream.JetStream
	st   store.Store
	gw   *Gateway
	pub  *publisher.Publisher
	reg  *prometheus.Registry
	srv  *httptest.Server
}

func testConfig(t testing.TB) Config {
	k := testKeys(t)
	cfg := DefaultConfig()
	cfg.DialogflowUsername, cfg.DialogflowPassword = testUser, testPassword
	cfg.ChatAudience = testAudience
	cfg.ChatJWKSURL = k.srv.URL + "/chat"
	cfg.ChatIDTokenJWKSURL = k.srv.URL + "/oauth2"
	cfg.ChatJWKSMinRefresh = 0
	cfg.APIKeys = []string{testAPIKey}
	cfg.RequestTimeout = 3 * time.Second
	return cfg
}

func newEnv(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	if _, err := stream.Setup(context.Background(), js, stream.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	r := testenv.StartRedis(t)
	st := store.NewRedis(r.Client(), store.WithPrefix(r.Prefix()))
	cfg := testConfig(t)
	if mutate != nil {
		mutate(&cfg)
	}
	pub := publisher.New(js, publisher.WithSource("handoff-gateway"), publisher.WithClock(func() time.Time { return fixedNow }))
	reg := prometheus.NewRegistry()
	gw, err := New(cfg, pub, st, reg, nil, WithFeed(js))
	if err != nil {
		t.Fatal(err)
	}
	gw.now = func() time.Time { return fixedNow }
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	return &env{t: t, nats: n, js: js, st: st, gw: gw, pub: pub, reg: reg, srv: srv}
}

// request is one HTTP call to the gateway.
type request struct {
	method  string
	path    string
	body    string
	auth    string // full Authorization header; "" picks the endpoint's valid one, "-" sends none
	ctype   string // "" means application/json, "-" sends none
	headers map[string]string
}

func (e *env) do(r request) (int, []byte) {
	e.t.Helper()
	resp := e.send(r)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (e *env) send(r request) *http.Response {
	e.t.Helper()
	if r.method == "" {
		r.method = http.MethodPost
	}
	var body io.Reader
	if r.body != "" {
		body = bytes.NewBufferString(r.body)
	}
	req, err := http.NewRequest(r.method, e.srv.URL+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	switch r.ctype {
	case "":
		req.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		req.Header.Set("Content-Type", r.ctype)
	}
	switch r.auth {
	case "-":
	case "":
		req.Header.Set("Authorization", e.validAuth(r.path))
	default:
		req.Header.Set("Authorization", r.auth)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

func (e *env) validAuth(path string) string {
	switch {
	case len(path) >= 11 && path[:11] == "/dialogflow":
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(testUser+":"+testPassword))
	case path == "/google-chat":
		return "Bearer " + chatToken(e.t)
	}
	return "Bearer " + testAPIKey
}

// events reads back every event stored on a conversation's inbound
// subject, oldest first.
func (e *env) events(conversation string) []handoff.Event {
	return e.stored(stream.InStream, stream.InSubject(conversation))
}

// outEvents reads back the reverse-path events of a conversation.
func (e *env) outEvents(conversation string) []handoff.Event {
	return e.stored(stream.OutStream, stream.OutSubject(conversation))
}

// stored reads every event on subject in streamName, oldest first, and
// checks each was published with its ID as Nats-Msg-Id.
func (e *env) stored(streamName, subject string) []handoff.Event {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, streamName)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []handoff.Event
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			e.t.Fatal(err)
		}
		ev, err := handoff.UnmarshalEvent(m.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		if m.Subject != subject {
			e.t.Fatalf("message on %q, want %q", m.Subject, subject)
		}
		if got := m.Header.Get("Nats-Msg-Id"); got != ev.ID {
			e.t.Errorf("Nats-Msg-Id %q, event ID %q", got, ev.ID)
		}
		out = append(out, ev)
		seq = m.Sequence + 1
	}
}

// streamCount is how many messages the inbound stream holds in total.
func (e *env) streamCount() uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), stream.InStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// setMode puts a conversation in a mode, as the worker would.
func (e *env) setMode(id string, m handoff.Mode) {
	e.t.Helper()
	_, err := e.st.UpdateConversation(context.Background(), id, func(c *handoff.Conversation) error {
		c.Mode = m
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) mode(id string) handoff.Mode {
	e.t.Helper()
	c, err := e.st.Conversation(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return c.Mode
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(t testing.TB, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s: not JSON: %v\n%s", what, err, got)
		return
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad expectation: %v\n%s", what, err, want)
	}
	if !reflect.DeepEqual(g, w) {
		gi, _ := json.MarshalIndent(g, "", "  ")
		wi, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("%s:\n got: %s\nwant: %s", what, gi, wi)
	}
}

func readTestdata(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantEvent is an expected event: its ID ("" to skip), type and data.
type wantEvent struct {
	id   string
	typ  handoff.EventType
	data string
}

func checkEvents(t *testing.T, conversation string, got []handoff.Event, want []wantEvent) {
	t.Helper()
	if len(got) != len(want) {
		for _, g := range got {
			t.Logf("got event %s %s %s", g.Type, g.ID, g.Data)
		}
		t.Fatalf("%d events on %s, want %d", len(got), conversation, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Type != w.typ || g.Subject != conversation || g.Source != "handoff-gateway" || !g.Time.Equal(fixedNow) {
			t.Errorf("event %d: type %s subject %q source %q time %s; want %s on %q from handoff-gateway at %s",
				i, g.Type, g.Subject, g.Source, g.Time, w.typ, conversation, fixedNow)
		}
		if w.id != "" && g.ID != w.id {
			t.Errorf("event %d: id %q, want %q", i, g.ID, w.id)
		}
		jsonEqual(t, "event data", g.Data, w.data)
	}
}
