package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/worker"
)

// TestCancelTellsTheAgent is issue 9's "the user's cancel ... and the
// agent sees a system message": when the user goes back to the bot, the
// agent's chat gets one system message saying so, in the thread, before
// the chat is ended. With the answers to half of the send_event calls
// lost, the notice is still there exactly once.
func TestCancelTellsTheAgent(t *testing.T) {
	for _, lossy := range []bool{false, true} {
		name := "clean"
		if lossy {
			name = "answers_lost"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.startWorker(testConfig())
			e.publish(handoff.TypeHandoffRequested, conv(1), handoff.HandoffRequested{Text: "agent please"})
			e.waitDrained(20 * time.Second)
			rec := e.waitMode(conv(1), handoff.ModeQueued, 10*time.Second)
			if err := e.sim.AgentMessage(rec.ChatID, "Hi, I'm Tom"); err != nil {
				t.Fatal(err)
			}
			if lossy {
				if err := e.sim.SetFaults(livechatsim.Faults{DropAfterApply: &livechatsim.Drop{Rate: 0.5, Actions: []string{"send_event"}}}); err != nil {
					t.Fatal(err)
				}
			}
			e.publish(handoff.TypeHandoffCancelled, conv(1), handoff.HandoffCancelled{Reason: "user said back to bot"})
			e.waitDrained(30 * time.Second)
			e.sim.ResetFaults()
			e.waitMode(conv(1), handoff.ModeBot, 10*time.Second)

			// What the agent's app shows: the chat as the Agent Chat API
			// returns it.
			lc := e.liveChat(nil)
			agent, err := lc.RefreshAgentToken(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			chat, err := lc.AgentGetChat(context.Background(), agent.AccessToken, rec.ChatID, "")
			if err != nil {
				t.Fatal(err)
			}
			if chat.Thread.Active {
				t.Errorf("the chat is still active after the cancel")
			}
			var notices []livechat.Event
			for _, ev := range chat.Thread.Events {
				if ev.Type == livechat.EventSystemMessage && ev.SystemMessageType == worker.CancelSystemMessageType {
					notices = append(notices, ev)
				}
			}
			if len(notices) != 1 {
				t.Fatalf("%d cancel notices in the agent's chat, want 1: %+v", len(notices), chat.Thread.Events)
			}
			if n := notices[0]; !strings.Contains(n.Text, "went back to the bot") || !strings.Contains(n.Text, "user said back to bot") {
				t.Errorf("the agent reads %q; want that the customer went back to the bot, and why", n.Text)
			}
			if last := chat.Thread.Events[len(chat.Thread.Events)-1]; last.ID != notices[0].ID {
				t.Errorf("the notice is not the thread's last event before it ended: last is %s %q", last.Type, last.Text)
			}
		})
	}
}
