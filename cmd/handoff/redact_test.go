package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// Issue 11 item 8: debug logs carried message texts, names and emails.
// They are redacted at every level unless --log-personal-data.
func TestLogsRedactPersonalData(t *testing.T) {
	secrets := []string{"my card number is 4111", "Ana Souza", "ana@example.com", "Tom Agent", "tom@shop.example"}
	write := func(l logging) string {
		var buf bytes.Buffer
		log, err := l.loggerTo(&buf)
		if err != nil {
			t.Fatal(err)
		}
		log = log.With("customer", slog.GroupValue(slog.String("name", "Ana Souza"), slog.String("email", "ana@example.com")))
		log.Debug("forwarding message", "conversation", "web-1", "text", "my card number is 4111")
		log.Info("agent joined", "agent_name", "Tom Agent", "chat", "C1")
		log.Warn("livechat refused", "err", fmt.Errorf("create chat: %w", errors.New(`422 {"message":"email tom@shop.example is banned"}`)))
		log.Error("send failed for ana@example.com", slog.Group("event", slog.String("text", "my card number is 4111")))
		return buf.String()
	}
	for _, format := range []string{"text", "json"} {
		out := write(logging{format: format, level: "debug"})
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s log holds %q:\n%s", format, s, out)
			}
		}
		for _, keep := range []string{"web-1", "C1", "forwarding message", "422", "is banned"} {
			if !strings.Contains(out, keep) {
				t.Errorf("%s log lost %q, which is not personal:\n%s", format, keep, out)
			}
		}
	}
	out := write(logging{format: "text", level: "debug", personal: true})
	for _, s := range secrets {
		if !strings.Contains(out, s) {
			t.Errorf("with --log-personal-data the log lacks %q:\n%s", s, out)
		}
	}
}
