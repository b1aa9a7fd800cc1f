package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// TestScriptsSurviveARetry runs each write script twice with the same
// arguments, as go-redis does when a reply is lost, and checks the second
// run neither applies again nor reports failure.
func TestScriptsSurviveARetry(t *testing.T) {
	r := testenv.StartRedis(t)
	s := NewRedis(r.Client(), WithPrefix(r.Prefix()))
	ctx := t.Context()

	t.Run("cas", func(t *testing.T) {
		data, _ := json.Marshal(handoff.Conversation{ID: "c", Mode: handoff.ModeAgent, LastSeq: 1, Version: 1})
		for i := range 2 {
			n, err := casScript.Run(ctx, s.client, []string{s.convKey("c")}, 0, data, 60000).Int()
			if err != nil || n != 1 {
				t.Fatalf("run %d = %d, %v; want 1 (written)", i, n, err)
			}
		}
		c, err := s.Conversation(ctx, "c")
		if err != nil || c.Version != 1 || c.LastSeq != 1 {
			t.Fatalf("record = %+v, %v", c, err)
		}
		// A different write at the old version is a real conflict.
		other, _ := json.Marshal(handoff.Conversation{ID: "c", Mode: handoff.ModeBot, Version: 1})
		if n, err := casScript.Run(ctx, s.client, []string{s.convKey("c")}, 0, other, 60000).Int(); err != nil || n != 0 {
			t.Fatalf("stale write = %d, %v; want 0 (conflict)", n, err)
		}
	})

	t.Run("append", func(t *testing.T) {
		data, _ := json.Marshal(storedTurn{Nonce: "n1", TranscriptEntry: handoff.TranscriptEntry{Text: "once"}})
		for range 2 {
			if err := appendScript.Run(ctx, s.client, []string{s.turnsKey("c")}, data, 10, 60000).Err(); err != nil {
				t.Fatal(err)
			}
		}
		turns, err := s.Turns(ctx, "c")
		if err != nil || len(turns) != 1 {
			t.Fatalf("turns = %+v, %v; want one", turns, err)
		}
	})

	t.Run("claim", func(t *testing.T) {
		for i := range 2 {
			n, err := claimScript.Run(ctx, s.client, []string{s.seenKey("k")}, "tok", 60000).Int()
			if err != nil || n != 1 {
				t.Fatalf("run %d = %d, %v; want 1 (ours)", i, n, err)
			}
		}
		if first, err := s.Remember(ctx, "k", time.Minute); err != nil || first {
			t.Fatalf("Remember by someone else = %v, %v; want not first", first, err)
		}
	})
}

// TestRedisLogLines checks go-redis' own lines: one "redis:" prefix, and a
// burst of the same kind of line (failed dials during a failover) logged
// once, the next line saying how many were left out.
func TestRedisLogLines(t *testing.T) {
	var buf bytes.Buffer
	l := &slogPrintf{log: slog.New(slog.NewTextHandler(&buf, nil)), by: map[string]*logRun{}}
	ctx := t.Context()
	const dial = "redis: connection pool: failed to dial after %d attempts: %v"
	for i := range 50 {
		l.Printf(ctx, dial, 5, fmt.Errorf("dial tcp 127.0.0.1:%d: connect: connection refused", 7000+i))
	}
	l.Printf(ctx, "redis: unknown message type: %T", 1)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines for 50 failed dials and one other line; want 2:\n%s", len(lines), buf.String())
	}
	for _, line := range lines {
		if strings.Contains(line, "redis: redis:") || !strings.Contains(line, `msg="redis: `) {
			t.Errorf("line %q: want exactly one redis: prefix", line)
		}
	}

	// The window has passed: the next dial failure is logged with the count.
	l.by[dial].last = l.by[dial].last.Add(-logEvery)
	buf.Reset()
	l.Printf(ctx, dial, 5, errors.New("connection refused"))
	if !strings.Contains(buf.String(), "similar_lines_suppressed=49") {
		t.Errorf("line after the window = %q; want similar_lines_suppressed=49", buf.String())
	}
}
