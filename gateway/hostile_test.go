package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/handoff-dev/handoff"
)

// errorCode checks a JSON error body and returns its code and reason.
func errorCode(t *testing.T, body []byte) (string, string) {
	t.Helper()
	var eb struct {
		Error struct {
			Code   string `json:"code"`
			Reason string `json:"reason"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code == "" || eb.Error.Reason == "" {
		t.Errorf("not a JSON error body {\"error\":{\"code\",\"reason\"}}: %s", body)
	}
	return eb.Error.Code, eb.Error.Reason
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.DialogflowHeader, c.DialogflowHeaderValue = "X-Webhook-Secret", "header-secret"
	})
	k := testKeys(t)
	now := time.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": DefaultChatIssuer, "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
	hs.Header["kid"] = "k1"
	hsToken, _ := hs.SignedString([]byte("guess"))
	noneToken, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)

	cases := []struct {
		name    string
		path    string
		auth    string
		headers map[string]string
		want    int
	}{
		{"es no credentials", "/dialogflow/es", "-", nil, 401},
		{"es wrong password", "/dialogflow/es", basic(testUser, "nope"), nil, 401},
		{"es wrong user", "/dialogflow/es", basic("root", testPassword), nil, 401},
		{"es basic ok", "/dialogflow/es", basic(testUser, testPassword), nil, 200},
		{"es header secret ok", "/dialogflow/es", "-", map[string]string{"X-Webhook-Secret": "header-secret"}, 200},
		{"es header secret wrong", "/dialogflow/es", "-", map[string]string{"X-Webhook-Secret": "header-secreT"}, 401},
		{"cx no credentials", "/dialogflow/cx", "-", nil, 401},
		{"cx api key is not a dialogflow credential", "/dialogflow/cx", "Bearer " + testAPIKey, nil, 401},
		{"chat no token", "/google-chat", "-", nil, 401},
		{"chat valid", "/google-chat", "Bearer " + chatToken(t), nil, 200},
		{"chat key not in JWKS", "/google-chat", "Bearer " + token(t, k.other, "k1", claims(nil)), nil, 401},
		{"chat wrong audience", "/google-chat", "Bearer " + token(t, k.key, "k1", claims(func(c jwt.MapClaims) { c["aud"] = "999" })), nil, 401},
		{"chat expired", "/google-chat", "Bearer " + token(t, k.key, "k1", claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })), nil, 401},
		{"chat no expiry", "/google-chat", "Bearer " + token(t, k.key, "k1", claims(func(c jwt.MapClaims) { delete(c, "exp") })), nil, 401},
		{"chat wrong issuer", "/google-chat", "Bearer " + token(t, k.key, "k1", claims(func(c jwt.MapClaims) { c["iss"] = "evil@example.com" })), nil, 401},
		{"chat ID token while audience is a project number", "/google-chat", "Bearer " + token(t, k.key, "k1", claims(func(c jwt.MapClaims) {
			c["iss"], c["email"], c["email_verified"] = "https://accounts.google.com", DefaultChatIssuer, true
		})), nil, 401},
		{"chat HS256 with guessed secret", "/google-chat", "Bearer " + hsToken, nil, 401},
		{"chat alg none", "/google-chat", "Bearer " + noneToken, nil, 401},
		{"chat unknown key id", "/google-chat", "Bearer " + token(t, k.key, "nope", claims(nil)), nil, 401},
		{"chat garbage", "/google-chat", "Bearer not.a.jwt", nil, 401},
		{"rest no key", "/v1/conversations/c1/messages", "-", nil, 401},
		{"rest wrong key", "/v1/conversations/c1/messages", "Bearer api-key-2", nil, 401},
		{"rest basic instead of bearer", "/v1/conversations/c1/messages", basic(testUser, testAPIKey), nil, 401},
		{"rest get no key", "/v1/conversations/c1", "-", nil, 401},
		{"rest ok", "/v1/conversations/c1/messages", "Bearer " + testAPIKey, nil, 202},
	}
	bodies := map[string]string{
		"/dialogflow/es":                esTurnBody("auth-1", "hello", "en"),
		"/dialogflow/cx":                cxTurnBody("auth-2", "hello", ""),
		"/google-chat":                  strings.Replace(chatDM, "talk to an agent", "hello", -1),
		"/v1/conversations/c1/messages": `{"text":"hello"}`,
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := request{path: tc.path, body: bodies[tc.path], auth: tc.auth, headers: tc.headers}
			if tc.path == "/v1/conversations/c1" {
				r.method = http.MethodGet
			}
			resp := e.send(r)
			defer resp.Body.Close()
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, buf.Bytes())
			}
			if tc.want == 401 {
				if code, _ := errorCode(t, buf.Bytes()); code != "unauthorized" {
					t.Errorf("code %q", code)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			}
		})
	}
}

// Google ID tokens (audience = endpoint URL) are accepted only from the
// listed service accounts, and keys are refetched when Google rotates them.
func TestChatIDTokenAndKeyRotation(t *testing.T) {
	const aud = "https://handoff.example.com/google-chat"
	e := newEnv(t, func(c *Config) { c.ChatAudience = aud })
	k := testKeys(t)
	now := time.Now()
	idToken := func(email string) string {
		c := jwt.MapClaims{"iss": "https://accounts.google.com", "aud": aud, "email": email, "email_verified": true,
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		return token(t, k.key, "k1", c)
	}
	body := strings.Replace(chatDM, "talk to an agent", "hello", -1)
	for _, tc := range []struct {
		name string
		tok  string
		want int
	}{
		{"chat's ID token", idToken(DefaultChatIssuer), 200},
		{"someone else's ID token", idToken("attacker@example.iam.gserviceaccount.com"), 401},
		{"chat JWT with the URL audience", token(t, k.key, "k1", jwt.MapClaims{"iss": DefaultChatIssuer, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, b := e.do(request{path: "/google-chat", body: body, auth: "Bearer " + tc.tok}); code != tc.want {
				t.Fatalf("status %d, want %d: %s", code, tc.want, b)
			}
		})
	}

	t.Run("rotated key", func(t *testing.T) {
		rotated := token(t, k.other, "k-rotated", jwt.MapClaims{"iss": DefaultChatIssuer, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
		if code, _ := e.do(request{path: "/google-chat", body: body, auth: "Bearer " + rotated}); code != 401 {
			t.Fatalf("unpublished key accepted: %d", code)
		}
		k.addKey("k-rotated", k.other)
		if code, b := e.do(request{path: "/google-chat", body: body, auth: "Bearer " + rotated}); code != 200 {
			t.Fatalf("rotated key not picked up: %d %s", code, b)
		}
	})
}

func TestHostileRequests(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 4096 })
	big := `{"session":"s","pad":"` + strings.Repeat("x", 5000) + `"}`
	cases := []struct {
		name   string
		req    request
		status int
		code   string
		reason string // substring of the reason
	}{
		{"text/plain", request{path: "/dialogflow/es", body: esTurnBody("h", "hi", "en"), ctype: "text/plain"}, 415, "unsupported_media_type", "application/json"},
		{"no content type", request{path: "/dialogflow/cx", body: cxTurnBody("h", "hi", ""), ctype: "-"}, 415, "unsupported_media_type", "application/json"},
		{"form", request{path: "/google-chat", body: "a=b", ctype: "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", ""},
		{"latin1 json", request{path: "/v1/conversations/c/messages", body: `{"text":"x"}`, ctype: "application/json; charset=latin1"}, 415, "unsupported_media_type", "charset"},
		{"json with utf-8 charset is fine", request{path: "/v1/conversations/c/messages", body: `{"text":"x"}`, ctype: "application/json; charset=UTF-8"}, 202, "", ""},
		{"oversized es", request{path: "/dialogflow/es", body: big}, 413, "too_large", "4096"},
		{"oversized chat", request{path: "/google-chat", body: big}, 413, "too_large", ""},
		{"oversized rest", request{path: "/v1/conversations/c/handoff", body: big}, 413, "too_large", ""},
		{"malformed es", request{path: "/dialogflow/es", body: `{"session": "s",`}, 400, "bad_request", "malformed JSON"},
		{"malformed cx", request{path: "/dialogflow/cx", body: `not json`}, 400, "bad_request", "malformed JSON"},
		{"malformed chat", request{path: "/google-chat", body: `{"type":"MESSAGE"}}`}, 400, "bad_request", "malformed JSON"},
		{"wrong type es", request{path: "/dialogflow/es", body: `{"session":42}`}, 400, "bad_request", "session"},
		{"array body", request{path: "/dialogflow/cx", body: `[1,2]`}, 400, "bad_request", ""},
		{"empty body", request{path: "/dialogflow/es"}, 400, "bad_request", "empty"},
		{"es missing session", request{path: "/dialogflow/es", body: `{"responseId":"x","queryResult":{"queryText":"agent"}}`}, 400, "bad_request", "session is missing"},
		{"cx missing session", request{path: "/dialogflow/cx", body: `{"text":"agent","sessionInfo":{"parameters":{}}}`}, 400, "bad_request", "sessionInfo.session is missing"},
		{"chat neither shape", request{path: "/google-chat", body: `{"hello":"world"}`}, 400, "bad_request", "not a Google Chat event"},
		{"chat missing space", request{path: "/google-chat", body: `{"type":"MESSAGE","message":{"text":"agent"}}`}, 400, "bad_request", "space.name"},
		{"es control characters in session", request{path: "/dialogflow/es", body: `{"session":"a\u0000b","queryResult":{"queryText":"agent"}}`}, 400, "bad_request", "control"},
		{"rest message without text", request{path: "/v1/conversations/c/messages", body: `{}`}, 400, "invalid_event", "text"},
		{"rest message not json", request{path: "/v1/conversations/c/messages", body: `{"text":`}, 400, "bad_request", "malformed"},
		{"rest negative group", request{path: "/v1/conversations/c/handoff", body: `{"group":-1}`}, 400, "invalid_event", "group"},
		{"idempotency key empty", request{path: "/v1/conversations/c/messages", body: `{"text":"x"}`, headers: map[string]string{"Idempotency-Key": ""}}, 400, "bad_request", "Idempotency-Key"},
		{"idempotency key too long", request{path: "/v1/conversations/c/messages", body: `{"text":"x"}`, headers: map[string]string{"Idempotency-Key": strings.Repeat("k", 201)}}, 400, "bad_request", "Idempotency-Key"},
		{"idempotency key not ascii", request{path: "/v1/conversations/c/messages", body: `{"text":"x"}`, headers: map[string]string{"Idempotency-Key": "clé"}}, 400, "bad_request", "printable"},
		{"idempotency key with tab", request{path: "/v1/conversations/c/messages", body: `{"text":"x"}`, headers: map[string]string{"Idempotency-Key": "a\tb"}}, 400, "bad_request", "printable"},
		{"wrong method", request{method: "GET", path: "/dialogflow/es"}, 405, "method_not_allowed", "POST"},
		{"wrong method rest", request{method: "DELETE", path: "/v1/conversations/c"}, 405, "method_not_allowed", "GET"},
		{"unknown path", request{method: "GET", path: "/admin"}, 404, "not_found", "/admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(tc.req)
			if code != tc.status {
				t.Fatalf("status %d, want %d: %s", code, tc.status, body)
			}
			if tc.code == "" {
				return
			}
			c, reason := errorCode(t, body)
			if c != tc.code || !strings.Contains(reason, tc.reason) {
				t.Errorf("error %q %q, want code %q with reason containing %q", c, reason, tc.code, tc.reason)
			}
		})
	}

	t.Run("oversized chunked body", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.srv.URL+"/dialogflow/es", struct{ *strings.Reader }{strings.NewReader(big)})
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", e.validAuth("/dialogflow/es"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 413 || req.ContentLength != 0 {
			t.Fatalf("status %d (content length %d), want 413 for a body without length", resp.StatusCode, req.ContentLength)
		}
	})
}

// Conversation IDs reach the REST API as one escaped path segment; every
// one of these must land on exactly its own subject, or be refused.
func TestRESTHostileConversationIDs(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name, id, rawSegment string // rawSegment overrides url.PathEscape(id)
		want                 int
	}{
		{"slashes", "acme/web/sessions/s1", "", 202},
		{"a Dialogflow session's name", "projects/p/agent/sessions/s1", "", 403},
		{"a Chat space's name", "spaces/AAA", "", 403},
		{"dot dot", "..", "%2E%2E", 202},
		{"dot", ".", "%2E", 202},
		{"traversal", "../../v1/conversations/x", "", 202},
		{"nats wildcards", "a.*.>", "", 202},
		{"spaces and percent", "a b%20c", "", 202},
		{"unicode", "sessão/日本", "", 202},
		{"question mark and hash", "a?b#c", "", 202},
		{"max length", strings.Repeat("x", handoff.MaxSubjectBytes), "", 202},
		{"too long", strings.Repeat("x", handoff.MaxSubjectBytes+1), "", 400},
		{"nul", "a\x00b", "", 400},
		{"newline", "a\nb", "", 400},
		{"invalid utf-8", "a\xffb", "", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg := tc.rawSegment
			if seg == "" {
				seg = url.PathEscape(tc.id)
			}
			code, body := e.do(request{path: "/v1/conversations/" + seg + "/messages", body: `{"text":"hi"}`})
			if code != tc.want {
				t.Fatalf("status %d, want %d: %s", code, tc.want, body)
			}
			if code != 202 {
				errorCode(t, body)
				return
			}
			evs := e.events(tc.id)
			if len(evs) != 1 || evs[0].Subject != tc.id {
				t.Fatalf("events on the subject of %q: %+v", tc.id, evs)
			}
			code, body = e.do(request{method: "GET", path: "/v1/conversations/" + seg})
			var v struct{ ID string }
			if code != 200 || json.Unmarshal(body, &v) != nil || v.ID != tc.id {
				t.Errorf("GET: %d %s", code, body)
			}
		})
	}
}

func TestNoCredentialsRefusesToStart(t *testing.T) {
	n := newEnv(t, nil)
	cfg := DefaultConfig()
	if _, err := New(cfg, n.pub, n.st, nil, nil); err == nil || !strings.Contains(err.Error(), "no credentials configured") {
		t.Fatalf("err %v, want no credentials configured", err)
	}
	cfg.InsecureNoAuth = true
	gw, err := New(cfg, n.pub, n.st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Dev mode: no credentials needed anywhere.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/conversations/c/messages", strings.NewReader(`{"text":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	gw.ServeHTTP(rec, req)
	if rec.Code != 202 {
		t.Fatalf("insecure mode: %d %s", rec.Code, rec.Body)
	}
}
