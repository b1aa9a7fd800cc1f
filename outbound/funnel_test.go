package outbound_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/ordered"
	"github.com/handoff-dev/handoff/outbound"
	"github.com/handoff-dev/handoff/store"
	"github.com/prometheus/client_golang/prometheus"
)

// racingStore is the real store with another process's work slipped in
// once, right after this process read a conversation record: the race the
// record's Version fences.
type racingStore struct {
	store.Store
	once    sync.Once
	between func()
}

func (s *racingStore) Conversation(ctx context.Context, id string) (handoff.Conversation, error) {
	c, err := s.Store.Conversation(ctx, id)
	s.once.Do(s.between)
	return c, err
}

// process is one outbound handler with its own metrics, as in one process.
type process struct {
	h   *outbound.Handler
	reg *prometheus.Registry
}

func (e *env) process(st store.Store) process {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	m, err := outbound.NewMetrics(reg)
	if err != nil {
		e.t.Fatal(err)
	}
	cb, err := outbound.NewCallback(outbound.CallbackConfig{URL: e.rcv.URL(), Secrets: e.rcv.Secret(), Timeout: 2 * time.Second}, m)
	if err != nil {
		e.t.Fatal(err)
	}
	return process{outbound.NewHandler(testConfig(), e.js, st, outbound.Routes{handoff.ChannelREST: cb}, m, quietLog()), reg}
}

// handedOff stores conv as a handoff whose chat started a minute ago and
// whose agent has not written yet.
func (e *env) handedOff(conv string) {
	e.t.Helper()
	requested := time.Now().Add(-time.Minute).UnixMilli()
	if _, err := e.st.UpdateConversation(context.Background(), conv, func(c *handoff.Conversation) error {
		c.Mode, c.ChatID, c.ThreadID = handoff.ModeAgent, "CH-"+conv, "T1"
		c.ReplyTo = handoff.ReplyTo{Channel: handoff.ChannelREST, Address: "user-" + conv}
		c.Funnel = &handoff.Funnel{Handoff: "req-" + conv, Channel: "rest", Group: "default", Requested: requested, ChatStarted: requested + 500}
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

// reply is an agent's message in conv's chat as outbound receives it.
func reply(t *testing.T, conv, id string) *ordered.Delivery {
	t.Helper()
	ev, err := handoff.NewEvent(handoff.TypeMessageAgent, conv, handoff.AgentMessage{Text: "Hi, I'm Tom", AgentName: "Tom", ChatID: "CH-" + conv,
		ReplyTo: handoff.ReplyTo{Channel: handoff.ChannelREST, Address: "user-" + conv}})
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Source = id, "livechat"
	p, err := ev.Payload()
	if err != nil {
		t.Fatal(err)
	}
	return &ordered.Delivery{Event: ev, Payload: p, Key: conv, Delivered: 1, Attempt: 1, Stored: time.Now()}
}

// stageCount sums handoff_funnel_stage_total for one stage over processes.
func stageCount(t *testing.T, stage handoff.FunnelStage, ps ...process) float64 {
	t.Helper()
	var n float64
	for _, p := range ps {
		n += sample(t, p.reg, "handoff_funnel_stage_total", "rest", "default", string(stage))
	}
	return n
}

// The handoff's first agent reply counts agent_joined and first_agent_reply
// once, however it is handled: again after its delivery failed, by two
// processes at the same moment, or followed by later replies, which leave
// the record unwritten.
func TestFunnelFirstReplyCountedOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name string
		// run handles conv's replies and returns the processes that did.
		run func(t *testing.T, conv string) []process
	}{
		{"handled again after its delivery failed", func(t *testing.T, conv string) []process {
			p := e.process(e.st)
			d := reply(t, conv, "first-"+conv)
			e.rcv.Down(http.StatusServiceUnavailable)
			err := p.h.Handle(ctx, d)
			e.rcv.Up()
			if err == nil {
				t.Fatal("delivery to a receiver that is down succeeded")
			}
			if err := p.h.Handle(ctx, d); err != nil {
				t.Fatal(err)
			}
			return []process{p}
		}},
		{"a second process handles it between this one's read and write", func(t *testing.T, conv string) []process {
			d := reply(t, conv, "first-"+conv)
			other := e.process(e.st)
			rs := &racingStore{Store: e.st}
			rs.between = func() {
				if err := other.h.Handle(ctx, d); err != nil {
					t.Error(err)
				}
			}
			p := e.process(rs)
			if err := p.h.Handle(ctx, d); err != nil {
				t.Fatal(err)
			}
			return []process{p, other}
		}},
		{"later replies", func(t *testing.T, conv string) []process {
			p := e.process(e.st)
			if err := p.h.Handle(ctx, reply(t, conv, "first-"+conv)); err != nil {
				t.Fatal(err)
			}
			before, err := e.st.Conversation(ctx, conv)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"second-" + conv, "third-" + conv} {
				if err := p.h.Handle(ctx, reply(t, conv, id)); err != nil {
					t.Fatal(err)
				}
			}
			after, err := e.st.Conversation(ctx, conv)
			if err != nil {
				t.Fatal(err)
			}
			if after.Version != before.Version {
				t.Errorf("later replies wrote the record: version %d, then %d", before.Version, after.Version)
			}
			return []process{p}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conv := "funnel-once-" + string(rune('a'+i))
			e.handedOff(conv)
			ps := c.run(t, conv)
			for _, s := range []handoff.FunnelStage{handoff.StageAgentJoined, handoff.StageFirstAgentReply} {
				if n := stageCount(t, s, ps...); n != 1 {
					t.Errorf("%s counted %v times, want once", s, n)
				}
			}
			rec, err := e.st.Conversation(ctx, conv)
			if err != nil {
				t.Fatal(err)
			}
			if !rec.Funnel.Reached(handoff.StageFirstAgentReply) {
				t.Errorf("record's funnel %+v has no first reply", rec.Funnel)
			}
			if got := idsOf(e.rcv.Unique(), conv); len(got) == 0 || got[0] != "first-"+conv {
				t.Errorf("user received %v, want the first reply first", got)
			}
		})
	}
}
