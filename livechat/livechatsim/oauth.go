package livechatsim

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// The authorization code flow of a server-side app, as LiveChat's accounts
// service runs it (https://platform.text.com/docs/authorization): the
// browser is sent to GET / with response_type=code, client_id,
// redirect_uri, state and (PKCE) code_challenge; the simulator approves at
// once as its agent, as an administrator who clicks "Allow" would, and
// redirects to redirect_uri with code and state. POST /v2/token with
// grant_type=authorization_code trades the code for an access token and a
// refresh token, checking the redirect_uri and the code_verifier.

// DefaultScopes are the scopes the simulator grants unless Options.Scopes
// says otherwise: what handoff's worker and setup need.
const DefaultScopes = "customers:own,webhooks.configuration:rw,webhooks.state:rw"

// codeLifetime bounds an authorization code's life, as LiveChat's do.
const codeLifetime = 10 * time.Minute

type authCode struct {
	clientID, redirectURI, challenge, method string
	expires                                  time.Time
}

// oauthState holds the codes issued and the refresh tokens minted.
type oauthState struct {
	mu      sync.Mutex
	codes   map[string]authCode
	refresh map[string]bool
}

func (s *Sim) scopes() string {
	if s.opts.Scopes != "" {
		return s.opts.Scopes
	}
	return DefaultScopes
}

// handleAuthorize serves GET / with response_type=code.
func (s *Sim) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("response_type") != "code" {
		writeAPIError(w, &apiError{Type: "not_found", Message: "No such path: " + r.URL.Path})
		return
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	switch {
	case q.Get("client_id") == "":
		s.count("authorize", writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Missing client_id"))
		return
	case s.opts.ClientID != "" && q.Get("client_id") != s.opts.ClientID:
		s.count("authorize", writeOAuthError(w, http.StatusBadRequest, "unauthorized_client", "Unknown client_id"))
		return
	case err != nil || redirect.Scheme == "" || redirect.Host == "":
		s.count("authorize", writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Invalid redirect_uri"))
		return
	}
	method := q.Get("code_challenge_method")
	if method == "" && q.Get("code_challenge") != "" {
		method = "plain"
	}
	if method != "" && method != "S256" && method != "plain" {
		s.count("authorize", writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Unsupported code_challenge_method"))
		return
	}
	code := s.ids.hex32()
	s.oauth.mu.Lock()
	s.oauth.codes[code] = authCode{clientID: q.Get("client_id"), redirectURI: q.Get("redirect_uri"),
		challenge: q.Get("code_challenge"), method: method, expires: s.now().Add(codeLifetime)}
	s.oauth.mu.Unlock()
	back := redirect.Query()
	back.Set("code", code)
	if st := q.Get("state"); st != "" {
		back.Set("state", st)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
	s.count("authorize", http.StatusFound)
}

// codeGrant serves /v2/token with grant_type=authorization_code. A code
// works once.
func (s *Sim) codeGrant(w http.ResponseWriter, form url.Values) int {
	s.oauth.mu.Lock()
	c, ok := s.oauth.codes[form.Get("code")]
	delete(s.oauth.codes, form.Get("code"))
	s.oauth.mu.Unlock()
	switch {
	case !ok || s.now().After(c.expires):
		return writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "Invalid or expired code")
	case form.Get("client_id") != c.clientID:
		return writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Code issued to another client")
	case form.Get("client_secret") == "":
		return writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Missing client_secret")
	case form.Get("redirect_uri") != c.redirectURI:
		return writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match the authorization request")
	case c.challenge != "" && !pkceMatches(c, form.Get("code_verifier")):
		return writeOAuthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge")
	}
	refresh := c.clientID + ":" + s.ids.hex32()
	s.oauth.mu.Lock()
	s.oauth.refresh[refresh] = true
	s.oauth.mu.Unlock()
	return s.writeAgentToken(w, c.clientID, refresh)
}

func pkceMatches(c authCode, verifier string) bool {
	want := verifier
	if c.method == "S256" {
		sum := sha256.Sum256([]byte(verifier))
		want = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return verifier != "" && subtle.ConstantTimeCompare([]byte(want), []byte(c.challenge)) == 1
}

// refreshKnown reports whether a refresh token may be used: with
// Options.StrictRefreshTokens only the ones the code grant (or a rotation)
// minted.
func (s *Sim) refreshKnown(rt string) bool {
	if !s.opts.StrictRefreshTokens {
		return true
	}
	s.oauth.mu.Lock()
	defer s.oauth.mu.Unlock()
	return s.oauth.refresh[rt]
}

// rotate mints the refresh token a refresh_token grant answers with: the
// same one, unless Options.RotateRefreshTokens, when a new one replaces it.
func (s *Sim) rotate(clientID, rt string) string {
	if !s.opts.RotateRefreshTokens {
		return rt
	}
	next := clientID + ":" + s.ids.hex32()
	s.oauth.mu.Lock()
	delete(s.oauth.refresh, rt)
	s.oauth.refresh[next] = true
	s.oauth.mu.Unlock()
	return next
}
