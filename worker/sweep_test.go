package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/texts"
	"github.com/handoff-dev/handoff/worker"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// outEvents reads a conversation's reverse-path events, oldest first
// (HANDOFF_OUT keeps them: nothing consumes it in these tests).
func (e *env) outEvents(conv string) []handoff.Event {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, stream.OutStream)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []handoff.Event
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(stream.OutSubject(conv)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			e.t.Fatal(err)
		}
		ev, err := handoff.UnmarshalEvent(m.Data)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, ev)
		seq = m.Sequence + 1
	}
}

// gatewayDown registers license webhooks with the simulator to a receiver
// that refuses every delivery, as a stopped gateway does, and counts the
// attempts.
func (e *env) gatewayDown() *atomic.Int64 {
	e.t.Helper()
	var refused atomic.Int64
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refused.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}))
	e.t.Cleanup(down.Close)
	ctx := context.Background()
	lc := e.liveChat(nil)
	tok, err := lc.RefreshAgentToken(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, a := range []string{livechat.ActionIncomingEvent, livechat.ActionChatDeactivated} {
		if _, err := lc.RegisterWebhook(ctx, tok.AccessToken, livechat.Webhook{URL: down.URL, Action: a, SecretKey: "k",
			Filters: map[string]any{"author_type": "agent"}}); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := lc.EnableLicenseWebhooks(ctx, tok.AccessToken); err != nil {
		e.t.Fatal(err)
	}
	return &refused
}

func (e *env) waitMode(conv string, m handoff.Mode, limit time.Duration) handoff.Conversation {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		rec, err := e.st.Conversation(context.Background(), conv)
		if err != nil {
			e.t.Fatal(err)
		}
		if rec.Mode == m {
			return rec
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("conversation %q is %s after %v, want %s", conv, rec.Mode, limit, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSweepRecoversWhatWebhooksLost is the issue's acceptance 1: the
// gateway is down while the agent writes twice and LiveChat's webhook
// retries run out, and while another chat is closed. The sweep publishes
// both messages on HANDOFF_OUT once each, in LiveChat's order, with the
// IDs the webhook relay derives, and gives the closed chat's conversation
// back to the bot within one sweep interval. (The bound is generous for a
// noisy machine: the issue asks for "within one sweep interval".)
func TestSweepRecoversWhatWebhooksLost(t *testing.T) {
	e := newEnv(t)
	refused := e.gatewayDown()
	cfg := testConfig()
	cfg.SweepInterval = 2 * time.Second
	e.startWorker(cfg)
	talk, gone := conv(1), conv(2)
	for _, c := range []string{talk, gone} {
		e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent please"})
	}
	e.waitDrained(20 * time.Second)
	talkRec, goneRec := e.waitMode(talk, handoff.ModeQueued, 10*time.Second), e.waitMode(gone, handoff.ModeQueued, 10*time.Second)

	before := refused.Load()
	var ids []string
	for _, text := range []string{"Hi, I'm Tom", "Your order ships today"} {
		id, err := e.sim.AgentMessageID(talkRec.ChatID, text)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := e.sim.CloseChat(goneRec.ChatID); err != nil {
		t.Fatal(err)
	}
	// Every webhook is refused until LiveChat gives up: 3 deliveries of 4
	// attempts each.
	deadline := time.Now().Add(20 * time.Second)
	for refused.Load()-before < 12 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d refused deliveries", refused.Load()-before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	closedAt := time.Now()

	e.waitMode(gone, handoff.ModeClosed, 2*cfg.SweepInterval+5*time.Second)
	t.Logf("closed chat repaired %v after LiveChat gave up", time.Since(closedAt).Round(10*time.Millisecond))
	deadline = time.Now().Add(2*cfg.SweepInterval + 5*time.Second)
	for len(e.outEvents(talk)) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Another sweep goes by: nothing is published twice.
	time.Sleep(2 * cfg.SweepInterval)
	evs := e.outEvents(talk)
	if len(evs) != 2 {
		t.Fatalf("%d reverse events for the conversation, want the 2 agent messages once each: %+v", len(evs), evs)
	}
	for i, ev := range evs {
		var m handoff.AgentMessage
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			t.Fatal(err)
		}
		if ev.Type != handoff.TypeMessageAgent || ev.ID != handoff.AgentMessageID(talkRec.ChatID, ids[i]) || m.LiveChatEventID != ids[i] {
			t.Errorf("event %d = %s %s (%s), want message.agent of LiveChat event %s with the relay's ID", i, ev.Type, ev.ID, m.LiveChatEventID, ids[i])
		}
	}
	if rec := e.waitMode(talk, handoff.ModeAgent, 5*time.Second); rec.ChatID != talkRec.ChatID {
		t.Errorf("conversation %+v", rec)
	}
	closed := e.outEvents(gone)
	if len(closed) != 1 || closed[0].Type != handoff.TypeChatClosed || closed[0].ID != handoff.ChatClosedID(goneRec.ChatID, goneRec.ThreadID) {
		t.Errorf("closed conversation's reverse events = %+v, want one chat.closed with the relay's ID", closed)
	}
}

// TestSweepOneOwner: with three workers only one sweeps per interval.
func TestSweepOneOwner(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.SweepInterval = time.Second
	e.publish(handoff.TypeHandoffRequested, conv(1), handoff.HandoffRequested{Text: "agent"})
	for range 3 {
		e.startWorker(cfg)
	}
	e.waitDrained(20 * time.Second)
	e.waitMode(conv(1), handoff.ModeQueued, 10*time.Second)
	start := e.sim.Stats()["agent/list_chats"][200]
	time.Sleep(3500 * time.Millisecond)
	n := e.sim.Stats()["agent/list_chats"][200] - start
	// About one sweep a second for 3.5 s; three workers each sweeping
	// would make about ten.
	if n < 2 || n > 5 {
		t.Errorf("%d sweeps (list_chats calls) in 3.5 s with a 1 s interval and three workers, want 3 or 4", n)
	}
}

// TestSweepRespectsRetryAfter: a 429 with Retry-After is waited out, and
// the sweep still repairs what it must.
func TestSweepRespectsRetryAfter(t *testing.T) {
	e := newEnv(t)
	e.gatewayDown()
	cfg := testConfig()
	cfg.SweepInterval = 2 * time.Second
	e.startWorker(cfg)
	e.publish(handoff.TypeHandoffRequested, conv(1), handoff.HandoffRequested{Text: "agent"})
	e.waitDrained(20 * time.Second)
	rec := e.waitMode(conv(1), handoff.ModeQueued, 10*time.Second)
	if err := e.sim.SetFaults(livechatsim.Faults{Errors: []livechatsim.ErrorFault{{Action: "list_chats", Rate: 0.5, Type: "too_many_requests", RetryAfter: "1"}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.CloseChat(rec.ChatID); err != nil {
		t.Fatal(err)
	}
	e.waitMode(conv(1), handoff.ModeClosed, 20*time.Second)
	if e.sim.Stats()["agent/list_chats"][429] == 0 {
		t.Skip("no 429 was drawn; nothing to show")
	}
}

// TestSweepCostAt10000 measures one sweep over 10,000 live conversations
// against the simulator: LiveChat calls and duration (README, "The
// reconciliation sweep"). Set HANDOFF_SWEEP_SCALE=10000 to run it.
func TestSweepCostAt10000(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("HANDOFF_SWEEP_SCALE"))
	if n <= 0 {
		t.Skip("set HANDOFF_SWEEP_SCALE=10000 to measure")
	}
	e := newEnv(t)
	ctx := context.Background()
	lc := e.liveChat(nil)
	agent, err := lc.RefreshAgentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g := 0
	for i := range n {
		cust, err := lc.IssueCustomerToken(ctx, agent.AccessToken, "")
		if err != nil {
			t.Fatal(err)
		}
		res, err := lc.StartChat(ctx, cust.AccessToken, livechat.StartChatRequest{GroupID: &g, Continuous: true,
			Events: []livechat.Event{{Text: "agent please", CustomID: strconv.Itoa(i)}}})
		if err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			// A tenth of the chats have an agent answering.
			if err := e.sim.AgentMessage(res.ChatID, "hello"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.st.UpdateConversation(ctx, fmt.Sprintf("scale-%d", i), func(c *handoff.Conversation) error {
			c.Mode, c.ChatID, c.ThreadID, c.CustomerID = handoff.ModeAgent, res.ChatID, res.ThreadID, cust.EntityID
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	stats, err := worker.SweepOnce(ctx, testConfig(), e.js, lc, e.st)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first sweep (no cursors yet): %d conversations, calls %v, relayed %d, %v", stats.Conversations, stats.Calls, stats.Relayed, stats.Duration)
	for i := 0; i < n; i += 100 {
		// One new agent message in a hundredth of the chats.
		rec, err := e.st.Conversation(ctx, fmt.Sprintf("scale-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.sim.AgentMessage(rec.ChatID, "anything else?"); err != nil {
			t.Fatal(err)
		}
	}
	stats, err = worker.SweepOnce(ctx, testConfig(), e.js, lc, e.st)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("steady sweep: %d conversations, calls %v, relayed %d, %v", stats.Conversations, stats.Calls, stats.Relayed, stats.Duration)
	if want := n/100 + n/100; stats.Calls["list_chats"]+stats.Calls["get_chat"] > want+5 {
		t.Errorf("steady sweep made %v calls, want about %d (a list_chats per 100 chats, a get_chat per chat with news)", stats.Calls, want)
	}
}

// TestPickupTimeout is issue 10's acceptance 3: no agent joins; after
// --pickup-timeout the sweep acts once, as configured, and the
// conversation leaves pending/queued where the action says: "bot" closes
// the chat and gives the conversation back to the bot, "wait" tells the
// user and keeps the chat waiting, "message" closes the chat, leaves it
// with its transcript and the customer's contact in LiveChat's archive
// for an agent to follow up, tells the user so, and gives the
// conversation back to the bot.
func TestPickupTimeout(t *testing.T) {
	for _, action := range []string{worker.PickupBot, worker.PickupWait, worker.PickupMessage} {
		t.Run(action, func(t *testing.T) {
			e := newEnv(t)
			cfg := testConfig()
			cfg.SweepInterval = 500 * time.Millisecond
			cfg.PickupTimeout = time.Second
			cfg.PickupAction = action
			e.startWorker(cfg)
			e.publish(handoff.TypeHandoffRequested, conv(1), handoff.HandoffRequested{Text: "agent please",
				Customer: handoff.Customer{Name: "Ana Souza", Email: "ana@example.com"}})
			e.waitDrained(20 * time.Second)
			rec := e.waitMode(conv(1), handoff.ModeQueued, 10*time.Second)
			deadline := time.Now().Add(15 * time.Second)
			for len(e.outEvents(conv(1))) == 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(4 * cfg.SweepInterval) // more sweeps: it fires once
			evs := e.outEvents(conv(1))
			if len(evs) != 1 || evs[0].Type != handoff.TypeAgentsUnavailable {
				t.Fatalf("reverse events = %+v, want one agents.unavailable", evs)
			}
			var u handoff.AgentsUnavailable
			wantReason := handoff.ReasonPickupTimeout
			if action == worker.PickupMessage {
				wantReason = handoff.ReasonPickupMessageLeft
			}
			if err := json.Unmarshal(evs[0].Data, &u); err != nil || u.Reason != wantReason || u.Back != (action != worker.PickupWait) {
				t.Errorf("agents.unavailable = %+v, %v; want reason %s", u, err, wantReason)
			}
			// What the user reads (Google Chat, Dialogflow turns).
			told, _ := texts.Defaults().Render(evs[0], "en")
			chat := e.chatOf(conv(1))
			after, _ := e.st.Conversation(context.Background(), conv(1))
			switch action {
			case worker.PickupBot:
				if after.Mode != handoff.ModeClosed || chat.Active {
					t.Errorf("after the timeout: mode %s, chat active %v; want closed and the chat ended", after.Mode, chat.Active)
				}
			case worker.PickupWait:
				if after.Mode != handoff.ModeQueued || !chat.Active || after.ChatID != rec.ChatID {
					t.Errorf("after the timeout: mode %s, chat active %v; want still queued in the same chat", after.Mode, chat.Active)
				}
			case worker.PickupMessage:
				if after.Mode != handoff.ModeClosed || chat.Active {
					t.Errorf("after the timeout: mode %s, chat active %v; want closed and the chat ended", after.Mode, chat.Active)
				}
				if !strings.Contains(told, "follow up") {
					t.Errorf("the user is told %q, want that an agent will follow up", told)
				}
				// An agent opening the archived chat finds who wrote and
				// what they wrote.
				lc := e.liveChat(nil)
				agent, err := lc.RefreshAgentToken(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				archived, err := lc.AgentGetChat(context.Background(), agent.AccessToken, rec.ChatID, "")
				if err != nil {
					t.Fatal(err)
				}
				var said []string
				for _, ev := range archived.Thread.Events {
					said = append(said, ev.Text)
				}
				if archived.Thread.Active || !slices.Contains(said, "agent please") {
					t.Errorf("archived chat: thread active %v, events %q; want the inactive thread with the user's words", archived.Thread.Active, said)
				}
				if chat.Customer.Name != "Ana Souza" || chat.Customer.Email != "ana@example.com" {
					t.Errorf("archived chat's customer %+v, want the name and email to follow up with", chat.Customer)
				}
			}
		})
	}
}

// TestSweepDeliversWhatWebhooksLostToTheUser is issue 10's acceptance 1
// as the user sees it, on the real pieces: worker (with its sweep), the
// outbound consumer, a gateway and the simulator. The gateway is stopped
// while the agent writes twice in one chat and closes another, until
// LiveChat's webhook retries run out; after the gateway is started again,
// the bot's callback endpoint and the conversation's event stream get
// both replies once each, in order, and the closed chat's conversation is
// back with the bot within one sweep interval of LiveChat giving up. (The
// bounds are generous for a noisy machine: the issue asks for "within one
// sweep interval".)
func TestSweepDeliversWhatWebhooksLostToTheUser(t *testing.T) {
	e := newEnv(t)
	rcv := testenv.StartCallbackReceiver(t, testenv.NewSecret(t))
	front := e.startGateway()
	e.startOutbound(rcv)
	cfg := testConfig()
	cfg.SweepInterval = 2 * time.Second
	e.startWorker(cfg)
	talk, gone := "web-talk-1", "web-gone-1"
	for _, c := range []string{talk, gone} {
		e.publish(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent please",
			ReplyTo: handoff.ReplyTo{Channel: handoff.ChannelREST, Address: c}})
	}
	e.waitDrained(20 * time.Second)
	talkRec, goneRec := e.waitMode(talk, handoff.ModeQueued, 10*time.Second), e.waitMode(gone, handoff.ModeQueued, 10*time.Second)

	front.Stop()
	texts := []string{"Hi, I'm Tom", "Your order ships today"}
	for _, text := range texts {
		if _, err := e.sim.AgentMessageID(talkRec.ChatID, text); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.sim.CloseChat(goneRec.ChatID); err != nil {
		t.Fatal(err)
	}
	// Every webhook is refused until LiveChat gives up: 3 deliveries of 4
	// attempts each.
	deadline := time.Now().Add(20 * time.Second)
	for front.refused.Load() < 12 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d refused webhook deliveries", front.refused.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	gaveUp := time.Now()
	front.Start()

	e.waitMode(gone, handoff.ModeClosed, cfg.SweepInterval+5*time.Second)
	t.Logf("closed chat back with the bot %v after LiveChat gave up (sweep interval %v)", time.Since(gaveUp).Round(10*time.Millisecond), cfg.SweepInterval)

	forConv := func(conv string) (out []testenv.ReceivedCallback) {
		for _, c := range rcv.Received() {
			if c.Event.Subject == conv {
				out = append(out, c)
			}
		}
		return out
	}
	deadline = time.Now().Add(2*cfg.SweepInterval + 10*time.Second)
	for (len(forConv(talk)) < 2 || len(forConv(gone)) < 1) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Another sweep goes by: nothing reaches the user twice.
	time.Sleep(2 * cfg.SweepInterval)
	var got []string
	for _, c := range forConv(talk) {
		var m handoff.AgentMessage
		if c.Event.Type != handoff.TypeMessageAgent || json.Unmarshal(c.Event.Data, &m) != nil {
			t.Fatalf("callback %s %s: %s", c.ID, c.Event.Type, c.Body)
		}
		got = append(got, m.Text)
	}
	if fmt.Sprint(got) != fmt.Sprint(texts) {
		t.Errorf("callbacks for the conversation carried %q, want %q: both replies, once each, in order", got, texts)
	}
	if cs := forConv(gone); len(cs) != 1 || cs[0].Event.Type != handoff.TypeChatClosed {
		t.Errorf("callbacks for the closed conversation = %+v, want one chat.closed", cs)
	}
	if bad := rcv.BadSignatures(); len(bad) > 0 {
		t.Errorf("signatures that do not verify: %v", bad)
	}

	// A web front end following the conversation after the restart reads
	// the same from the start of its feed, and nothing more.
	sse := front.Events(t, talk)
	got = nil
	for range texts {
		se := sse.Next(10 * time.Second)
		ev, err := handoff.UnmarshalEvent([]byte(se.Data))
		var m handoff.AgentMessage
		if err != nil || ev.Type != handoff.TypeMessageAgent || json.Unmarshal(ev.Data, &m) != nil {
			t.Fatalf("event stream sent %+v: %v", se, err)
		}
		got = append(got, m.Text)
	}
	if fmt.Sprint(got) != fmt.Sprint(texts) {
		t.Errorf("event stream carried %q, want %q", got, texts)
	}
	if se, ok := sse.TryNext(time.Second); ok {
		t.Errorf("event stream sent a third event: %+v", se)
	}
	closed := front.Events(t, gone).Next(10 * time.Second)
	if closed.Type != string(handoff.TypeChatClosed) {
		t.Errorf("closed conversation's event stream sent %+v, want chat.closed", closed)
	}
}

// A misspelt --pickup-action is refused rather than acting like another.
func TestPickupActionMisspelt(t *testing.T) {
	cfg := testConfig()
	cfg.PickupAction = "mesage"
	if _, err := worker.New(cfg, nil, nil, nil, prometheus.NewRegistry(), quietLog()); err == nil || !strings.Contains(err.Error(), "pickup action") {
		t.Errorf("New with pickup action %q: %v, want an error naming it", cfg.PickupAction, err)
	}
}
