// Package demo is the page `handoff dev` serves at /: a user chatting with
// a bot and asking for an agent (left), and the simulated LiveChat agent
// answering (right), so a person can watch a handoff instead of reading
// curl output. Plain HTML and JavaScript embedded in the binary: no build
// step, nothing fetched from elsewhere.
//
// The page talks to the gateway's REST API and to the simulator's control
// API through this handler (same origin, so the browser needs no CORS and
// the gateway keeps its own routes): /v1/... goes to the gateway, /_sim/...
// to the simulator.
package demo

import (
	_ "embed"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
)

//go:embed index.html
var page []byte

// New returns the demo page's handler in front of the gateway and the
// simulator at the given base URLs.
func New(gatewayURL, simURL string) (http.Handler, error) {
	gw, err := url.Parse(gatewayURL)
	if err != nil {
		return nil, fmt.Errorf("demo: gateway URL: %w", err)
	}
	sim, err := url.Parse(simURL)
	if err != nil {
		return nil, fmt.Errorf("demo: simulator URL: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		_, _ = w.Write(page)
	})
	mux.Handle("/v1/", httputil.NewSingleHostReverseProxy(gw))
	mux.Handle("/_sim/", httputil.NewSingleHostReverseProxy(sim))
	return mux, nil
}
