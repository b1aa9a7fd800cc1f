package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
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
	// And the docs name no flag the gateway lacks, except the worker's:
	// google-chat.md also says how the worker posts the agent's replies.
	known := map[string]bool{"help": true}
	for _, r := range f.rows {
		known[r.name] = true
	}
	var help, discard bytes.Buffer
	if code := run([]string{"worker", "--help"}, &help, &discard); code != 0 {
		t.Fatalf("worker --help: %d", code)
	}
	for _, line := range strings.Split(help.String(), "\n") {
		if name, ok := strings.CutPrefix(line, "  --"); ok {
			known[strings.Fields(name)[0]] = true
		}
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

// Issue 11 items 4-6 as the binary runs: headers stop at 16 KiB, /metrics
// moves to --metrics-addr off the public listener, and --insecure-no-auth
// refuses an address other machines reach unless --insecure-allow-remote.
func TestGatewayListeners(t *testing.T) {
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runGateway(ctx, []string{"--nats-url", n.URL(), "--redis-url", r.URL(), "--redis-prefix", r.Prefix(),
			"--listen", listen, "--metrics-addr", metrics, "--api-keys", "k1"}, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	if err := waitListening(ctx, listen); err != nil {
		t.Fatal(err)
	}
	get := func(url string, header map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("http://"+listen+"/metrics", nil); code != http.StatusNotFound {
		t.Errorf("/metrics on the public listener: %d, want 404", code)
	}
	if code := get("http://"+metrics+"/metrics", nil); code != http.StatusOK {
		t.Errorf("/metrics on --metrics-addr: %d, want 200", code)
	}
	if code := get("http://"+listen+"/healthz", map[string]string{"X-Big": strings.Repeat("a", 20<<10)}); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("20 KiB of headers: %d, want 431", code)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--insecure-no-auth", "--listen", ":0"}, 2, "insecure-allow-remote"},
		{[]string{"--insecure-no-auth", "--listen", "0.0.0.0:0"}, 2, "not a loopback address"},
		// Allowed: it gets as far as dialling NATS, which is closed.
		{[]string{"--insecure-no-auth", "--insecure-allow-remote", "--listen", ":0"}, 1, "connect to NATS"},
		{[]string{"--insecure-no-auth", "--listen", "127.0.0.1:0"}, 1, "connect to NATS"},
	} {
		code, _, errs := runCLI(t, append([]string{"gateway", "--nats-url", "nats://127.0.0.1:1"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("gateway %v: exit %d, stderr %q; want %d mentioning %q", c.args, code, errs, c.code, c.want)
		}
	}
}
