package testenv

import (
	"fmt"
	"slices"
	"testing"
)

func TestLogRingKeepsNewestLinesAndFilters(t *testing.T) {
	r := NewLogRing(3)
	r.tee = nil
	for i := range 5 {
		fmt.Fprintf(r, "line %d subject=handoff.in.%d\n", i, i%2)
	}
	tests := []struct {
		name    string
		limit   int
		substrs []string
		want    []string
	}{
		{"all kept, oldest first", 10, nil, []string{"line 2 subject=handoff.in.0", "line 3 subject=handoff.in.1", "line 4 subject=handoff.in.0"}},
		{"limit keeps the newest", 1, nil, []string{"line 4 subject=handoff.in.0"}},
		{"filter", 10, []string{"handoff.in.1"}, []string{"line 3 subject=handoff.in.1"}},
		{"empty needle matches nothing", 10, []string{""}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Lines(tt.limit, tt.substrs...); !slices.Equal(got, tt.want) {
				t.Errorf("Lines(%d, %q) = %q, want %q", tt.limit, tt.substrs, got, tt.want)
			}
		})
	}
	var nilRing *LogRing
	if got := nilRing.Lines(10); got != nil {
		t.Errorf("nil ring has lines %q", got)
	}
}
