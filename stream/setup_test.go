package stream_test

import (
	"context"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
)

func TestSetupIsIdempotent(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	ctx := context.Background()
	cfg := stream.DefaultConfig()

	first, err := stream.Setup(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range first {
		if c.Action != "created" {
			t.Errorf("first setup: %s %s, want created", c.Name, c.Action)
		}
	}
	second, err := stream.Setup(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range second {
		if c.Action != "unchanged" {
			t.Errorf("second setup: %s %s, want unchanged", c.Name, c.Action)
		}
	}

	in, err := js.Stream(ctx, stream.InStream)
	if err != nil {
		t.Fatal(err)
	}
	got := in.CachedInfo().Config
	if got.Retention != jetstream.WorkQueuePolicy || got.Storage != jetstream.FileStorage || got.Duplicates != cfg.Duplicates || got.Discard != jetstream.DiscardNew {
		t.Errorf("inbound stream config = %+v", got)
	}

	feed, err := js.Stream(ctx, stream.FeedStream)
	if err != nil {
		t.Fatal(err)
	}
	fc := feed.CachedInfo().Config
	if fc.Retention != jetstream.LimitsPolicy || fc.Storage != jetstream.FileStorage || fc.MaxAge != 24*time.Hour ||
		len(fc.Subjects) != 1 || fc.Subjects[0] != "handoff.feed.>" {
		t.Errorf("feed stream config = %+v, want limits retention, file storage, 24h, handoff.feed.>", fc)
	}

	cfg.Duplicates = time.Minute
	third, err := stream.Setup(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if third[0].Name != stream.InStream || third[0].Action != "updated" {
		t.Errorf("changed duplicate window: %+v, want inbound stream updated", third)
	}
}
