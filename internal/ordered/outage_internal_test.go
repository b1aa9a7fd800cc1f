package ordered

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestOutageLog checks a failover's hand-backs make one warning per
// dependency, and the end of the outage one line with the count.
func TestOutageLog(t *testing.T) {
	var buf bytes.Buffer
	o := newOutageLog(slog.New(slog.NewTextHandler(&buf, nil)))
	down := errors.New("dial tcp 127.0.0.1:7000: connect: connection refused")
	for range 300 {
		o.report("store_unavailable", down)
	}
	o.report("livechat_circuit_open", errors.New("circuit open"))
	// Events on the masters still up apply during the outage: that does
	// not end it.
	o.over()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "dependency=store") || !strings.Contains(lines[1], "dependency=livechat") {
		t.Fatalf("log after 301 hand-backs:\n%s\nwant one warning per dependency", buf.String())
	}

	buf.Reset()
	for _, ot := range o.by {
		ot.last = ot.last.Add(-outageQuiet)
	}
	o.over()
	o.over()
	if got := buf.String(); strings.Count(got, "outage over") != 2 || !strings.Contains(got, "dependency=store handed_back=300") {
		t.Fatalf("log at the end of the outage:\n%s\nwant one line per dependency with the count", got)
	}
	if o.open.Load() != 0 || len(o.by) != 0 {
		t.Fatalf("outages still open after they ended: %d %v", o.open.Load(), o.by)
	}
}
