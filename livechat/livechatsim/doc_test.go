package livechatsim_test

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/livechat/livechatsim"
)

// TestDocWalkthrough runs the curl walkthrough of docs/livechat.md as
// written, against a simulator, so the documentation cannot rot.
func TestDocWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	doc, err := os.ReadFile("../../docs/livechat.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- walkthrough:begin -->")
	block, _, ok2 := strings.Cut(rest, "<!-- walkthrough:end -->")
	if !ok || !ok2 {
		t.Fatal("walkthrough markers missing from docs/livechat.md")
	}
	block = strings.TrimSpace(block)
	block = strings.TrimPrefix(block, "```sh")
	block = strings.TrimSuffix(block, "```")

	sim := livechatsim.New(livechatsim.Options{})
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { srv.Close(); sim.Close() })

	cmd := exec.Command("bash", "-euo", "pipefail", "-c", block)
	cmd.Env = append(os.Environ(), "SIM="+srv.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walkthrough failed: %v\n%s", err, out)
	}
	for _, want := range []string{`"custom_id": "turn-1"`, `"custom_id": "evt-1"`, `"text": "Hi, I am Tom"`, `"event_id":`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	chats := sim.Chats()
	if len(chats) != 1 || len(chats[0].Events) != 4 {
		t.Errorf("sim holds %+v", chats)
	}
}
