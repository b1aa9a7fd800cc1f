package ordered

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestDueRecalls: when the process applies an event of a conversation over
// the limit, it calls back the oldest of its hand-backs that now fall
// within what it may hold, and only those it may still cut safely: with
// their delay far from running out, and not right after a leader election.
func TestDueRecalls(t *testing.T) {
	const subject = "handoff.in.hot"
	now := time.Now()
	far := now.Add(10 * time.Second)
	tests := []struct {
		name     string
		held     int // queued behind the acked event
		transit  int // recalled, not delivered yet
		waiting  map[uint64]time.Time
		election bool
		want     []uint64
	}{
		{"the window refilled with the oldest", 3,
			0, map[uint64]time.Time{105: far, 106: far, 107: far, 108: far, 109: far, 110: far}, false, []uint64{105, 106, 107, 108}},
		{"recalls on their way count as held", 3,
			4, map[uint64]time.Time{105: far, 106: far, 107: far}, false, []uint64{105}},
		{"not past the limit behind the next head", 0,
			0, map[uint64]time.Time{108: far, 200: far}, false, []uint64{108}},
		{"not when the delay is about to run out", 0,
			0, map[uint64]time.Time{102: now.Add(recallMargin / 2), 103: far}, false, []uint64{103}},
		{"not right after a leader election", 0,
			0, map[uint64]time.Time{102: far}, true, nil},
		{"a full window recalls nothing", 8,
			0, map[uint64]time.Time{110: far}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Consumer{cfg: Config{MaxHeldPerConversation: 8}, recalls: map[string]*recallList{}, paces: map[string]*pace{}}
			if tt.election {
				c.electionUntil = now.Add(electionBeats)
			}
			l := &recallList{waiting: map[uint64]recallable{}, transit: map[uint64]recallable{}}
			for s, until := range tt.waiting {
				l.waiting[s] = recallable{reply: strconv.FormatUint(s, 10), until: until}
			}
			for i := range tt.transit {
				l.transit[uint64(1000+i)] = recallable{recalled: now}
			}
			c.recalls[subject] = l
			q := &convQueue{}
			for i := range tt.held {
				q.items = append(q.items, &item{seq: uint64(101 + i)})
			}
			var got []uint64
			for _, r := range c.dueRecalls(subject, q, 100) {
				s, _ := strconv.ParseUint(r.reply, 10, 64)
				got = append(got, s)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("recalled %v, want %v", got, tt.want)
			}
			for _, s := range got {
				if _, again := l.waiting[s]; again {
					t.Errorf("%d recalled and still recallable", s)
				}
			}
		})
	}
}

// TestHandBackPlan: with recall, a hand-back's delay errs long and the
// estimate becomes the time a process that is not applying the
// conversation recalls it; past the longest delay, or too short to be
// recalled, the delay is the estimate.
func TestHandBackPlan(t *testing.T) {
	c := &Consumer{cfg: Config{AckWait: 30 * time.Second}}
	tests := []struct {
		need, delay, due time.Duration
	}{
		{500 * time.Millisecond, 500 * time.Millisecond, 0},
		{4 * time.Second, 4*time.Second + time.Second + recallMargin, 4 * time.Second},
		{15 * time.Second, 15*time.Second + 3750*time.Millisecond + recallMargin, 15 * time.Second},
		{18 * time.Second, 18 * time.Second, 0},
		{20 * time.Second, 20 * time.Second, 0},
	}
	for _, tt := range tests {
		delay, due := c.handBackPlan(tt.need)
		if delay != tt.delay || due != tt.due {
			t.Errorf("handBackPlan(%v) = %v, %v; want %v, %v", tt.need, delay, due, tt.delay, tt.due)
		}
		if delay > c.maxFairDelay() {
			t.Errorf("handBackPlan(%v) waits %v, past the longest delay %v", tt.need, delay, c.maxFairDelay())
		}
	}
}

// TestDueByTime: a process recalls a hand-back at its estimate only for a
// conversation it is not applying itself (another process has its head),
// and not when too little of the delay is left for the NAK to be sure to
// arrive first.
func TestDueByTime(t *testing.T) {
	now := time.Now()
	c := &Consumer{cfg: Config{MaxHeldPerConversation: 8}, recalls: map[string]*recallList{}, paces: map[string]*pace{}, applyAll: 50 * time.Millisecond}
	list := func(entries map[uint64]recallable) *recallList {
		return &recallList{waiting: entries, transit: map[uint64]recallable{}}
	}
	c.recalls["elsewhere"] = list(map[uint64]recallable{
		1: {reply: "due", until: now.Add(3 * time.Second), due: now.Add(-time.Millisecond)},
		2: {reply: "not yet", until: now.Add(3 * time.Second), due: now.Add(time.Second)},
		3: {reply: "too late to cut", until: now.Add(recallMargin / 2), due: now.Add(-time.Second)},
		4: {reply: "no estimate", until: now.Add(3 * time.Second)},
	})
	c.recalls["here"] = list(map[uint64]recallable{
		5: {reply: "applied here", until: now.Add(3 * time.Second), due: now.Add(-time.Millisecond)},
	})
	c.paces["here"] = &pace{apply: 50 * time.Millisecond, acked: now.Add(-10 * time.Millisecond)}
	var got []string
	for _, r := range c.dueByTime(now) {
		got = append(got, r.reply)
	}
	if !slices.Equal(got, []string{"due"}) {
		t.Errorf("recalled %q, want [due]", got)
	}
	if _, ok := c.recalls["elsewhere"].waiting[2]; !ok {
		t.Error("a hand-back not due yet was dropped")
	}
	if _, ok := c.recalls["here"].waiting[5]; !ok {
		t.Error("a hand-back of a conversation applied here was dropped")
	}
	c.electionUntil = now.Add(time.Second)
	c.recalls["elsewhere"].waiting[6] = recallable{reply: "after an election", until: now.Add(3 * time.Second), due: now}
	if got := c.dueByTime(now); len(got) != 0 {
		t.Errorf("recalled %+v within the election window", got)
	}
}

// TestRecallChecksItsMarginWhenSent: a recall is chosen while its
// hand-back's delay has recallMargin left, but sent a moment later, after
// the lock is released; a process starved of CPU in between must not send
// one whose delay may have run out, since the NAK would reach whichever
// delivery of the event is pending (another process's). Only the recall
// that still has its margin at the send goes out.
func TestRecallChecksItsMarginWhenSent(t *testing.T) {
	c, js := handBackFixture(t, "conv-recall-margin")
	sub, err := js.Conn().SubscribeSync("recall.test.>")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c.recall([]recallable{
		{reply: "recall.test.late", until: now.Add(recallMargin / 2)},
		{reply: "recall.test.in-time", until: now.Add(5 * recallMargin)},
	}, c.reconnects())
	if err := js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		m, err := sub.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		got = append(got, m.Subject)
	}
	if !slices.Equal(got, []string{"recall.test.in-time"}) {
		t.Errorf("recalls sent: %q, want only the one with its margin left", got)
	}
}
