package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestWorkerWaitsForNATS: a worker started while no NATS server answers
// (NATS restarting, or a rollout starting both) waits for one and then
// consumes, instead of exiting 1 and waiting to be restarted.
func TestWorkerWaitsForNATS(t *testing.T) {
	port := testenv.FreePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	r := testenv.StartRedis(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- runWorker(ctx, []string{"--nats-url", url, "--store", "redis", "--redis-url", r.URL(),
			"--livechat-api-url", "http://127.0.0.1:1", "--livechat-accounts-url", "http://127.0.0.1:1",
			"--livechat-client-id", "id", "--livechat-client-secret", "secret", "--livechat-refresh-token", "r",
			"--metrics-addr", "", "--log-level", "error"}, &lockedBuffer{})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	select {
	case err := <-done:
		done <- nil // for the deferred stop
		t.Fatalf("the worker ended while NATS was down: %v", err)
	case <-time.After(time.Second):
	}

	srv, err := stream.RunEmbedded("127.0.0.1", port, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The worker sets the streams up, then pulls from its consumer.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := js.Consumer(t.Context(), stream.InStream, stream.Consumer); err == nil {
			if info, err := c.Info(t.Context()); err == nil && info.NumWaiting > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not start consuming once NATS answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWorkerStoppedWhileStarting: a SIGTERM that comes while the worker is
// still connecting or setting its streams up (a rollout, a scale-down right
// after a scale-up) stops it as cleanly as one that comes later: exit 0,
// not "setup: look up stream HANDOFF_DLQ: context canceled" and exit 1,
// which a supervisor reports as a crash. Each run stops it at a different
// moment of its start.
func TestWorkerStoppedWhileStarting(t *testing.T) {
	n := testenv.StartNATS(t)
	r := testenv.StartRedis(t)
	for _, after := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond,
		20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 150 * time.Millisecond, 300 * time.Millisecond} {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(after, cancel)
		err := runWorker(ctx, []string{"--nats-url", n.URL(), "--store", "redis", "--redis-url", r.URL(),
			"--livechat-api-url", "http://127.0.0.1:1", "--livechat-accounts-url", "http://127.0.0.1:1",
			"--livechat-client-id", "id", "--livechat-client-secret", "secret", "--livechat-refresh-token", "r",
			"--metrics-addr", "", "--log-level", "error"}, &lockedBuffer{})
		cancel()
		if err != nil {
			t.Errorf("stopped %v after the start: %v", after, err)
		}
	}
}
