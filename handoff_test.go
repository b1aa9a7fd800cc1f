package handoff

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

func ids(a AppliedEvents) []string {
	out := make([]string, len(a))
	for i, e := range a {
		out[i] = e.ID
	}
	return out
}

func TestAppliedEventsAddPrunesByWindowAndCap(t *testing.T) {
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	const window = 24 * time.Hour
	many := func(n int) AppliedEvents {
		var a AppliedEvents
		for i := range n {
			a = append(a, AppliedEvent{ID: fmt.Sprintf("e%d", i), At: t0.Unix()})
		}
		return a
	}
	tests := []struct {
		name   string
		before AppliedEvents
		add    string
		at     time.Time
		window time.Duration
		want   []string
	}{
		{"first", nil, "a", t0, window, []string{"a"}},
		{"appends newest last", AppliedEvents{{"a", t0.Unix()}}, "b", t0.Add(time.Minute), window, []string{"a", "b"}},
		{"entry exactly at the window's edge is kept", AppliedEvents{{"a", t0.Unix()}}, "b", t0.Add(window), window, []string{"a", "b"}},
		{"entry older than the window is forgotten", AppliedEvents{{"a", t0.Unix()}, {"b", t0.Add(time.Hour).Unix()}}, "c", t0.Add(window + time.Second), window, []string{"b", "c"}},
		{"the same ID again moves to the end, once", AppliedEvents{{"a", t0.Unix()}, {"b", t0.Unix()}}, "a", t0.Add(time.Minute), window, []string{"b", "a"}},
		{"cap drops the oldest", many(MaxAppliedEvents), "new", t0.Add(time.Minute), window, append(ids(many(MaxAppliedEvents))[1:], "new")},
		{"no window: the cap alone", AppliedEvents{{"a", t0.Add(-1000 * time.Hour).Unix()}}, "b", t0, 0, []string{"a", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := slices.Clone(tc.before)
			a.Add(tc.add, tc.at, tc.window)
			if got := ids(a); !slices.Equal(got, tc.want) {
				t.Fatalf("after Add(%q): %v; want %v", tc.add, got, tc.want)
			}
			if len(a) > MaxAppliedEvents {
				t.Fatalf("%d entries; the cap is %d", len(a), MaxAppliedEvents)
			}
			if last := a[len(a)-1]; last.At != tc.at.Unix() {
				t.Errorf("added entry At = %d; want %d", last.At, tc.at.Unix())
			}
			if !a.Has(tc.add) {
				t.Errorf("Has(%q) = false right after Add", tc.add)
			}
			for _, e := range tc.before {
				if !slices.Contains(tc.want, e.ID) && a.Has(e.ID) {
					t.Errorf("Has(%q) = true after it was pruned", e.ID)
				}
			}
		})
	}
}

func TestAppliedEventsAddDoesNotTouchTheCallersSlice(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	orig := AppliedEvents{{"a", t0.Unix()}, {"b", t0.Unix()}}
	a := orig
	a.Add("c", t0.Add(48*time.Hour), time.Hour)
	if !slices.Equal(ids(orig), []string{"a", "b"}) {
		t.Fatalf("the original slice changed: %v", ids(orig))
	}
}

// The record grows by the applied list; this pins how much, so a change of
// encoding that would make every conversation write heavier shows up.
func TestAppliedEventsEncodingStaysCompact(t *testing.T) {
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	var a AppliedEvents
	for i := range MaxAppliedEvents + 20 {
		a.Add(fmt.Sprintf("0193a5f2-7c1e-7b7a-9d1e-%012d", i), t0.Add(time.Duration(i)*time.Second), 24*time.Hour)
	}
	raw, err := json.Marshal(Conversation{ID: "c", Mode: ModeAgent, Applied: a})
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 7000 {
		t.Errorf("a record at the cap of %d UUIDv7 IDs encodes to %d bytes; want at most 7000", MaxAppliedEvents, len(raw))
	}
	var back Conversation
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Applied, a) {
		t.Errorf("round trip changed the applied list")
	}
}
