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
			l := &recallList{waiting: map[uint64]recallable{}, transit: map[uint64]time.Time{}}
			for s, until := range tt.waiting {
				l.waiting[s] = recallable{reply: strconv.FormatUint(s, 10), until: until}
			}
			for i := range tt.transit {
				l.transit[uint64(1000+i)] = now
			}
			c.recalls[subject] = l
			q := &convQueue{}
			for i := range tt.held {
				q.items = append(q.items, &item{seq: uint64(101 + i)})
			}
			var got []uint64
			for _, r := range c.dueRecalls(subject, q, 100) {
				s, _ := strconv.ParseUint(r, 10, 64)
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
