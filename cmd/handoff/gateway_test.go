package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/internal/testenv"
)

// The gateway docs must name every gateway flag and its environment
// variable exactly as the code does: Dialogflow settings in
// docs/dialogflow.md, Chat settings in docs/google-chat.md, everything in
// one of them.
func TestGatewayDocsNameEveryFlag(t *testing.T) {
	root := testenv.RepoRoot(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	df, chat := read("dialogflow.md"), read("google-chat.md")
	var o gatewayOptions
	f := gatewayFlags(&o)
	for _, r := range f.rows {
		flag := "--" + r.name
		var docs string
		switch {
		case strings.HasPrefix(r.name, "dialogflow-"), strings.HasPrefix(r.name, "es-"), strings.HasPrefix(r.name, "cx-"):
			docs = df
		case strings.HasPrefix(r.name, "chat-"):
			docs = chat
		default:
			docs = df + chat
		}
		if !strings.Contains(docs, "`"+flag+"`") && !strings.Contains(docs, flag+" ") {
			t.Errorf("flag %s is not documented", flag)
		}
		if r.env != "" && !strings.Contains(df+chat, r.env) && !strings.HasPrefix(r.env, "HANDOFF_LOG_") {
			t.Errorf("environment variable %s (%s) is not documented", r.env, flag)
		}
	}
	// And the docs name no flag the gateway lacks.
	known := map[string]bool{"help": true}
	for _, r := range f.rows {
		known[r.name] = true
	}
	for _, doc := range []string{df, chat} {
		for _, w := range strings.FieldsFunc(doc, func(r rune) bool { return r == '`' || r == ' ' || r == '(' || r == ',' || r == '\n' }) {
			if strings.HasPrefix(w, "--") && len(w) > 2 {
				name := strings.TrimRight(strings.TrimPrefix(w, "--"), ".):")
				if !known[name] {
					t.Errorf("docs mention --%s, which handoff gateway does not have", name)
				}
			}
		}
	}
}

func TestGatewayHelpAndMissingCredentials(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"gateway", "--help"}, &out, &errOut); code != 0 {
		t.Fatalf("--help exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"--dialogflow-password [$HANDOFF_GATEWAY_DIALOGFLOW_PASSWORD]", "--chat-audience [$HANDOFF_GATEWAY_CHAT_AUDIENCE]", "--redis-url [$REDIS_URL]", "--insecure-no-auth"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	out.Reset()
	errOut.Reset()
	// No credentials: a usage error before any connection is tried.
	code := run([]string{"gateway", "--nats-url", "nats://127.0.0.1:1", "--api-keys", ""}, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "no credentials configured") {
		t.Fatalf("exit %d, stderr %q; want 2 and a clear message", code, errOut.String())
	}
}

func TestGatewayConfigFromFlags(t *testing.T) {
	var o gatewayOptions
	f := gatewayFlags(&o)
	err := f.parse([]string{
		"--api-keys", "k1, k2",
		"--handoff-phrases", `{"":["agent"],"pt":["atendente"]}`,
		"--cancel-phrases", "back to bot, stop",
		"--handoff-reply", "Hold on",
		"--ack-reply", `{"pt":"Recebido"}`,
		"--group", "4", "--groups", `{"pt":3}`,
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.config()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.APIKeys, "|") != "k1|k2" || cfg.HandoffPhrases["pt"][0] != "atendente" ||
		strings.Join(cfg.CancelPhrases[""], "|") != "back to bot|stop" || cfg.HandoffReply[""] != "Hold on" ||
		cfg.AckReply["pt"] != "Recebido" || *cfg.Group != 4 || cfg.Groups["pt"] != 3 ||
		strings.Join(cfg.CXHandoffTags, "|") != "live-agent-handoff" {
		t.Errorf("config %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
	bad := gatewayOptions{}
	f = gatewayFlags(&bad)
	if err := f.parse([]string{"--groups", "{nope"}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.config(); err == nil || !strings.Contains(err.Error(), "--groups") {
		t.Errorf("bad --groups: %v", err)
	}
}
