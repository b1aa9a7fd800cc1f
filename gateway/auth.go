package gateway

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// secretEqual compares secrets in constant time. Both sides are hashed
// first so that neither the content nor the length of the configured
// secret leaks through timing.
func secretEqual(got, want string) bool {
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

var errBadCredentials = errors.New("missing or wrong credentials")

// authDialogflow accepts any one configured Dialogflow credential: basic
// auth, or the secret header (which may be Authorization: Bearer ...).
func (g *Gateway) authDialogflow(r *http.Request) error {
	c := &g.cfg
	if c.DialogflowUsername == "" && c.DialogflowHeaderValue == "" {
		return errors.New("no Dialogflow credentials are configured on this gateway")
	}
	ok := false
	if c.DialogflowUsername != "" {
		if u, p, has := r.BasicAuth(); has {
			// Evaluate both comparisons: no early exit on the user name.
			uok, pok := secretEqual(u, c.DialogflowUsername), secretEqual(p, c.DialogflowPassword)
			ok = uok && pok
		}
	}
	if c.DialogflowHeaderValue != "" {
		if secretEqual(r.Header.Get(c.DialogflowHeader), c.DialogflowHeaderValue) {
			ok = true
		}
	}
	if !ok {
		return errBadCredentials
	}
	return nil
}

// authAPI accepts a configured API key as a bearer token.
func (g *Gateway) authAPI(r *http.Request) error {
	if len(g.cfg.APIKeys) == 0 {
		return errors.New("no API keys are configured on this gateway")
	}
	tok, ok := bearer(r)
	if !ok {
		return errors.New("missing bearer API key")
	}
	match := false
	for _, k := range g.keys { // compare with every key: no early exit
		if secretEqual(tok, k.secret) {
			match = true
		}
	}
	if !match {
		return errBadCredentials
	}
	return nil
}

// apiKeyID names the REST API key of an authenticated request for the
// per-source limits: its position in the configured list, never the key.
func (g *Gateway) apiKeyID(r *http.Request) string {
	tok, _ := bearer(r)
	id := "rest"
	for i, k := range g.keys {
		if secretEqual(tok, k.secret) {
			id = fmt.Sprintf("rest:key%d", i+1)
		}
	}
	return id
}

func (g *Gateway) authChat(r *http.Request) error {
	if g.chatJWT == nil {
		return errors.New("Google Chat is not configured on this gateway (no audience)")
	}
	tok, ok := bearer(r)
	if !ok {
		return errors.New("missing bearer token")
	}
	return g.chatJWT.verify(r.Context(), tok)
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

// Google ID token issuers (both spellings are in use).
var googleIssuers = []string{"https://accounts.google.com", "accounts.google.com"}

// chatVerifier checks the bearer token Google Chat sends with each event.
//
// With the project number as audience, Chat signs a JWT as
// chat@system.gserviceaccount.com (RS256, keys at ChatJWKSURL). With the
// endpoint URL as audience it sends a Google ID token (issuer
// accounts.google.com, keys at ChatIDTokenJWKSURL) whose email claim is
// chat@system.gserviceaccount.com, or the add-on's service account: those
// are accepted only when the audience is a URL and the email is listed.
type chatVerifier struct {
	audience    string
	urlAudience bool
	emails      []string
	chatKeys    *jwks
	googleKeys  *jwks
}

func newChatVerifier(cfg Config) *chatVerifier {
	v := &chatVerifier{
		audience:    cfg.ChatAudience,
		urlAudience: strings.HasPrefix(cfg.ChatAudience, "https://") || strings.HasPrefix(cfg.ChatAudience, "http://"),
		emails:      cfg.ChatIDTokenEmails,
		chatKeys:    newJWKS(cfg.ChatJWKSURL, cfg.HTTPClient, cfg.ChatJWKSRefresh, cfg.ChatJWKSMinRefresh),
		googleKeys:  newJWKS(cfg.ChatIDTokenJWKSURL, cfg.HTTPClient, cfg.ChatJWKSRefresh, cfg.ChatJWKSMinRefresh),
	}
	v.chatKeys.warm()
	if v.urlAudience {
		v.googleKeys.warm()
	}
	return v
}

type googleClaims struct {
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
	jwt.RegisteredClaims
}

func (v *chatVerifier) verify(ctx context.Context, token string) error {
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(30*time.Second),
	)
	var claims googleClaims
	_, err := parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		// The claims are decoded (not yet trusted) before this runs: the
		// issuer picks the key set, the signature check then proves it.
		kid, _ := t.Header["kid"].(string)
		switch {
		case claims.Issuer == DefaultChatIssuer:
			return v.chatKeys.key(ctx, kid)
		case v.urlAudience && slices.Contains(googleIssuers, claims.Issuer):
			return v.googleKeys.key(ctx, kid)
		}
		return nil, fmt.Errorf("issuer %q is not accepted", claims.Issuer)
	})
	if err != nil {
		return fmt.Errorf("google chat token: %w", err)
	}
	if claims.Issuer != DefaultChatIssuer {
		if !claims.EmailVerified || !slices.Contains(v.emails, claims.Email) {
			return fmt.Errorf("google chat token: ID token email %q is not accepted", claims.Email)
		}
	}
	return nil
}

