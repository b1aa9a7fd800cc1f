package testenv

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
	"time"
)

// SSEEvent is one Server-Sent Event.
type SSEEvent struct{ ID, Type, Data string }

// SSEClient reads a Server-Sent Events stream the way a browser's
// EventSource does (comments and retry fields skipped).
type SSEClient struct {
	t      testing.TB
	resp   *http.Response
	events chan SSEEvent
}

// OpenSSE GETs url as an event stream, sending Last-Event-ID when
// lastEventID is not empty, and fails the test unless it answers 200 with
// text/event-stream. The stream is closed when the test ends.
func OpenSSE(t testing.TB, url, lastEventID string, header http.Header) *SSEClient {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("testenv: GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		t.Fatalf("testenv: GET %s: %s, Content-Type %q", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	c := &SSEClient{t: t, resp: resp, events: make(chan SSEEvent, 64)}
	go c.read()
	t.Cleanup(c.Close)
	return c
}

func (c *SSEClient) read() {
	defer close(c.events)
	r := bufio.NewReader(c.resp.Body)
	var ev SSEEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if ev.Data != "" {
				c.events <- ev
			}
			ev = SSEEvent{}
		case strings.HasPrefix(line, "id:"):
			ev.ID = strings.TrimSpace(line[3:])
		case strings.HasPrefix(line, "event:"):
			ev.Type = strings.TrimSpace(line[6:])
		case strings.HasPrefix(line, "data:"):
			ev.Data += strings.TrimPrefix(line[5:], " ")
		}
	}
}

// Next returns the next event, failing the test if none comes within
// timeout.
func (c *SSEClient) Next(timeout time.Duration) SSEEvent {
	c.t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			c.t.Fatal("testenv: the event stream ended")
		}
		return ev
	case <-time.After(timeout):
		c.t.Fatalf("testenv: no event within %s", timeout)
	}
	return SSEEvent{}
}

// TryNext returns the next event, or false if none comes within timeout
// (or the stream ended): for checking that nothing more arrives.
func (c *SSEClient) TryNext(timeout time.Duration) (SSEEvent, bool) {
	select {
	case ev, ok := <-c.events:
		return ev, ok
	case <-time.After(timeout):
		return SSEEvent{}, false
	}
}

// Close disconnects, as a browser tab going away.
func (c *SSEClient) Close() { c.resp.Body.Close() }
