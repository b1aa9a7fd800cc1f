package handoff_test

import (
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
)

// A handoff reaches each stage once, ends once, and reaches nothing after
// its end: what lets every process count a stage only when its write
// marked it.
func TestFunnelStagesOnceAndEndOnce(t *testing.T) {
	t0 := time.UnixMilli(1_000_000)
	tests := []struct {
		name         string
		steps        func(f *handoff.Funnel)
		endReason    string
		wantStage    handoff.FunnelStage
		wantReason   string
		wantDuration time.Duration
	}{
		{"cancel while queued is abandonment", func(f *handoff.Funnel) {
			f.Reach(handoff.StageChatStarted, t0.Add(time.Second))
			f.Reach(handoff.StageQueued, t0.Add(2*time.Second))
		}, handoff.AbandonUserCancelled, "", handoff.AbandonUserCancelled, 0},
		{"an agent joined but never wrote: still abandonment", func(f *handoff.Funnel) {
			f.Reach(handoff.StageAgentJoined, t0.Add(time.Second))
		}, handoff.AbandonClosedWithoutReply, "", handoff.AbandonClosedWithoutReply, 0},
		{"end after a reply is the closed stage", func(f *handoff.Funnel) {
			f.Reach(handoff.StageFirstAgentReply, t0.Add(time.Minute))
		}, handoff.AbandonUserCancelled, handoff.StageClosed, "", 5 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &handoff.Funnel{Handoff: "h1", Requested: t0.UnixMilli()}
			tc.steps(f)
			stage, d, reason := f.End(t0.Add(5*time.Minute), tc.endReason)
			if stage != tc.wantStage || reason != tc.wantReason || d != tc.wantDuration {
				t.Fatalf("End = %q, %v, %q; want %q, %v, %q", stage, d, reason, tc.wantStage, tc.wantDuration, tc.wantReason)
			}
			if !f.Ended() {
				t.Fatal("not ended after End")
			}
			if s, _, r := f.End(t0.Add(6*time.Minute), handoff.AbandonNoAgents); s != "" || r != "" {
				t.Errorf("second End = %q, %q; want nothing", s, r)
			}
			for _, s := range handoff.FunnelStages {
				if _, ok := f.Reach(s, t0.Add(7*time.Minute)); ok {
					t.Errorf("reached %s after the end", s)
				}
			}
		})
	}
}

func TestFunnelReach(t *testing.T) {
	t0 := time.UnixMilli(5_000_000)
	f := &handoff.Funnel{Handoff: "h1", Requested: t0.UnixMilli()}
	if d, ok := f.Reach(handoff.StageQueued, t0.Add(1500*time.Millisecond)); !ok || d != 1500*time.Millisecond {
		t.Fatalf("first Reach = %v, %v; want 1.5s, true", d, ok)
	}
	if _, ok := f.Reach(handoff.StageQueued, t0.Add(time.Hour)); ok {
		t.Error("a stage was reached twice")
	}
	// A clock behind the requester's never makes a negative duration.
	if d, ok := f.Reach(handoff.StageAgentJoined, t0.Add(-time.Minute)); !ok || d != 0 {
		t.Errorf("Reach before the request = %v, %v; want 0, true", d, ok)
	}
	var none *handoff.Funnel
	if _, ok := none.Reach(handoff.StageQueued, t0); ok || none.Reached(handoff.StageQueued) || none.Ended() {
		t.Error("a missing funnel reached something")
	}
	if _, ok := (&handoff.Funnel{}).Reach(handoff.StageQueued, t0); ok {
		t.Error("a funnel with no handoff reached something")
	}
}
