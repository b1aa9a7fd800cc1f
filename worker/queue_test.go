package worker_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
)

// queuedPositions lists the positions of a conversation's chat.queued
// events on HANDOFF_OUT, checking each carries the ID the gateway derives.
func (e *env) queuedPositions(conv, chatID, threadID string) []int {
	e.t.Helper()
	var out []int
	for _, ev := range e.outEvents(conv) {
		if ev.Type != handoff.TypeChatQueued {
			continue
		}
		var q handoff.ChatQueued
		if err := json.Unmarshal(ev.Data, &q); err != nil {
			e.t.Fatal(err)
		}
		if want := handoff.ChatQueuedID(chatID, threadID, q.Position); ev.ID != want || q.ChatID != chatID {
			e.t.Errorf("chat.queued %s for chat %s, want ID %s for chat %s", ev.ID, q.ChatID, want, chatID)
		}
		out = append(out, q.Position)
	}
	return out
}

// TestQueuePositionIsTold is issue 9's status while queued: with agents
// busy (nobody takes the chats), a user whose chat waits behind another
// is told position 2; when the chat ahead is picked up, position 1; and
// nothing again while the position stays (several polls go by).
func TestQueuePositionIsTold(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.QueuePollInterval = 300 * time.Millisecond
	e.startWorker(cfg)
	first, second := conv(1), conv(2)
	e.publish(handoff.TypeHandoffRequested, first, handoff.HandoffRequested{Text: "agent please"})
	e.waitDrained(20 * time.Second)
	a := e.waitMode(first, handoff.ModeQueued, 10*time.Second)
	e.publish(handoff.TypeHandoffRequested, second, handoff.HandoffRequested{Text: "me too"})
	e.waitDrained(20 * time.Second)
	b := e.waitMode(second, handoff.ModeQueued, 10*time.Second)

	waitPositions := func(conv string, rec handoff.Conversation, want []int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for len(e.queuedPositions(conv, rec.ChatID, rec.ThreadID)) < len(want) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(4 * cfg.QueuePollInterval) // more polls: nothing new while it stays
		if got := e.queuedPositions(conv, rec.ChatID, rec.ThreadID); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s was told positions %v, want %v", conv, got, want)
		}
	}
	waitPositions(first, a, []int{1})
	waitPositions(second, b, []int{2})

	// An agent takes the first chat: the second moves up.
	if err := e.sim.AgentMessage(a.ChatID, "Hi, I'm Tom"); err != nil {
		t.Fatal(err)
	}
	waitPositions(second, b, []int{2, 1})
	waitPositions(first, a, []int{1})
}

// With --queue-poll-interval 0 nothing is polled.
func TestQueuePollOff(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.QueuePollInterval = 0
	e.startWorker(cfg)
	e.publish(handoff.TypeHandoffRequested, conv(1), handoff.HandoffRequested{Text: "agent please"})
	e.waitDrained(20 * time.Second)
	e.waitMode(conv(1), handoff.ModeQueued, 10*time.Second)
	time.Sleep(time.Second)
	if n := e.sim.Stats()["get_chat"]; len(n) != 0 {
		t.Errorf("customer get_chat calls with the poll off: %v", n)
	}
	if evs := e.outEvents(conv(1)); len(evs) != 0 {
		t.Errorf("reverse events with the poll off: %+v", evs)
	}
}

// TestQueuePollRespectsRetryAfter: while get_chat is answered 429 with
// Retry-After, nothing is told; once LiveChat answers again, the position
// is told once.
func TestQueuePollRespectsRetryAfter(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.QueuePollInterval = 300 * time.Millisecond
	e.startWorker(cfg)
	if err := e.sim.SetFaults(livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Action: "get_chat", Rate: 1, Type: "too_many_requests", RetryAfter: "1"}}}); err != nil {
		t.Fatal(err)
	}
	e.publish(handoff.TypeHandoffRequested, conv(1), handoff.HandoffRequested{Text: "agent please"})
	e.waitDrained(20 * time.Second)
	rec := e.waitMode(conv(1), handoff.ModeQueued, 10*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for e.sim.Stats()["get_chat"][429] < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := e.sim.Stats()["get_chat"][429]; n < 2 {
		t.Fatalf("%d get_chat calls answered 429, want the poll to have tried", n)
	}
	if got := e.queuedPositions(conv(1), rec.ChatID, rec.ThreadID); len(got) != 0 {
		t.Fatalf("positions told while LiveChat refused: %v", got)
	}
	e.sim.ResetFaults()
	deadline = time.Now().Add(20 * time.Second)
	for len(e.queuedPositions(conv(1), rec.ChatID, rec.ThreadID)) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(4 * cfg.QueuePollInterval)
	if got := e.queuedPositions(conv(1), rec.ChatID, rec.ThreadID); fmt.Sprint(got) != "[1]" {
		t.Errorf("positions told %v, want [1]", got)
	}
}
