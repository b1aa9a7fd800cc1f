package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A restart, graceful or a SIGKILL, keeps the port and the store: clients
// reconnect to the same address and find what was stored.
func TestNATSProcessRestartsOnTheSameStore(t *testing.T) {
	n := StartNATSProcess(t)
	_, js := n.Connect()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	restarts := []struct {
		name string
		stop func()
	}{{"graceful", n.Stop}, {"kill -9", n.Kill}}
	for i, r := range restarts {
		if _, err := js.Publish(ctx, "t.x", []byte(r.name)); err != nil {
			t.Fatalf("before %s: %v", r.name, err)
		}
		r.stop()
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := js.Stream(short, "T")
		cancel()
		if err == nil {
			t.Fatalf("after %s the server still answers", r.name)
		}
		n.Start()
		s, err := js.Stream(ctx, "T")
		if err != nil {
			t.Fatalf("after %s and Start: %v", r.name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != uint64(i+1) {
			t.Fatalf("after %s: %d messages stored; want %d", r.name, info.State.Msgs, i+1)
		}
	}
}
