package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// Personal data stays out of the logs at every level unless
// --log-personal-data: what users and agents write and who they are. Logs
// are kept longer and read by more people than the conversations
// themselves, and a debug level switched on to chase a bug must not turn
// them into a copy of every chat.

// personalKeys are attribute keys whose values are personal data.
var personalKeys = map[string]bool{
	"text": true, "texts": true, "message": true, "transcript": true, "body": true,
	"name": true, "customer": true, "agent_name": true, "email": true, "phone": true, "fields": true,
}

// emailPattern finds addresses inside other values (an error quoting a
// LiveChat answer, a validation message).
var emailPattern = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)

const redacted = "[redacted]"

// redactHandler removes personal data from every record before the
// wrapped handler writes it.
type redactHandler struct{ next slog.Handler }

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, redactString(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = redactAttr(a)
	}
	return redactHandler{h.next.WithAttrs(red)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	if personalKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, redacted)
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, redactString(v.String()))
	case slog.KindGroup:
		members := v.Group()
		red := make([]any, len(members))
		for i, m := range members {
			red[i] = redactAttr(m)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		var s string
		if err, ok := v.Any().(error); ok {
			s = err.Error()
		} else {
			s = fmt.Sprint(v.Any())
		}
		if r := redactString(s); r != s {
			return slog.String(a.Key, r)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func redactString(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return emailPattern.ReplaceAllString(s, "[email]")
}
