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
	for _, k := range g.cfg.APIKeys { // compare with every key: no early exit
		if secretEqual(tok, k) {
			match = true
		}
	}
	if !match {
		return errBadCredentials
	}
	return nil
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
	return &chatVerifier{
		audience:    cfg.ChatAudience,
		urlAudience: strings.HasPrefix(cfg.ChatAudience, "https://") || strings.HasPrefix(cfg.ChatAudience, "http://"),
		emails:      cfg.ChatIDTokenEmails,
		chatKeys:    newJWKS(cfg.ChatJWKSURL, cfg.HTTPClient, cfg.ChatJWKSRefresh, cfg.ChatJWKSMinRefresh),
		googleKeys:  newJWKS(cfg.ChatIDTokenJWKSURL, cfg.HTTPClient, cfg.ChatJWKSRefresh, cfg.ChatJWKSMinRefresh),
	}
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

// jwks is a cached JSON Web Key Set of RSA keys. Keys are refetched when
// older than refresh, or when a token names an unknown key ID (Google
// rotates keys), but at most once per minRefresh so that tokens with made-up
// key IDs cannot make us hammer the key server.
type jwks struct {
	url        string
	client     *http.Client
	refresh    time.Duration
	minRefresh time.Duration

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetched time.Time
	tried   time.Time
}

func newJWKS(url string, client *http.Client, refresh, minRefresh time.Duration) *jwks {
	return &jwks{url: url, client: client, refresh: refresh, minRefresh: minRefresh}
}

func (k *jwks) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	if kid == "" {
		return nil, errors.New("token has no key ID")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	_, known := k.keys[kid]
	stale := k.keys == nil || now.Sub(k.fetched) > k.refresh
	if (stale || !known) && (k.tried.IsZero() || now.Sub(k.tried) >= k.minRefresh) {
		k.tried = now
		keys, err := k.fetch(ctx)
		switch {
		case err == nil:
			k.keys, k.fetched = keys, now
		case !known:
			return nil, err
		}
		// On a failed refresh a known key stays usable: Google's key
		// endpoint being slow must not lock Chat out.
	}
	key, ok := k.keys[kid]
	if !ok {
		return nil, fmt.Errorf("unknown key ID %q", kid)
	}
	return key, nil
}

func (k *jwks) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch keys: %w", err)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch keys from %s: %w", k.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch keys from %s: status %s", k.url, resp.Status)
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
		return nil, fmt.Errorf("decode keys from %s: %w", k.url, err)
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
		keys[jk.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("keys from %s: no usable RSA keys", k.url)
	}
	return keys, nil
}
