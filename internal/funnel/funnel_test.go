package funnel_test

import (
	"testing"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/funnel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLabelsAreBounded(t *testing.T) {
	n := func(i int) *int { return &i }
	groups := []struct {
		in   *int
		want string
	}{
		{nil, "default"}, {n(0), "0"}, {n(7), "7"}, {n(funnel.MaxGroupLabel - 1), "99"},
		{n(funnel.MaxGroupLabel), "other"}, {n(1 << 30), "other"}, {n(-1), "other"},
	}
	for _, g := range groups {
		if got := funnel.GroupLabel(g.in); got != g.want {
			t.Errorf("GroupLabel(%v) = %q, want %q", g.in, got, g.want)
		}
	}
	channels := map[handoff.Channel]string{
		handoff.ChannelREST: "rest", handoff.ChannelDialogflowES: "dialogflow-es", handoff.ChannelDialogflowCX: "dialogflow-cx",
		handoff.ChannelGoogleChat: "google-chat", "": "unknown", "carrier-pigeon": "unknown",
	}
	for in, want := range channels {
		if got := funnel.ChannelLabel(in); got != want {
			t.Errorf("ChannelLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// The worker and the outbound consumer of one process register on one
// registry: the second gets the first's metrics, and counts land in one
// place.
func TestNewSharesOneSetPerRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := funnel.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := funnel.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := &handoff.Funnel{Handoff: "h", Channel: "rest", Group: "default"}
	a.Reached(f, handoff.StageRequested, 0)
	b.Reached(f, handoff.StageRequested, 0)
	b.Reached(f, handoff.StageQueued, 3e9)
	b.Abandoned(f, handoff.AbandonUserCancelled)
	if n, err := testutil.GatherAndCount(reg, "handoff_funnel_stage_total"); err != nil || n != 2 {
		t.Errorf("stage series = %d, %v; want 2", n, err)
	}
	if n, err := testutil.GatherAndCount(reg, "handoff_funnel_stage_duration_seconds"); err != nil || n != 1 {
		t.Errorf("duration series = %d, %v; want 1 (none for requested)", n, err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
