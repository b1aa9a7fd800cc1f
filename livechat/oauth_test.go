package livechat_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"

	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
)

// authorize runs the simulator's authorize step for a PKCE verifier and
// returns the code it redirects with.
func authorize(t *testing.T, simURL, redirect, verifier string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {"app"}, "redirect_uri": {redirect}, "state": {"s1"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(simURL + "/?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || loc.Query().Get("state") != "s1" {
		t.Fatalf("authorize answered %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}

// TestExchangeCodeAndRotation: a code is worth a refresh token once, only
// with its verifier and redirect URI; a rotated refresh token is used from
// then on and handed to OnRefreshToken.
func TestExchangeCodeAndRotation(t *testing.T) {
	sim := livechatsim.New(livechatsim.Options{ClientID: "app", StrictRefreshTokens: true, RotateRefreshTokens: true})
	t.Cleanup(sim.Close)
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	const redirect = "http://127.0.0.1:1/callback"
	ctx := context.Background()

	var kept []string
	lc := livechat.New(livechat.Config{AccountsURL: ts.URL, ClientID: "app", ClientSecret: "s",
		OnRefreshToken: func(_ context.Context, rt string) error { kept = append(kept, rt); return nil }})

	code := authorize(t, ts.URL, redirect, "the-verifier-of-this-login-0123456789")
	if _, err := lc.ExchangeCode(ctx, code, redirect, "another-verifier-0123456789012345678"); err == nil {
		t.Fatal("a code was exchanged with the wrong code_verifier")
	}
	code = authorize(t, ts.URL, redirect, "the-verifier-of-this-login-0123456789")
	if _, err := lc.ExchangeCode(ctx, code, "http://127.0.0.1:2/other", "the-verifier-of-this-login-0123456789"); err == nil {
		t.Fatal("a code was exchanged with another redirect_uri")
	}
	code = authorize(t, ts.URL, redirect, "the-verifier-of-this-login-0123456789")
	tok, err := lc.ExchangeCode(ctx, code, redirect, "the-verifier-of-this-login-0123456789")
	if err != nil || tok.RefreshToken == "" || tok.AccessToken == "" {
		t.Fatalf("ExchangeCode = %+v, %v", tok, err)
	}
	if !slices.Contains(tok.Scopes, "customers:own") {
		t.Errorf("scopes %q", tok.Scopes)
	}
	if _, err := lc.ExchangeCode(ctx, code, redirect, "the-verifier-of-this-login-0123456789"); err == nil {
		t.Fatal("a code was exchanged twice")
	}

	worker := livechat.New(livechat.Config{AccountsURL: ts.URL, ClientID: "app", ClientSecret: "s", RefreshToken: tok.RefreshToken,
		OnRefreshToken: func(_ context.Context, rt string) error { kept = append(kept, rt); return nil }})
	for i := range 3 {
		// Each refresh rotates, and the simulator retires the old token:
		// a second refresh works only if the client kept the new one.
		if _, err := worker.RefreshAgentToken(ctx); err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
	}
	if len(kept) != 3 || kept[0] == tok.RefreshToken || kept[1] == kept[0] {
		t.Fatalf("rotated tokens kept: %q", kept)
	}
	stale := livechat.New(livechat.Config{AccountsURL: ts.URL, ClientID: "app", ClientSecret: "s", RefreshToken: tok.RefreshToken})
	if _, err := stale.RefreshAgentToken(ctx); err == nil {
		t.Fatal("the simulator still takes a retired refresh token; the test proves nothing")
	}
}
