package ordered

import (
	"testing"
	"time"
)

// TestFairDelay: an event handed back for its conversation's backlog comes
// back about when the events before it, less what a process holds, are
// applied: never sooner than one apply time, never later than the bound
// below the ack wait.
func TestFairDelay(t *testing.T) {
	c := &Consumer{cfg: Config{MaxHeldPerConversation: 8, AckWait: 30 * time.Second}}
	apply := 50 * time.Millisecond
	tests := []struct {
		name string
		rank int
		want time.Duration
	}{
		{"just past the limit: one apply time", 8, 2 * apply},
		{"right at the limit", 7, apply},
		{"inside the limit still waits one apply time", 2, apply},
		{"a hundred back", 100, 94 * apply},
		{"far back: bounded below the ack wait", 100_000, 20 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.fairDelay(tt.rank, apply); got != tt.want {
				t.Errorf("fairDelay(%d, %v) = %v, want %v", tt.rank, apply, got, tt.want)
			}
		})
	}
	if got := c.fairDelay(100, 0); got < minFairDelay {
		t.Errorf("with no apply time known, a hand-back waits %v, less than %v", got, minFairDelay)
	}
}

// TestRank: ranks come from the distance to the head scaled by the
// subject's share of the stream, so a conversation interleaved with
// others is not sent back as far as its sequence numbers suggest.
func TestRank(t *testing.T) {
	tests := []struct {
		name    string
		seq     uint64
		head    uint64
		density float64
		want    int
	}{
		{"the head itself", 10, 10, 1, 0},
		{"older than the head (applied meanwhile)", 5, 10, 1, 0},
		{"a burst of one conversation", 110, 10, 1, 100},
		{"one event in four of the stream", 110, 10, 0.25, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rank(tt.seq, tt.head, tt.density); got != tt.want {
				t.Errorf("rank(%d, %d, %v) = %d, want %d", tt.seq, tt.head, tt.density, got, tt.want)
			}
		})
	}
}

// TestApplyEstimateErrsShort: one slow apply (a handoff opening a chat)
// does not make the estimate jump, so the next hand-backs do not come back
// late and stall the conversation.
func TestApplyEstimateErrsShort(t *testing.T) {
	c := &Consumer{paces: map[string]*pace{}, applyAll: 50 * time.Millisecond}
	c.observeApply(5 * time.Second)
	if got := c.applyTime(nil); got > 60*time.Millisecond {
		t.Errorf("one 5 s apply moved the estimate from 50 ms to %v", got)
	}
	for range 50 {
		c.observeApply(200 * time.Millisecond)
	}
	if got := c.applyTime(nil); got < 190*time.Millisecond || got > 200*time.Millisecond {
		t.Errorf("after 50 applies of 200 ms the estimate is %v", got)
	}
}

func TestMarksBucket(t *testing.T) {
	for durable, want := range map[string]string{
		"handoff-worker":   "handoff_untouched_handoff-worker",
		"handoff-outbound": "handoff_untouched_handoff-outbound",
		"a.b c":            "handoff_untouched_a_b_c",
	} {
		if got := MarksBucket(durable); got != want {
			t.Errorf("MarksBucket(%q) = %q, want %q", durable, got, want)
		}
	}
}
