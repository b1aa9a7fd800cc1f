package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Answers to refused requests name no configuration, key server or
// backend: those details go to the log, which only operators read.
const (
	reasonUnauthorized = "missing or invalid credentials"
	reasonNotReady     = "not ready"
)

// maxLoggedBytes bounds what one value from a request (a token's issuer,
// a path, a parse error quoting the body) can add to a log line.
const maxLoggedBytes = 256

// truncate cuts an outsider-supplied string for the log, saying how long
// it was.
func truncate(s string) string {
	if len(s) <= maxLoggedBytes {
		return s
	}
	return fmt.Sprintf("%s…(%d bytes)", clip(s, maxLoggedBytes), len(s))
}

// rejectLog logs refused requests at most a few lines a second; the lines
// it drops are counted in the next one it writes. A flood of forged
// requests then costs the log a bounded number of bytes per second.
type rejectLog struct {
	log     *slog.Logger
	lim     *limiter
	dropped atomic.Int64
}

func newRejectLog(log *slog.Logger) *rejectLog {
	return &rejectLog{log: log, lim: newLimiter(5, 20, time.Now)}
}

func (l *rejectLog) Info(msg string, args ...any) { l.write(slog.LevelInfo, msg, args) }
func (l *rejectLog) Warn(msg string, args ...any) { l.write(slog.LevelWarn, msg, args) }

func (l *rejectLog) write(level slog.Level, msg string, args []any) {
	if ok, _ := l.lim.take(""); !ok {
		l.dropped.Add(1)
		return
	}
	if n := l.dropped.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