// jwks is a cached JSON Web Key Set of RSA keys.
//
// An outsider chooses the key ID of every token it sends, so nothing a
// request does may decide whether or when keys are fetched for everyone:
//   - one fetch at a time, shared by every caller that needs it
//     (singleflight), on a context of its own with its own timeout: a
//     caller that hangs up stops waiting, the fetch goes on for the rest;
//   - no lock is held while fetching;
//   - the back-off that keeps made-up key IDs from hammering the key server
//     (at most one fetch per minRefresh for an unknown key ID) starts when
//     a fetch has finished, not when it was asked for;
//   - keys are refetched in the background once three quarters of their
//     lifetime (Cache-Control max-age, else refresh) has passed, so a
//     rotated-in key is usually known before the first token signed with
//     it arrives; a known key stays usable while a refresh fails.
type jwks struct {
	url          string
	client       *http.Client
	refresh      time.Duration
	minRefresh   time.Duration
	fetchTimeout time.Duration
	now          func() time.Time

	mu       sync.Mutex
	keys     map[string]*rsa.PublicKey
	fetched  time.Time // start of the last successful fetch
	ttl      time.Duration
	finished time.Time // end of the last fetch, successful or not
	inflight *keyFetch
}

// keyFetch is one fetch that callers wait for; done closes when it ends.
type keyFetch struct {
	done chan struct{}
	err  error
}

// minRSABits is the smallest RSA key accepted for token signatures.
const minRSABits = 2048

// DefaultJWKSFetchTimeout bounds one fetch of a key set.
const DefaultJWKSFetchTimeout = 10 * time.Second

// maxJWKSTTL caps a key server's max-age: keys are rechecked daily at least.
const maxJWKSTTL = 24 * time.Hour

func newJWKS(url string, client *http.Client, refresh, minRefresh time.Duration) *jwks {
	return &jwks{url: url, client: client, refresh: refresh, minRefresh: minRefresh,
		fetchTimeout: DefaultJWKSFetchTimeout, now: time.Now}
}

// warm starts the first fetch, so the first token need not wait for it.
func (k *jwks) warm() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.startFetch()
	}
}

func (k *jwks) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	if kid == "" {
		return nil, errors.New("token has no key ID")
	}
	k.mu.Lock()
	now := k.now()
	key, known := k.keys[kid]
	age := now.Sub(k.fetched)
	backingOff := !k.finished.IsZero() && now.Sub(k.finished) < k.minRefresh
	switch {
	case known:
		if age >= k.ttl*3/4 && !backingOff {
			k.startFetch() // refresh ahead; this caller does not wait
		}
		k.mu.Unlock()
		return key, nil
	case k.inflight == nil && backingOff:
		// A fetch finished moments ago: an unknown key ID now is made up
		// (or from a key server we cannot reach), not a rotation.
		k.mu.Unlock()
		return nil, fmt.Errorf("unknown key ID %q (keys fetched moments ago)", kid)
	}
	f := k.startFetch()
	k.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for keys: %w", ctx.Err())
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if key, ok := k.keys[kid]; ok {
		return key, nil
	}
	if f.err != nil {
		return nil, f.err
	}
	return nil, fmt.Errorf("unknown key ID %q", kid)
}

// startFetch returns the fetch in flight, starting one if there is none;
// called with mu held.
func (k *jwks) startFetch() *keyFetch {
	if k.inflight != nil {
		return k.inflight
	}
	f := &keyFetch{done: make(chan struct{})}
	k.inflight = f
	started := k.now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), k.fetchTimeout)
		defer cancel()
		keys, ttl, err := k.fetch(ctx)
		k.mu.Lock()
		if err == nil {
			k.keys, k.fetched, k.ttl = keys, started, ttl
		}
		f.err = err
		k.finished = k.now()
		k.inflight = nil
		k.mu.Unlock()
		close(f.done)
	}()
	return f
}

// maxAge reads Cache-Control: max-age, bounded to [minRefresh, a day];
// without one, keys live for refresh.
func (k *jwks) maxAge(h http.Header) time.Duration {
	for _, d := range strings.Split(h.Get("Cache-Control"), ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(strings.ToLower(d)), "max-age="); ok {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				return min(max(time.Duration(n)*time.Second, k.minRefresh), maxJWKSTTL)
			}
		}
	}
	return k.refresh
}

func (k *jwks) fetch(ctx context.Context) (map[string]*rsa.PublicKey, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch keys: %w", err)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch keys from %s: %w", k.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("fetch keys from %s: status %s", k.url, resp.Status)
	}
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, 0, fmt.Errorf("decode keys from %s: %w", k.url, err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, jk := range set.Keys {
		if jk.Kty != "RSA" || jk.Kid == "" || (jk.Use != "" && jk.Use != "sig") {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(jk.N)
		e, err2 := base64.RawURLEncoding.DecodeString(jk.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			continue
		}
		pk := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pk.N.BitLen() < minRSABits {
			continue // forgeable: no key server of Google's serves one
		}
		keys[jk.Kid] = pk
	}
	if len(keys) == 0 {
		return nil, 0, fmt.Errorf("keys from %s: no usable RSA keys", k.url)
	}
	return keys, k.maxAge(resp.Header), nil
}
