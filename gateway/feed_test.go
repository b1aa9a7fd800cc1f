package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// appendFeed stores an agent message on the conversation's feed subject as
// the outbound delivery does, and returns its event.
func (e *env) appendFeed(conv, text string) handoff.Event {
	e.t.Helper()
	ev, err := handoff.NewEvent(handoff.TypeMessageAgent, conv, handoff.AgentMessage{Text: text, ChatID: "C1", AgentName: "Anna"})
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := ev.Marshal()
	msg := &nats.Msg{Subject: stream.FeedSubject(conv), Data: b, Header: nats.Header{}}
	msg.Header.Set("Ce-Type", string(ev.Type))
	if _, err := e.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(ev.ID)); err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// sseEvent is one event read from a stream.
type sseEvent struct{ id, typ, data string }

// sseClient reads Server-Sent Events the way EventSource does.
type sseClient struct {
	resp *http.Response
	r    *bufio.Reader
}

func (e *env) openSSE(path string, headers map[string]string) *sseClient {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	if _, ok := headers["Authorization"]; !ok && !strings.Contains(path, "token=") {
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		e.t.Fatalf("Content-Type %q", ct)
	}
	return &sseClient{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event, skipping comments (heartbeats) and the
// retry field.
func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev.data != "" {
				return ev
			}
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.typ = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		}
	}
}

func eventsPath(conv string) string {
	return "/v1/conversations/" + url.PathEscape(conv) + "/events"
}

func TestSSEResumesAfterLastEventIDMissingNothing(t *testing.T) {
	// A Dialogflow session's feed, read by a server whose key is bound to
	// Dialogflow ES (a default key reaches REST conversations only).
	e := newEnv(t, func(c *Config) { c.APIKeys = []string{testAPIKey + ";channels=rest|dialogflow-es"} })
	conv := "projects/p/agent/sessions/sse-1"
	other := "projects/p/agent/sessions/someone-else"
	first := e.appendFeed(conv, "first")
	e.appendFeed(other, "not yours")
	second := e.appendFeed(conv, "second")

	c := e.openSSE(eventsPath(conv), nil)
	got1 := c.next(t)
	if got1.typ != string(handoff.TypeMessageAgent) || got1.id == "" {
		t.Fatalf("first event %+v", got1)
	}
	var ce handoff.Event
	if err := json.Unmarshal([]byte(got1.data), &ce); err != nil || ce.ID != first.ID {
		t.Fatalf("data is not the first CloudEvent: %v %s", err, got1.data)
	}
	got2 := c.next(t)
	if !strings.Contains(got2.data, second.ID) {
		t.Fatalf("second event %+v, want %s (the other conversation's event must not appear)", got2, second.ID)
	}
	// Live: an event appended while connected arrives.
	third := e.appendFeed(conv, "third")
	if got3 := c.next(t); !strings.Contains(got3.data, third.ID) {
		t.Fatalf("live event %+v", got3)
	}
	c.resp.Body.Close()

	// The client saw only the first before it dropped; it resumes.
	r := e.openSSE(eventsPath(conv), map[string]string{"Last-Event-ID": got1.id})
	for _, want := range []handoff.Event{second, third} {
		got := r.next(t)
		if !strings.Contains(got.data, want.ID) {
			t.Fatalf("after resume got %+v, want %s", got, want.ID)
		}
	}
}

