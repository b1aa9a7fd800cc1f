package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDevEndToEnd runs `handoff dev` and does what the README tells a
// newcomer: a handoff and a message through the REST API reach the
// simulated LiveChat, in order.
func TestDevEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("dev needs redis-server on PATH")
	}
	d := startDev(t)
	sim, gw, out := d.sim, d.gw, d.out
	deadline := time.Now().Add(30 * time.Second)
	post := func(path, body string) {
		t.Helper()
		resp, err := http.Post("http://"+gw+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
	post("/v1/conversations/demo-1/handoff", `{"customer":{"name":"Ana"},"text":"agent"}`)
	post("/v1/conversations/demo-1/messages", `{"text":"my order is late"}`)

	var chatID string
	for {
		resp, err := http.Get("http://" + sim + "/_sim/chats")
		if err == nil {
			var chats []struct {
				ID       string
				Customer struct{ Name string }
				Events   []struct{ Text string }
			}
			_ = json.NewDecoder(resp.Body).Decode(&chats)
			resp.Body.Close()
			if len(chats) == 1 && len(chats[0].Events) >= 2 {
				texts := []string{}
				for _, e := range chats[0].Events {
					texts = append(texts, e.Text)
				}
				if chats[0].Customer.Name != "Ana" || texts[len(texts)-1] != "my order is late" {
					t.Fatalf("chat: customer %q, texts %q", chats[0].Customer.Name, texts)
				}
				chatID = chats[0].ID
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message never reached the simulator; dev output:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The agent answers in the simulator; its webhook reaches the gateway,
	// which marks the conversation as with an agent.
	resp, err := http.Post("http://"+sim+"/_sim/chats/"+chatID+"/agent_message", "application/json", strings.NewReader(`{"text":"Hi, I am Tom"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for {
		resp, err := http.Get("http://" + gw + "/v1/conversations/demo-1")
		if err != nil {
			t.Fatal(err)
		}
		var conv struct{ Mode string }
		_ = json.NewDecoder(resp.Body).Decode(&conv)
		resp.Body.Close()
		if conv.Mode == "agent" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's reply never came back through the webhook (mode %q)", conv.Mode)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err = http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if !strings.Contains(b.String(), `handoff_worker_events_total{outcome="applied",type="message.user"} 1`) {
		t.Errorf("worker metrics do not show the applied message")
	}
}

// TestDevNothingInstalled is the README's walkthrough on a machine with
// nothing but the handoff binary: the built command runs with an empty PATH
// (so no redis-server), keeps its state in JetStream key-value buckets under
// ./.handoff, and a handoff, the agent's reply and the close all work. A
// second start on the same directory still knows the conversation, and
// SIGINT stops dev with exit status 0 both times.
func TestDevNothingInstalled(t *testing.T) {
	bin, err := testenv.HandoffBinary()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	sim := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	gw := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	demo := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	start := func() (stop func()) {
		t.Helper()
		cmd := exec.Command(bin, "dev", "--nats-port", "-1", "--sim-addr", sim, "--gateway-addr", gw,
			"--metrics-addr", metrics, "--demo-addr", demo, "--log-level", "warn")
		cmd.Dir = work
		cmd.Env = []string{"PATH=" + t.TempDir(), "HOME=" + work}
		var out lockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(out.String(), "handoff dev is running") {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("dev did not start:\n%s", out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(out.String(), "state:      JetStream key-value buckets") {
			t.Errorf("dev without redis-server does not use the NATS KV store:\n%s", out.String())
		}
		return func() {
			t.Helper()
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("dev after Ctrl-C: %v\n%s", err, out.String())
				}
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Errorf("dev did not stop on Ctrl-C:\n%s", out.String())
			}
		}
	}
	stop := start()
	w := walkthrough{t: t, gw: "http://" + gw, sim: "http://" + sim, deadline: time.Now().Add(60 * time.Second)}
	w.post(w.gw+"/v1/conversations/demo-1/handoff", `{"customer":{"name":"Ana"},"text":"agent"}`)
	w.post(w.gw+"/v1/conversations/demo-1/messages", `{"text":"my order is late"}`)
	chatID := w.chatWith("my order is late")
	// The user's page follows the conversation's event stream, as the
	// README's walkthrough does with curl -N.
	events := testenv.OpenSSE(t, w.gw+"/v1/conversations/demo-1/events", "", nil)
	w.post(w.sim+"/_sim/chats/"+chatID+"/agent_message", `{"text":"Hi, I am Tom"}`)
	w.waitMode("demo-1", "agent")
	w.streamed(events, handoff.TypeMessageAgent, "Hi, I am Tom")
	w.post(w.sim+"/_sim/chats/"+chatID+"/close", `{}`)
	w.streamed(events, handoff.TypeChatClosed, "")
	// Read the record only once the stream showed the close: outbound
	// records the funnel's end in the same record before it appends the
	// close to the feed, so the version read here is the last one.
	closed := w.waitMode("demo-1", "closed") // the bot answers again
	stop()

	if _, err := os.Stat(filepath.Join(work, ".handoff")); err != nil {
		t.Fatalf("no ./.handoff data directory: %v", err)
	}
	stop = start()
	defer stop()
	w.deadline = time.Now().Add(30 * time.Second)
	if again := w.waitMode("demo-1", "closed"); again.Version != closed.Version || again.ChatID != closed.ChatID {
		t.Fatalf("after a restart the conversation is %+v; want the record before it (%+v)", again, closed)
	}
}

// walkthrough does the README's steps over HTTP.
type walkthrough struct {
	t        *testing.T
	gw, sim  string
	deadline time.Time
}

// streamed reads the event stream until an event of type typ whose data
// holds text arrives, and fails the test if the stream ends or stalls.
func (w walkthrough) streamed(c *testenv.SSEClient, typ handoff.EventType, text string) {
	w.t.Helper()
	for {
		se := c.Next(time.Until(w.deadline))
		ev, err := handoff.UnmarshalEvent([]byte(se.Data))
		if err != nil || se.Type != string(ev.Type) {
			w.t.Fatalf("event stream sent %+v: %v", se, err)
		}
		if ev.Type == typ && strings.Contains(string(ev.Data), text) {
			return
		}
	}
}

func (w walkthrough) post(url, body string) {
	w.t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		w.t.Fatalf("POST %s: %s %s", url, resp.Status, b)
	}
}

// simChat is a chat as the simulator's /_sim/chats lists it, as far as
// these tests read it.
type simChat struct {
	ID     string
	Events []struct{ Text string }
}

// waitChat polls the simulator's chats until match finds the one wanted,
// and returns its ID; text names what was awaited in the failure.
func (w walkthrough) waitChat(text string, match func([]simChat) (string, bool)) string {
	w.t.Helper()
	for {
		var chats []simChat
		if resp, err := http.Get(w.sim + "/_sim/chats"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&chats)
			resp.Body.Close()
		}
		if id, ok := match(chats); ok {
			return id
		}
		if time.Now().After(w.deadline) {
			w.t.Fatalf("%q never reached the simulator: %+v", text, chats)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// chatWith waits for the simulator's one chat to end with text and returns
// its ID.
func (w walkthrough) chatWith(text string) string {
	w.t.Helper()
	return w.waitChat(text, func(chats []simChat) (string, bool) {
		if len(chats) == 1 && len(chats[0].Events) > 0 && chats[0].Events[len(chats[0].Events)-1].Text == text {
			return chats[0].ID, true
		}
		return "", false
	})
}

type convView struct {
	Mode    string `json:"mode"`
	ChatID  string `json:"chat_id"`
	Version int64  `json:"version"`
}

// waitMode waits for GET /v1/conversations/{id} to show mode.
func (w walkthrough) waitMode(id, mode string) convView {
	w.t.Helper()
	for {
		var c convView
		if resp, err := http.Get(w.gw + "/v1/conversations/" + id); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&c)
			resp.Body.Close()
		}
		if c.Mode == mode && c.Version > 0 {
			return c
		}
		if time.Now().After(w.deadline) {
			w.t.Fatalf("conversation %s is %+v; want mode %s", id, c, mode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDevAgentAnswersBeforeTheChatIsRecorded is the "unknown chat"
// window: the simulator answers start_chat slowly (the chat exists at
// once, its ID reaches the worker 2 s later), and the agent writes in
// between. The webhook for a chat the store does not know yet is held (or
// answered 503 and delivered again) instead of being answered 200 and
// dropped, so the reply reaches the user.
func TestDevAgentAnswersBeforeTheChatIsRecorded(t *testing.T) {
	d := startDev(t, "--store", "nats")
	sim, gw := d.sim, d.gw
	w := walkthrough{t: t, gw: "http://" + gw, sim: "http://" + sim, deadline: time.Now().Add(60 * time.Second)}
	req, _ := http.NewRequest(http.MethodPut, w.sim+"/_sim/faults",
		strings.NewReader(`{"latency":{"fixed_ms":2000,"actions":["start_chat"],"after_apply":true}}`))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("set faults: %v %v", resp, err)
	}
	w.post(w.gw+"/v1/conversations/demo-2/handoff", `{"customer":{"name":"Ana"},"text":"agent"}`)
	chatID := w.chatWith("agent")
	// The chat exists in LiveChat, but the worker is still waiting for
	// start_chat's answer: the conversation has no chat yet.
	if c := w.waitMode("demo-2", "pending"); c.ChatID != "" {
		t.Fatalf("the chat was recorded before the agent wrote (%+v); the test did not open the window", c)
	}
	w.post(w.sim+"/_sim/chats/"+chatID+"/agent_message", `{"text":"Hi, I was quick"}`)
	// The reply was relayed: only the relay of an agent's message moves
	// the conversation to agent.
	if c := w.waitMode("demo-2", "agent"); c.ChatID != chatID {
		t.Errorf("conversation %+v, want chat %s", c, chatID)
	}
}

// devRun is a `handoff dev` started by startDev.
type devRun struct {
	sim, gw, metrics string // host:port of the simulator, gateway and metrics
	out              *lockedBuffer
}

// startDev runs `handoff dev` in the test process on free loopback ports,
// without the demo page, with extra flags after the defaults (a later
// flag wins), waits until it says it is running, and stops it (Ctrl-C)
// when the test ends.
func startDev(t *testing.T, extra ...string) devRun {
	t.Helper()
	d := devRun{
		sim:     fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		gw:      fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		metrics: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		out:     &lockedBuffer{},
	}
	args := append([]string{"--nats-port", "-1", "--data-dir", t.TempDir(), "--sim-addr", d.sim, "--gateway-addr", d.gw,
		"--metrics-addr", d.metrics, "--demo-addr", "", "--log-level", "warn"}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, args, d.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev: %v", err)
			}
		case <-time.After(40 * time.Second):
			t.Errorf("dev did not stop")
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(d.out.String(), "handoff dev is running") {
		select {
		case err := <-done:
			t.Fatalf("dev stopped before it ran: %v\n%s", err, d.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev did not start:\n%s", d.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}
