package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// Acceptance 1 of the delivery issue on the real thing: `handoff dev`
// (NATS, Redis, the simulator, worker with outbound, gateway) with a
// callback configured. A REST handoff, then the simulated agent writes
// twice and adds one internal note: the bot's callback endpoint gets both
// replies in order, once each, verified per Standard Webhooks, and nothing
// for the note; an SSE client that left after the first reply resumes with
// Last-Event-ID and misses nothing; the agent closes the chat and
// chat.closed reaches both.
func TestDevDeliversAgentRepliesToTheCallback(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("dev needs redis-server on PATH")
	}
	rcv := testenv.StartCallbackReceiver(t, testenv.NewSecret(t))
	sim := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	gw := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, []string{"--nats-port", "-1", "--data-dir", t.TempDir(), "--sim-addr", sim,
			"--gateway-addr", gw, "--metrics-addr", metrics, "--log-level", "warn",
			"--callback-url", rcv.URL(), "--callback-secret", rcv.Secret()}, &out)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev: %v", err)
			}
		case <-time.After(40 * time.Second):
			t.Errorf("dev did not stop")
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "handoff dev is running") {
		if time.Now().After(deadline) {
			t.Fatalf("dev did not start:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	post := func(url, body string, want int) {
		t.Helper()
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %s", url, resp.Status)
		}
	}
	post("http://"+gw+"/v1/conversations/web-7/handoff", `{"customer":{"name":"Ana"},"text":"agent please"}`, http.StatusAccepted)

	var chatID string
	for chatID == "" {
		resp, err := http.Get("http://" + sim + "/_sim/chats")
		if err == nil {
			var chats []struct{ ID string }
			_ = json.NewDecoder(resp.Body).Decode(&chats)
			resp.Body.Close()
			if len(chats) == 1 {
				chatID = chats[0].ID
			}
		}
		if chatID == "" && time.Now().After(deadline) {
			t.Fatalf("no chat in the simulator; dev output:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	simURL := "http://" + sim + "/_sim/chats/" + chatID
	// An SSE client (a web front end) follows the same conversation.
	eventsURL := "http://" + gw + "/v1/conversations/web-7/events"
	sse := testenv.OpenSSE(t, eventsURL, "", nil)
	nextAgentEvent := func(c *testenv.SSEClient) (testenv.SSEEvent, handoff.Event) {
		t.Helper()
		for {
			se := c.Next(20 * time.Second)
			ev, err := handoff.UnmarshalEvent([]byte(se.Data))
			if err != nil || se.Type != string(ev.Type) {
				t.Fatalf("SSE event %+v: %v", se, err)
			}
			if ev.Type == handoff.TypeMessageAgent || ev.Type == handoff.TypeChatClosed {
				return se, ev
			}
		}
	}

	// LiveChat (and the simulator) send webhooks from several senders at
	// once, so two messages an agent sends within the same millisecond
	// may reach the gateway in either order; a person types slower than
	// that. Each reply is written once the previous one was relayed.
	post(simURL+"/agent_message", `{"text":"Hi, I am Tom"}`, http.StatusOK)
	first, firstEv := nextAgentEvent(sse)
	if firstEv.Type != handoff.TypeMessageAgent || !strings.Contains(string(firstEv.Data), "Hi, I am Tom") {
		t.Fatalf("first SSE event %s %s, want the first reply", firstEv.Type, firstEv.Data)
	}
	sse.Close() // the tab goes away after the first reply

	post(simURL+"/agent_message", `{"text":"VIP, be nice","visibility":"agents"}`, http.StatusOK)
	post(simURL+"/agent_message", `{"text":"Your order ships today"}`, http.StatusOK)
	replies := func() []testenv.ReceivedCallback {
		var out []testenv.ReceivedCallback
		for _, c := range rcv.Received() {
			if c.Event.Type == handoff.TypeMessageAgent {
				out = append(out, c)
			}
		}
		return out
	}
	deadline = time.Now().Add(20 * time.Second)
	for len(replies()) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	var texts []string
	for _, c := range replies() {
		var m handoff.AgentMessage
		if json.Unmarshal(c.Event.Data, &m) != nil {
			t.Fatalf("callback %s: %s", c.ID, c.Body)
		}
		if c.Event.Subject != "web-7" || c.ID != c.Event.ID {
			t.Errorf("callback for %q with webhook-id %q (event %q)", c.Event.Subject, c.ID, c.Event.ID)
		}
		texts = append(texts, m.Text)
	}
	if strings.Join(texts, "|") != "Hi, I am Tom|Your order ships today" {
		t.Fatalf("callbacks carried %q, want the two replies in order and not the note", texts)
	}

	post(simURL+"/close", `{}`, http.StatusOK)
	deadline = time.Now().Add(20 * time.Second)
	closedAt := -1
	for closedAt < 0 && time.Now().Before(deadline) {
		for i, c := range rcv.Received() {
			if c.Event.Type == handoff.TypeChatClosed && c.Event.Subject == "web-7" {
				closedAt = i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if closedAt < 0 {
		t.Fatalf("chat.closed never reached the callback")
	}
	time.Sleep(300 * time.Millisecond) // a repeat or the note would show up by now
	all := rcv.Received()
	if len(all) != len(rcv.Unique()) {
		t.Errorf("%d callbacks but %d webhook-ids: something was sent twice", len(all), len(rcv.Unique()))
	}
	for _, c := range all {
		if strings.Contains(string(c.Body), "VIP") {
			t.Errorf("the internal note reached the callback: %s", c.Body)
		}
	}
	if bad := rcv.BadSignatures(); len(bad) > 0 {
		t.Errorf("signatures that do not verify: %v", bad)
	}

	// The front end comes back with Last-Event-ID and misses nothing: the
	// second reply, then the close; the note is not in the feed either.
	again := testenv.OpenSSE(t, eventsURL, first.ID, nil)
	_, second := nextAgentEvent(again)
	_, closed := nextAgentEvent(again)
	if second.Type != handoff.TypeMessageAgent || !strings.Contains(string(second.Data), "Your order ships today") || closed.Type != handoff.TypeChatClosed {
		t.Fatalf("after resuming: %s %s, then %s; want the second reply, then chat.closed", second.Type, second.Data, closed.Type)
	}
	for _, c := range []handoff.Event{second, closed} {
		if strings.Contains(string(c.Data), "VIP") {
			t.Errorf("the internal note reached the feed: %s", c.Data)
		}
	}
}