func TestPullReturnsEventsAfterTheCursorAsJSON(t *testing.T) {
	e := newEnv(t, nil)
	conv := "rest-pull-1"
	a := e.appendFeed(conv, "a")
	b := e.appendFeed(conv, "b")
	get := func(after string) pullAnswer {
		t.Helper()
		path := eventsPath(conv)
		if after != "" {
			path += "?after=" + after
		}
		code, body := e.do(request{method: http.MethodGet, path: path, headers: map[string]string{"Accept": "application/json"}})
		if code != http.StatusOK {
			t.Fatalf("pull: %d %s", code, body)
		}
		var ans pullAnswer
		if err := json.Unmarshal(body, &ans); err != nil {
			t.Fatal(err)
		}
		return ans
	}
	all := get("")
	if len(all.Events) != 2 || !strings.Contains(string(all.Events[0].Event), a.ID) || all.Events[1].Type != "message.agent" {
		t.Fatalf("pull from the start: %+v", all)
	}
	rest := get(all.Events[0].ID)
	if len(rest.Events) != 1 || !strings.Contains(string(rest.Events[0].Event), b.ID) || rest.Next != all.Next {
		t.Fatalf("pull after the first: %+v", rest)
	}
	if none := get(rest.Next); len(none.Events) != 0 || none.Next != rest.Next {
		t.Fatalf("pull at the end: %+v", none)
	}
	code, body := e.do(request{method: http.MethodGet, path: eventsPath(conv) + "?after=yesterday", headers: map[string]string{"Accept": "application/json"}})
	if code != http.StatusBadRequest || !strings.Contains(string(body), "after must be an event id") {
		t.Errorf("bad cursor: %d %s", code, body)
	}
}

func TestStreamTokenOpensOnlyItsConversation(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StreamTokenSecret = "test-stream-secret" })
	conv := "rest-token-1"
	code, body := e.do(request{path: "/v1/conversations/" + conv + "/handoff", body: `{}`})
	if code != http.StatusAccepted {
		t.Fatalf("handoff: %d %s", code, body)
	}
	var acc accepted
	if err := json.Unmarshal(body, &acc); err != nil || acc.StreamToken == "" {
		t.Fatalf("handoff answer has no stream token: %s", body)
	}
	e.appendFeed(conv, "hello")
	c := e.openSSE(eventsPath(conv)+"?token="+url.QueryEscape(acc.StreamToken), map[string]string{"Authorization": ""})
	if ev := c.next(t); ev.typ != "message.agent" {
		t.Fatalf("token stream: %+v", ev)
	}
	for _, r := range []request{
		{method: http.MethodGet, path: eventsPath("rest-token-2") + "?token=" + url.QueryEscape(acc.StreamToken), auth: "-"},
		{method: http.MethodGet, path: eventsPath("rest-token-2"), auth: "Bearer " + acc.StreamToken},
		// A stream token is no API key: it cannot publish.
		{path: "/v1/conversations/" + conv + "/messages", body: `{"text":"hi"}`, auth: "Bearer " + acc.StreamToken},
		{method: http.MethodGet, path: eventsPath(conv), auth: "-"},
	} {
		if code, body := e.do(r); code != http.StatusUnauthorized {
			t.Errorf("%s %s: %d %s, want 401", r.method, r.path, code, body)
		}
	}
}

func TestStreamsAreBoundedAndCORSIsByOrigin(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.MaxStreams = 1
		c.CORSOrigins = []string{"https://shop.example"}
	})
	conv := "bounded-1"
	e.appendFeed(conv, "x")
	c := e.openSSE(eventsPath(conv), map[string]string{"Origin": "https://shop.example"})
	if got := c.resp.Header.Get("Access-Control-Allow-Origin"); got != "https://shop.example" {
		t.Errorf("allowed origin got Access-Control-Allow-Origin %q", got)
	}
	c.next(t)
	code, body := e.do(request{method: http.MethodGet, path: eventsPath(conv), headers: map[string]string{"Accept": "text/event-stream"}})
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "too_many_streams") {
		t.Errorf("second stream over the bound: %d %s", code, body)
	}
	resp := e.send(request{method: http.MethodOptions, path: eventsPath(conv), auth: "-", ctype: "-",
		headers: map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}})
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("foreign origin got Access-Control-Allow-Origin %q", got)
	}
	c.resp.Body.Close()
	// The slot is given back when the client leaves.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp := e.send(request{method: http.MethodGet, path: eventsPath(conv), headers: map[string]string{"Accept": "text/event-stream"}})
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream still refused after the first client left: %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
