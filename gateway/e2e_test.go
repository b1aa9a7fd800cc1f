package gateway

import (
	"bytes"
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/stream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A CX conversation from handoff to cancel, through a real HTTP server,
// embedded NATS and Redis: the four events arrive in order on the
// conversation's subject of HANDOFF_IN, and a retried turn is stored once.
func TestEndToEndCX(t *testing.T) {
	e := newEnv(t, nil)
	steps := []struct {
		body string
		want string // substring of the response
	}{
		{cxHandoff, handoffReply},
		{cxTurnBody("d-2", "my order is 42", "live-agent-message"), `"messages":[]`},
		{cxTurnBody("d-2", "my order is 42", "live-agent-message"), `"messages":[]`}, // Dialogflow retry
		{cxTurnBody("d-3", "it never arrived", ""), `"live_agent":true`},
		{cxTurnBody("d-4", "thanks", "live-agent-cancel"), `"live_agent":null`},
	}
	for i, s := range steps {
		code, body := e.do(request{path: "/dialogflow/cx", body: s.body})
		if code != 200 || !strings.Contains(string(body), s.want) {
			t.Fatalf("step %d: %d %s (want %s)", i, code, body, s.want)
		}
	}
	evs := e.events(cxSession)
	checkEvents(t, cxSession, evs, []wantEvent{
		{id: deriveID("dialogflow-cx", cxSession, "d-1"), typ: handoff.TypeHandoffRequested, data: `{"customer":{"name":"Ana Souza","email":"ana@example.com"},
			"reason":"billing","language":"en",
			"reply_to":{"channel":"dialogflow-cx","address":"` + cxSession + `"},"text":"talk to a human please"}`},
		{id: deriveID("dialogflow-cx", cxSession, "d-2"), typ: handoff.TypeMessageUser, data: `{"text":"my order is 42"}`},
		{id: deriveID("dialogflow-cx", cxSession, "d-3"), typ: handoff.TypeMessageUser, data: `{"text":"it never arrived"}`},
		{id: deriveID("dialogflow-cx", cxSession, "d-4"), typ: handoff.TypeHandoffCancelled, data: `{"reason":"tag"}`},
	})
	if e.streamCount() != 4 {
		t.Errorf("HANDOFF_IN holds %d messages, want 4", e.streamCount())
	}
	for i, ev := range evs {
		if s, _ := stream.Route(ev.Type, ev.Subject); s != stream.InSubject(cxSession) {
			t.Errorf("event %d routed to %s", i, s)
		}
	}
	if m := e.mode(cxSession); m != handoff.ModeBot {
		t.Errorf("mode %s after cancel, want bot", m)
	}
}

// With NATS down the gateway answers 503 (a JSON error, inside its
// timeout, so Dialogflow sees a failure) and recovers once NATS is back;
// the retried turn is stored once.
func TestNATSOutage(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RequestTimeout = 2 * time.Second })
	if code, body := e.do(request{method: "GET", path: "/readyz"}); code != 200 {
		t.Fatalf("readyz before the outage: %d %s", code, body)
	}
	e.nats.Stop()

	resp := e.send(request{path: "/dialogflow/cx", body: cxHandoff})
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("with NATS down: %d %s, want 503", resp.StatusCode, buf.Bytes())
	}
	if code, _ := errorCode(t, buf.Bytes()); code != "unavailable" {
		t.Errorf("code %q", code)
	}
	if m := e.mode(cxSession); m != handoff.ModeBot {
		t.Errorf("mode %s after a failed handoff, want bot: the next turns must not be swallowed", m)
	}
	if code, _ := e.do(request{method: "GET", path: "/readyz"}); code != 503 {
		t.Errorf("readyz during the outage: %d, want 503", code)
	}
	if code, _ := e.do(request{method: "GET", path: "/healthz"}); code != 200 {
		t.Errorf("healthz during the outage: %d, want 200", code)
	}

	e.nats.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := e.do(request{path: "/dialogflow/cx", body: cxHandoff})
		if code == 200 {
			break
		}
		if code != 503 || time.Now().After(deadline) {
			t.Fatalf("after NATS restart: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	evs := e.events(cxSession)
	if len(evs) != 1 || evs[0].Type != handoff.TypeHandoffRequested || evs[0].ID != deriveID("dialogflow-cx", cxSession, "d-1") {
		t.Fatalf("events after recovery: %+v", evs)
	}
	if m := e.mode(cxSession); m != handoff.ModePending {
		t.Errorf("mode %s, want pending", m)
	}
}

func TestMetricsLint(t *testing.T) {
	e := newEnv(t, nil)
	e.do(request{path: "/dialogflow/cx", body: cxHandoff})
	e.do(request{path: "/dialogflow/es", body: esHandoff})
	e.do(request{path: "/dialogflow/es", body: "{", auth: "-"})
	e.do(request{method: "GET", path: "/healthz"})
	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	for _, c := range []struct {
		got  float64
		want float64
		what string
	}{
		{testutil.ToFloat64(e.gw.m.handoffs.WithLabelValues(TriggerLiveAgentHandoff)), 2, "live_agent_handoff handoffs"},
		{testutil.ToFloat64(e.gw.m.handoffs.WithLabelValues(TriggerPhrase)), 0, "phrase handoffs"},
		{testutil.ToFloat64(e.gw.m.requests.WithLabelValues("dialogflow_es", "401")), 1, "ES 401s"},
		{testutil.ToFloat64(e.gw.m.requests.WithLabelValues("dialogflow_cx", "200")), 1, "CX 200s"},
		{testutil.ToFloat64(e.gw.m.requests.WithLabelValues("healthz", "200")), 1, "healthz 200s"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(e.gw.m.publish); n != 1 {
		t.Errorf("publish histogram: %d series", n)
	}
}

// Every route of the mux is in the checked-in OpenAPI document with its
// method, and the document lists nothing the mux does not serve.
func TestOpenAPICoversRoutes(t *testing.T) {
	e := newEnv(t, nil)
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	var routes, documented []string
	for _, r := range e.gw.Routes() {
		routes = append(routes, r)
		method, path, _ := strings.Cut(r, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for path, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, strings.ToUpper(m)+" "+path)
		}
	}
	sort.Strings(routes)
	sort.Strings(documented)
	if strings.Join(routes, "\n") != strings.Join(documented, "\n") {
		t.Errorf("openapi.json documents:\n%s\nthe mux serves:\n%s", strings.Join(documented, "\n"), strings.Join(routes, "\n"))
	}
	code, served := e.do(request{method: "GET", path: "/v1/openapi.json", auth: "-"})
	if code != 200 || !bytes.Equal(served, raw) {
		t.Errorf("/v1/openapi.json: %d, differs from the checked-in file", code)
	}
}
