package natskv_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/store/natskv"
	"github.com/handoff-dev/handoff/store/storetest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// open returns a store on its own connection and bucket of n.
func open(t *testing.T, n *testenv.NATS, bucket string, opts ...natskv.Option) *natskv.Store {
	t.Helper()
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s, err := natskv.Open(t.Context(), nc, append([]natskv.Option{natskv.WithBucket(bucket)}, opts...)...)
	if err != nil {
		nc.Close()
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	n := testenv.StartNATS(t)
	var seq atomic.Int64
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, n, fmt.Sprintf("test%d", seq.Add(1)))
	})
}

// TestBucketsAndKeys checks the layout the package doc promises: a record
// is readable with the plain KV API under conv.<base64url id>, and the mode
// bucket holds the conversation.
func TestBucketsAndKeys(t *testing.T) {
	n := testenv.StartNATS(t)
	s := open(t, n, "layout")
	if _, err := s.UpdateConversation(t.Context(), "x/y", func(c *handoff.Conversation) error {
		c.ChatID, c.Mode = "chat", handoff.ModeQueued
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, js := n.Connect()
	kv, err := js.KeyValue(t.Context(), "layout")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"conv.eC95": true, "chat.Y2hhdA": true}
	if len(keys) != len(want) || !want[keys[0]] || !want[keys[1]] {
		t.Fatalf("keys = %q; want %v", keys, want)
	}
	e, err := kv.Get(t.Context(), "chat.Y2hhdA")
	if err != nil || string(e.Value()) != "x/y" {
		t.Fatalf("chat index = %v, %v", e, err)
	}
	mk, err := js.KeyValue(t.Context(), "layout_mode_queued")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mk.Get(t.Context(), "eC95"); err != nil {
		t.Fatalf("mode key: %v", err)
	}
}

// TestOutage stops NATS under a store: every operation fails with
// ErrUnavailable naming the operation, and works again once NATS is back
// (its file store keeps the data).
func TestOutage(t *testing.T) {
	n := testenv.StartNATS(t)
	s := open(t, n, "outage")
	bump := func(c *handoff.Conversation) error { c.LastSeq++; return nil }
	if _, err := s.UpdateConversation(t.Context(), "c", bump); err != nil {
		t.Fatal(err)
	}
	n.Stop()
	ops := []struct {
		name, msg string
		call      func(ctx context.Context) error
	}{
		{"UpdateConversation", `update conversation "c"`, func(ctx context.Context) error {
			_, err := s.UpdateConversation(ctx, "c", bump)
			return err
		}},
		{"Conversation", `conversation "c"`, func(ctx context.Context) error { _, err := s.Conversation(ctx, "c"); return err }},
		{"Remember", `remember "k"`, func(ctx context.Context) error { _, err := s.Remember(ctx, "k", time.Minute); return err }},
		{"Lock", `lock "l"`, func(ctx context.Context) error { _, _, err := s.Lock(ctx, "l", time.Minute); return err }},
		{"CountByMode", "count conversations by mode", func(ctx context.Context) error { _, err := s.CountByMode(ctx); return err }},
		{"Ping", "ping", func(ctx context.Context) error { return s.Ping(ctx) }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			err := op.call(ctx)
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("error = %v; want ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), "store: "+op.msg) {
				t.Fatalf("error %q does not name the operation %q", err, op.msg)
			}
		})
	}
	n.Start()
	deadline := time.Now().Add(15 * time.Second)
	for s.Ping(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("store did not reconnect after NATS came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := s.UpdateConversation(t.Context(), "c", bump)
	if err != nil || c.Version != 2 || c.LastSeq != 2 {
		t.Fatalf("after restart UpdateConversation = %+v, %v; want version 2", c, err)
	}
}

// TestUpdateGivesUpWithErrConflict makes every attempt lose its race.
func TestUpdateGivesUpWithErrConflict(t *testing.T) {
	n := testenv.StartNATS(t)
	s := open(t, n, "conflict", natskv.WithMaxUpdateRetries(3))
	ctx := t.Context()
	attempts := 0
	_, err := s.UpdateConversation(ctx, "c", func(c *handoff.Conversation) error {
		attempts++
		_, err := s.UpdateConversation(ctx, "c", func(c *handoff.Conversation) error { c.LastSeq++; return nil })
		return err
	})
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), `update conversation "c"`) {
		t.Fatalf("error = %v; want ErrConflict naming the operation", err)
	}
	if attempts != 3 {
		t.Fatalf("fn ran %d times; want 3", attempts)
	}
	if c, err := s.Conversation(ctx, "c"); err != nil || c.LastSeq != 3 || c.Version != 3 {
		t.Fatalf("record = %+v, %v; want only the 3 inner writes", c, err)
	}
}

// TestConversationTTL: idle conversations expire with their index, turns
// and mode count.
func TestConversationTTL(t *testing.T) {
	n := testenv.StartNATS(t)
	s := open(t, n, "ttl", natskv.WithConversationTTL(time.Second), natskv.WithTurnsTTL(time.Second))
	ctx := t.Context()
	if _, err := s.UpdateConversation(ctx, "c", func(c *handoff.Conversation) error {
		c.ChatID, c.Mode = "chat", handoff.ModeAgent
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendTurn(ctx, "c", handoff.TranscriptEntry{Text: "hi"}, 5); err != nil {
		t.Fatal(err)
	}
	if counts, err := s.CountByMode(ctx); err != nil || counts[handoff.ModeAgent] != 1 {
		t.Fatalf("CountByMode = %v, %v; want one agent conversation", counts, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := s.Conversation(ctx, "c")
		_, chatErr := s.ConversationByChat(ctx, "chat")
		turns, turnsErr := s.Turns(ctx, "c")
		counts, countErr := s.CountByMode(ctx)
		if err == nil && c.Version == 0 && errors.Is(chatErr, store.ErrNotFound) && turnsErr == nil && len(turns) == 0 &&
			countErr == nil && counts[handoff.ModeAgent] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not expired: %+v %v, chat %v, turns %v %v, counts %v %v", c, err, chatErr, turns, turnsErr, counts, countErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A conversation that expired starts again at version 1.
	if c, err := s.UpdateConversation(ctx, "c", func(c *handoff.Conversation) error { return nil }); err != nil || c.Version != 1 {
		t.Fatalf("after expiry UpdateConversation = %+v, %v", c, err)
	}
}

var _ = jetstream.ErrKeyNotFound
