package testenv

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
)

// LogRing keeps the newest lines a test's components logged, so a test
// that fails can print what the processes said about the thing that went
// wrong, while a passing test prints nothing and holds bounded memory.
type LogRing struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
	// tee, when set (HANDOFF_TEST_LOG), also gets every line as it comes.
	tee io.Writer
}

// NewLogRing keeps the newest size lines. With HANDOFF_TEST_LOG set it
// also writes every line to stderr.
func NewLogRing(size int) *LogRing {
	r := &LogRing{lines: make([]string, max(size, 1))}
	if os.Getenv("HANDOFF_TEST_LOG") != "" {
		r.tee = os.Stderr
	}
	return r
}

// Logger returns a text logger at debug level writing to the ring; name
// is added to every line (e.g. "worker=1"), so lines of several processes
// can be told apart. A nil ring's logger discards.
func (r *LogRing) Logger(name string) *slog.Logger {
	if r == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(r, &slog.HandlerOptions{Level: slog.LevelDebug})).With("proc", name)
}

// Write stores each complete line of p; slog writes one record per call.
func (r *LogRing) Write(p []byte) (int, error) {
	if r.tee != nil {
		_, _ = r.tee.Write(p)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for line := range bytes.Lines(p) {
		r.lines[r.next] = strings.TrimRight(string(line), "\n")
		r.next++
		if r.next == len(r.lines) {
			r.next, r.full = 0, true
		}
	}
	return len(p), nil
}

// Lines returns the kept lines, oldest first, that contain any of substrs
// (all of them when substrs is empty), at most limit of the newest. A nil
// ring has none.
func (r *LogRing) Lines(limit int, substrs ...string) []string {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	var all []string
	if r.full {
		all = append(all, r.lines[r.next:]...)
	}
	all = append(all, r.lines[:r.next]...)
	r.mu.Unlock()
	var out []string
	for _, l := range all {
		if len(substrs) == 0 {
			out = append(out, l)
			continue
		}
		for _, s := range substrs {
			if s != "" && strings.Contains(l, s) {
				out = append(out, l)
				break
			}
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}
