package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/handoff-dev/handoff/internal/testenv"
)

// TestDemoPageInBrowser drives the demo page of `handoff dev` in headless
// Chromium as a person would: the user talks to the bot, asks for an agent,
// the agent (right side) answers and writes an internal note, the user sees
// the answer and never the note, the agent closes the chat and the bot
// answers again. It saves a screenshot and prints where.
func TestDemoPageInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it): the demo page was not tested in a browser")
	}
	demoAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, []string{"--nats-port", "-1", "--data-dir", t.TempDir(), "--store", "nats",
			"--sim-addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
			"--gateway-addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
			"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
			"--demo-addr", demoAddr, "--log-level", "error"}, &out)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev: %v", err)
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "Demo page: http://"+demoAddr) {
		if time.Now().After(deadline) {
			t.Fatalf("dev did not start:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancelTimeout := context.WithTimeout(bctx, 3*time.Minute)
	defer cancelTimeout()

	// until waits for a JavaScript condition on the page.
	until := func(what, js string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			if err := chromedp.Poll(js, nil, chromedp.WithPollingInterval(100*time.Millisecond)).Do(ctx); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
			return nil
		})
	}
	say := func(input, button, text string) chromedp.Action {
		return chromedp.Tasks{chromedp.SendKeys(input, text, chromedp.ByID), chromedp.Click(button, chromedp.ByID)}
	}
	userLogHas := func(cls, text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('#user-log .msg.%s')].some(e => e.textContent.includes(%q))`, cls, text)
	}
	var screenshot []byte
	err = chromedp.Run(bctx,
		chromedp.Navigate("http://"+demoAddr+"/"),
		chromedp.WaitVisible("#user-input", chromedp.ByID),
		say("#user-input", "#user-send", "hello"),
		until("the bot's answer", userLogHas("bot", "You said: “hello”")),
		chromedp.Click("#ask-agent", chromedp.ByID),
		until("the chat on the agent's side", `document.querySelector('#chats .chat') !== null`),
		until("the queue status", `/queue|agent is with you|Waiting for LiveChat/.test(document.getElementById('user-status').textContent)`),
		chromedp.Click("#chats .chat", chromedp.ByQuery),
		say("#agent-input", "#agent-note", "VIP customer, be nice"),
		say("#agent-input", "#agent-send", "Hi, I am Tom. How can I help?"),
		until("the agent's reply on the user's side", userLogHas("agent", "Hi, I am Tom")),
		until("the agent joining", userLogHas("system", "An agent joined")),
		say("#user-input", "#user-send", "my order is late"),
		until("the user's message at the agent", `[...document.querySelectorAll('#agent-log .msg.customer')].some(e => e.textContent.includes('my order is late'))`),
		chromedp.Click("#agent-close", chromedp.ByID),
		until("the close on the user's side", userLogHas("system", "the bot answers again")),
		say("#user-input", "#user-send", "thanks"),
		until("the bot answering again", userLogHas("bot", "You said: “thanks”")),
		until("the note on the agent's side", `[...document.querySelectorAll('#agent-log .msg.note')].some(e => e.textContent.includes('VIP'))`),
		chromedp.FullScreenshot(&screenshot, 100),
	)
	if screenshot == nil {
		_ = chromedp.Run(bctx, chromedp.FullScreenshot(&screenshot, 100))
	}
	path := saveScreenshot(t, screenshot)
	if err != nil {
		t.Fatalf("%v (screenshot: %s)", err, path)
	}
	var leaked bool
	if err := chromedp.Run(bctx, chromedp.Evaluate(`document.getElementById('user-log').textContent.includes('VIP')`, &leaked)); err != nil {
		t.Fatal(err)
	}
	if leaked {
		t.Errorf("the agent's internal note reached the user's side (screenshot: %s)", path)
	}
}

// saveScreenshot writes the page's picture where .ci/run prints it from
// ($HANDOFF_SCREENSHOT_DIR, default the temp directory) and prints the
// path.
func saveScreenshot(t *testing.T, png []byte) string {
	t.Helper()
	if len(png) == 0 {
		return "(none taken)"
	}
	dir := os.Getenv("HANDOFF_SCREENSHOT_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, "handoff-demo.png")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("save screenshot: %v", err)
		return "(not saved)"
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("save screenshot: %v", err)
		return "(not saved)"
	}
	t.Logf("demo page screenshot: %s", path)
	fmt.Fprintf(os.Stderr, "demo page screenshot: %s\n", path)
	return path
}
