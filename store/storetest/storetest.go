// Package storetest is the conformance suite every store.Store backend must
// pass. A backend's test calls Run with a constructor of empty stores.
//
// The suite checks behaviour, never speed: expiries are awaited by polling
// under a generous deadline, so a slow machine makes it slower, not red.
package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/store"
)

// waitFor bounds every poll for an expiry. Expiries in the suite are a few
// hundred milliseconds; the deadline only stops a broken backend hanging.
const waitFor = 15 * time.Second

// Run runs the suite. newStore must return a new, empty store for each
// subtest; Run closes it when the subtest ends.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"UnknownRecords", testUnknown},
		{"UpdatePersistsEveryField", testUpdatePersists},
		{"StoreOwnsIDVersionUpdated", testStoreOwnsFields},
		{"Abort", testAbort},
		{"FnErrorPropagates", testFnError},
		{"ConcurrentUpdatesLoseNothing", testConcurrentUpdates},
		{"ChatIndexFollowsChatID", testChatIndex},
		{"UpdateFromStaleRecordRereads", testUpdateFrom},
		{"AppliedEventsGoWithTheCAS", testAppliedEvents},
		{"CountByModeFollowsModes", testCountByMode},
		{"ConversationsInModeFollowsModes", testConversationsInMode},
		{"AppendTurnKeepsNewest", testTurns},
		{"Tokens", testTokens},
		{"Values", testValues},
		{"Remember", testRemember},
		{"Lock", testLock},
		{"HostileIDs", testHostileIDs},
		{"Ping", func(t *testing.T, s store.Store) {
			if err := s.Ping(t.Context()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func update(t *testing.T, s store.Store, id string, fn func(*handoff.Conversation)) handoff.Conversation {
	t.Helper()
	c, err := s.UpdateConversation(t.Context(), id, func(c *handoff.Conversation) error {
		fn(c)
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateConversation(%q): %v", id, err)
	}
	return c
}

func get(t *testing.T, s store.Store, id string) handoff.Conversation {
	t.Helper()
	c, err := s.Conversation(t.Context(), id)
	if err != nil {
		t.Fatalf("Conversation(%q): %v", id, err)
	}
	return c
}

// sameConv compares records, times by instant (a backend may change the
// location or drop the monotonic clock reading).
func sameConv(t *testing.T, what string, got, want handoff.Conversation) {
	t.Helper()
	norm := func(c handoff.Conversation) handoff.Conversation {
		c.Updated = c.Updated.UTC().Round(0)
		c.Pending = append([]handoff.TranscriptEntry(nil), c.Pending...)
		for i := range c.Pending {
			c.Pending[i].Time = c.Pending[i].Time.UTC().Round(0)
		}
		if len(c.Pending) == 0 {
			c.Pending = nil
		}
		if len(c.Applied) == 0 {
			c.Applied = nil
		}
		return c
	}
	if g, w := norm(got), norm(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

func testUnknown(t *testing.T, s store.Store) {
	ctx := t.Context()
	c := get(t, s, "never-seen")
	sameConv(t, "unknown conversation", c, handoff.Conversation{ID: "never-seen", Mode: handoff.ModeBot})

	turns, err := s.Turns(ctx, "never-seen")
	if err != nil || len(turns) != 0 {
		t.Errorf("Turns(unknown) = %v, %v; want none, nil", turns, err)
	}
	notFound := []struct {
		name string
		call func() error
	}{
		{"ConversationByChat", func() error { _, err := s.ConversationByChat(ctx, "no-chat"); return err }},
		{"CustomerToken", func() error { _, err := s.CustomerToken(ctx, "no-customer"); return err }},
		{"AgentToken", func() error { _, err := s.AgentToken(ctx); return err }},
		{"Value", func() error { _, err := s.Value(ctx, "no-value"); return err }},
	}
	for _, tc := range notFound {
		if err := tc.call(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s(unknown) error = %v; want ErrNotFound", tc.name, err)
		}
	}
	if err := s.Forget(ctx, "never-remembered"); err != nil {
		t.Errorf("Forget(unknown) = %v; want nil", err)
	}
}

func testUpdatePersists(t *testing.T, s store.Store) {
	group := 7
	at := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	want := handoff.Conversation{
		ID:          "c1",
		Mode:        handoff.ModeQueued,
		CustomerID:  "cust-1",
		ChatID:      "chat-1",
		ThreadID:    "thread-1",
		LastEventID: "evt-9",
		LastSeq:     1<<40 + 3,
		Group:       &group,
		Pending: []handoff.TranscriptEntry{
			{Author: handoff.AuthorUser, Text: "hello", Time: at},
			{Author: handoff.AuthorBot, Text: "ünïcødé \"quoted\" {braces}\n", Time: at.Add(time.Second)},
		},
		Applied: handoff.AppliedEvents{
			{ID: "0193a5f2-7c1e-7b7a-9d1e-5c3f2a1b0c01", At: at.Unix()},
			{ID: "projects/p/agent/sessions/s1/responses/\"r\"", At: at.Unix() + 1},
		},
		ReplyTo: handoff.ReplyTo{Channel: handoff.ChannelGoogleChat, Address: "spaces/AAA/threads/BBB"},
		// The funnel's stage times are what the metrics' durations are
		// computed from on another process: they must come back exactly.
		Funnel: &handoff.Funnel{Handoff: "evt-1", Channel: "google-chat", Group: "7", Requested: at.UnixMilli(),
			ChatStarted: at.UnixMilli() + 250, Queued: at.UnixMilli() + 900, Abandoned: handoff.AbandonUserCancelled},
	}
	got := update(t, s, "c1", func(c *handoff.Conversation) {
		if c.Version != 0 || c.Mode != handoff.ModeBot {
			t.Errorf("fn saw %+v; want a new bot record at version 0", *c)
		}
		g := group
		*c = want
		c.Group = &g
	})
	if got.Version != 1 || got.Updated.IsZero() {
		t.Fatalf("first update returned version %d, updated %v; want 1 and a time", got.Version, got.Updated)
	}
	want.Version, want.Updated = got.Version, got.Updated
	sameConv(t, "returned record", got, want)
	sameConv(t, "stored record", get(t, s, "c1"), want)

	// The next update starts from what was stored and bumps the version.
	got2 := update(t, s, "c1", func(c *handoff.Conversation) {
		sameConv(t, "fn input on second update", *c, want)
		c.Mode = handoff.ModeAgent
		*c.Group = 8 // must not reach the stored record until written
	})
	if got2.Version != 2 || got2.Mode != handoff.ModeAgent || *got2.Group != 8 {
		t.Fatalf("second update = %+v; want version 2, agent, group 8", got2)
	}
	if got2.Updated.Before(got.Updated) {
		t.Errorf("Updated went back: %v then %v", got.Updated, got2.Updated)
	}
	sameConv(t, "stored after second update", get(t, s, "c1"), got2)
}

func testStoreOwnsFields(t *testing.T, s store.Store) {
	update(t, s, "own", func(c *handoff.Conversation) { c.Mode = handoff.ModePending })
	got := update(t, s, "own", func(c *handoff.Conversation) {
		c.ID = "someone-else"
		c.Version = 99
		c.Updated = time.Time{}
	})
	if got.ID != "own" || got.Version != 2 || got.Updated.IsZero() {
		t.Fatalf("update = id %q version %d updated %v; want own, 2, a time", got.ID, got.Version, got.Updated)
	}
	if c := get(t, s, "someone-else"); c.Version != 0 {
		t.Errorf("fn changing ID wrote another record: %+v", c)
	}
}

func testAbort(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, tc := range []struct {
		name  string
		setup bool
	}{{"existing", true}, {"never-seen", false}} {
		t.Run(tc.name, func(t *testing.T) {
			id := "abort-" + tc.name
			want := handoff.Conversation{ID: id, Mode: handoff.ModeBot}
			if tc.setup {
				want = update(t, s, id, func(c *handoff.Conversation) {
					c.Mode = handoff.ModeAgent
					c.ChatID = "abort-chat"
				})
			}
			got, err := s.UpdateConversation(ctx, id, func(c *handoff.Conversation) error {
				c.Mode = handoff.ModeClosed
				c.ChatID = "other-chat"
				c.Pending = append(c.Pending, handoff.TranscriptEntry{Text: "dropped"})
				return fmt.Errorf("nothing to do: %w", store.ErrAbort)
			})
			if err != nil {
				t.Fatalf("UpdateConversation with ErrAbort: %v", err)
			}
			sameConv(t, "returned on abort", got, want)
			sameConv(t, "stored after abort", get(t, s, id), want)
			if _, err := s.ConversationByChat(ctx, "other-chat"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("aborted ChatID change reached the index: %v", err)
			}
		})
	}
}

func testFnError(t *testing.T, s store.Store) {
	before := update(t, s, "fail", func(c *handoff.Conversation) { c.Mode = handoff.ModeQueued })
	boom := errors.New("boom")
	calls := 0
	got, err := s.UpdateConversation(t.Context(), "fail", func(c *handoff.Conversation) error {
		calls++
		c.Mode = handoff.ModeClosed
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("error = %v; want it to wrap fn's error", err)
	}
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("fn's error reported as a store condition: %v", err)
	}
	if calls != 1 {
		t.Errorf("fn called %d times; an fn error must not be retried", calls)
	}
	if got.Version != 0 || got.ID != "" {
		t.Errorf("returned %+v with the error; want the zero record", got)
	}
	sameConv(t, "stored after fn error", get(t, s, "fail"), before)
}

func testConcurrentUpdates(t *testing.T, s store.Store) {
	const workers, each = 20, 5
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				text := fmt.Sprintf("w%d-%d", w, i)
				for {
					_, err := s.UpdateConversation(ctx, "hot", func(c *handoff.Conversation) error {
						c.LastSeq++
						c.Pending = append(c.Pending, handoff.TranscriptEntry{Author: handoff.AuthorUser, Text: text})
						return nil
					})
					if errors.Is(err, store.ErrConflict) {
						// Allowed under this much contention; the caller
						// retries, as ErrConflict's doc says.
						continue
					}
					if err != nil {
						errs <- err
					}
					break
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent update: %v", err)
	}
	c := get(t, s, "hot")
	if c.LastSeq != workers*each || len(c.Pending) != workers*each || c.Version != workers*each {
		t.Fatalf("after %d updates: LastSeq %d, %d pending, version %d; an update was lost or doubled",
			workers*each, c.LastSeq, len(c.Pending), c.Version)
	}
	seen := map[string]bool{}
	for _, p := range c.Pending {
		if seen[p.Text] {
			t.Fatalf("entry %q applied twice", p.Text)
		}
		seen[p.Text] = true
	}
}

func testChatIndex(t *testing.T, s store.Store) {
	ctx := t.Context()
	byChat := func(chat string) (string, error) { return s.ConversationByChat(ctx, chat) }
	steps := []struct {
		name    string
		id      string
		chat    string
		want    map[string]string // chat → conversation
		missing []string
	}{
		{"first chat", "conv-a", "chat-1", map[string]string{"chat-1": "conv-a"}, nil},
		{"other conversation", "conv-b", "chat-9", map[string]string{"chat-1": "conv-a", "chat-9": "conv-b"}, nil},
		{"chat changes", "conv-a", "chat-2", map[string]string{"chat-2": "conv-a", "chat-9": "conv-b"}, []string{"chat-1"}},
		{"chat cleared", "conv-a", "", map[string]string{"chat-9": "conv-b"}, []string{"chat-1", "chat-2"}},
		{"old chat reused elsewhere", "conv-b", "chat-1", map[string]string{"chat-1": "conv-b"}, []string{"chat-2", "chat-9"}},
	}
	for _, st := range steps {
		update(t, s, st.id, func(c *handoff.Conversation) { c.ChatID = st.chat })
		for chat, want := range st.want {
			if got, err := byChat(chat); err != nil || got != want {
				t.Fatalf("%s: ConversationByChat(%q) = %q, %v; want %q", st.name, chat, got, err, want)
			}
		}
		for _, chat := range st.missing {
			if got, err := byChat(chat); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("%s: ConversationByChat(%q) = %q, %v; want ErrNotFound", st.name, chat, got, err)
			}
		}
	}
	// A later update that keeps the chat keeps the index.
	update(t, s, "conv-b", func(c *handoff.Conversation) { c.Mode = handoff.ModeAgent })
	if got, err := byChat("chat-1"); err != nil || got != "conv-b" {
		t.Fatalf("after an unrelated update: ConversationByChat = %q, %v", got, err)
	}
}

func testTurns(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	var all []handoff.TranscriptEntry
	for i := range 5 {
		e := handoff.TranscriptEntry{Author: handoff.AuthorUser, Text: fmt.Sprintf("turn %d", i), Time: at.Add(time.Duration(i) * time.Second)}
		if i%2 == 1 {
			e.Author, e.Time = handoff.AuthorBot, time.Time{}
		}
		all = append(all, e)
		if err := s.AppendTurn(ctx, "talk", e, 3); err != nil {
			t.Fatalf("AppendTurn %d: %v", i, err)
		}
	}
	// The same entry twice is two turns (the user said it twice).
	if err := s.AppendTurn(ctx, "other", all[0], 10); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendTurn(ctx, "other", all[0], 10); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		want []handoff.TranscriptEntry
	}{
		{"talk", all[2:]},
		{"other", []handoff.TranscriptEntry{all[0], all[0]}},
	} {
		got, err := s.Turns(ctx, tc.id)
		if err != nil {
			t.Fatalf("Turns(%q): %v", tc.id, err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("Turns(%q) = %d entries %+v; want %d", tc.id, len(got), got, len(tc.want))
		}
		for i := range got {
			g, w := got[i], tc.want[i]
			if g.Author != w.Author || g.Text != w.Text || !g.Time.Equal(w.Time) {
				t.Errorf("Turns(%q)[%d] = %+v; want %+v", tc.id, i, g, w)
			}
		}
	}
}

func testTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	kinds := []struct {
		name string
		save func(store.Token) error
		load func() (store.Token, error)
	}{
		{"customer", func(tok store.Token) error { return s.SaveCustomerToken(ctx, "cust-1", tok) },
			func() (store.Token, error) { return s.CustomerToken(ctx, "cust-1") }},
		{"agent", func(tok store.Token) error { return s.SaveAgentToken(ctx, tok) },
			func() (store.Token, error) { return s.AgentToken(ctx) }},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			long := store.Token{AccessToken: k.name + "-long", ExpiresAt: time.Now().Add(time.Hour).Round(0)}
			if err := k.save(long); err != nil {
				t.Fatalf("save: %v", err)
			}
			got, err := k.load()
			if err != nil || got.AccessToken != long.AccessToken || !got.ExpiresAt.Equal(long.ExpiresAt) {
				t.Fatalf("load = %+v, %v; want %+v", got, err, long)
			}

			// A newer token replaces the cached one and is gone once it
			// expires.
			short := store.Token{AccessToken: k.name + "-short", ExpiresAt: time.Now().Add(300 * time.Millisecond)}
			if err := k.save(short); err != nil {
				t.Fatalf("save short: %v", err)
			}
			eventually(t, "short-lived token expires", func() bool {
				got, err := k.load()
				if err == nil && got.AccessToken != short.AccessToken {
					t.Fatalf("load = %+v; want the newest token or nothing", got)
				}
				return errors.Is(err, store.ErrNotFound)
			})

			// A token already expired is not served.
			if err := k.save(long); err != nil {
				t.Fatal(err)
			}
			if err := k.save(store.Token{AccessToken: "stale", ExpiresAt: time.Now().Add(-time.Minute)}); err != nil {
				t.Fatalf("save expired: %v", err)
			}
			if got, err := k.load(); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("after saving an expired token load = %+v, %v; want ErrNotFound", got, err)
			}
		})
	}
	// Customers do not share tokens.
	if err := s.SaveCustomerToken(ctx, "cust-2", store.Token{AccessToken: "two", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CustomerToken(ctx, "cust-3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CustomerToken(cust-3) = %v; want ErrNotFound", err)
	}
}

func testValues(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, tc := range []struct {
		name, value string
		ttl         time.Duration
	}{
		{"org", "org-123", 0},
		{"org", "org-456", 0}, // overwrite
		{"empty", "", 0},
		{"temp", "soon gone", 300 * time.Millisecond},
	} {
		if err := s.SetValue(ctx, tc.name, tc.value, tc.ttl); err != nil {
			t.Fatalf("SetValue(%q): %v", tc.name, err)
		}
		if got, err := s.Value(ctx, tc.name); err != nil || got != tc.value {
			t.Fatalf("Value(%q) = %q, %v; want %q", tc.name, got, err, tc.value)
		}
	}
	eventually(t, "value with a TTL expires", func() bool {
		_, err := s.Value(ctx, "temp")
		return errors.Is(err, store.ErrNotFound)
	})
	if got, err := s.Value(ctx, "org"); err != nil || got != "org-456" {
		t.Fatalf("Value(org) = %q, %v after the TTL of another; want org-456", got, err)
	}
	// Setting with ttl 0 makes a value permanent again.
	if err := s.SetValue(ctx, "temp2", "x", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.SetValue(ctx, "temp2", "y", 0); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Value(ctx, "temp2"); err != nil || got != "y" {
		t.Fatalf("Value(temp2) = %q, %v", got, err)
	}
}

func testRemember(t *testing.T, s store.Store) {
	ctx := t.Context()
	remember := func(key string, ttl time.Duration) bool {
		t.Helper()
		first, err := s.Remember(ctx, key, ttl)
		if err != nil {
			t.Fatalf("Remember(%q): %v", key, err)
		}
		return first
	}
	steps := []struct {
		name   string
		key    string
		forget bool
		want   bool
	}{
		{"first sight", "evt-1", false, true},
		{"second sight", "evt-1", false, false},
		{"another key", "evt-2", false, true},
		{"after Forget", "evt-1", true, true},
		{"again after Forget", "evt-1", false, false},
	}
	for _, st := range steps {
		if st.forget {
			if err := s.Forget(ctx, st.key); err != nil {
				t.Fatalf("%s: Forget: %v", st.name, err)
			}
		}
		if got := remember(st.key, time.Hour); got != st.want {
			t.Fatalf("%s: Remember(%q) first = %v; want %v", st.name, st.key, got, st.want)
		}
	}
	if !remember("short", 200*time.Millisecond) {
		t.Fatal("Remember(short) not first")
	}
	eventually(t, "remembered key expires", func() bool { return remember("short", time.Hour) })
}

func testLock(t *testing.T, s store.Store) {
	ctx := t.Context()
	lock := func(name string, ttl time.Duration) (func(), bool) {
		t.Helper()
		release, ok, err := s.Lock(ctx, name, ttl)
		if err != nil {
			t.Fatalf("Lock(%q): %v", name, err)
		}
		if ok == (release == nil) {
			t.Fatalf("Lock(%q) ok=%v with release func %v", name, ok, release != nil)
		}
		return release, ok
	}
	release, ok := lock("job", time.Minute)
	if !ok {
		t.Fatal("first Lock(job) not taken")
	}
	if _, ok := lock("job", time.Minute); ok {
		t.Fatal("second Lock(job) taken while held")
	}
	releaseOther, ok := lock("other-job", time.Minute)
	if !ok {
		t.Fatal("Lock(other-job) not taken; locks must be per name")
	}
	defer releaseOther()
	release()
	release() // releasing twice is harmless
	release2, ok := lock("job", time.Minute)
	if !ok {
		t.Fatal("Lock(job) not taken after release")
	}
	release2()

	// A lock expires by itself; a holder that releases late must not free
	// the lock someone else took after the expiry.
	stale, ok := lock("short", 200*time.Millisecond)
	if !ok {
		t.Fatal("Lock(short) not taken")
	}
	var current func()
	eventually(t, "expired lock can be taken", func() bool {
		var ok bool
		current, ok = lock("short", time.Minute)
		return ok
	})
	stale()
	if _, ok := lock("short", time.Minute); ok {
		t.Fatal("a stale release freed the new holder's lock")
	}
	current()
}

func testHostileIDs(t *testing.T, s store.Store) {
	ctx := t.Context()
	ids := []string{
		"with space",
		"a/b/../c",
		"ünïcødé 会话 🚀",
		"{braces}",
		"}{",
		"{",
		"a}",
		"a",
		"glob*?[x]",
		"colon:separated:id",
		"quote\"and\\backslash",
		"new\nline\ttab",
		strings.Repeat("long-", 2000),
	}
	for _, id := range ids {
		chat := "chat/" + id
		update(t, s, id, func(c *handoff.Conversation) {
			c.CustomerID = "cust:" + id
			c.ChatID = chat
		})
		if err := s.AppendTurn(ctx, id, handoff.TranscriptEntry{Author: handoff.AuthorUser, Text: id}, 5); err != nil {
			t.Fatalf("AppendTurn(%q): %v", id, err)
		}
		if err := s.SaveCustomerToken(ctx, id, store.Token{AccessToken: "tok:" + id, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatalf("SaveCustomerToken(%q): %v", id, err)
		}
		if err := s.SetValue(ctx, id, "val:"+id, 0); err != nil {
			t.Fatalf("SetValue(%q): %v", id, err)
		}
		if first, err := s.Remember(ctx, id, time.Hour); err != nil || !first {
			t.Fatalf("Remember(%q) = %v, %v; want first", id, first, err)
		}
		release, ok, err := s.Lock(ctx, id, time.Minute)
		if err != nil || !ok {
			t.Fatalf("Lock(%q) = %v, %v", id, ok, err)
		}
		defer release()
	}
	// Read everything back only after writing all: IDs that a careless key
	// scheme would map to one key ("a}" and "a", "{" and "}{") must not
	// see each other's data.
	for _, id := range ids {
		short := id
		if len(short) > 20 {
			short = short[:20] + "..."
		}
		c := get(t, s, id)
		if c.ID != id || c.CustomerID != "cust:"+id || c.Version != 1 {
			t.Errorf("Conversation(%q) = id %q customer %q version %d", short, c.ID, c.CustomerID, c.Version)
		}
		if got, err := s.ConversationByChat(ctx, "chat/"+id); err != nil || got != id {
			t.Errorf("ConversationByChat(chat/%q) = %q, %v", short, got, err)
		}
		if turns, err := s.Turns(ctx, id); err != nil || len(turns) != 1 || turns[0].Text != id {
			t.Errorf("Turns(%q) = %v, %v", short, turns, err)
		}
		if tok, err := s.CustomerToken(ctx, id); err != nil || tok.AccessToken != "tok:"+id {
			t.Errorf("CustomerToken(%q) = %v, %v", short, tok.AccessToken, err)
		}
		if v, err := s.Value(ctx, id); err != nil || v != "val:"+id {
			t.Errorf("Value(%q) = %q, %v", short, v, err)
		}
		if first, err := s.Remember(ctx, id, time.Hour); err != nil || first {
			t.Errorf("second Remember(%q) = %v, %v; want not first", short, first, err)
		}
		if _, ok, err := s.Lock(ctx, id, time.Minute); err != nil || ok {
			t.Errorf("second Lock(%q) = %v, %v; want held", short, ok, err)
		}
	}
}

// testUpdateFrom: starting from a record that is no longer current must not
// overwrite the newer one; fn runs again on the fresh record.
func testUpdateFrom(t *testing.T, s store.Store) {
	ctx := t.Context()
	id := "update-from"
	stale := update(t, s, id, func(c *handoff.Conversation) { c.LastSeq = 1 })
	update(t, s, id, func(c *handoff.Conversation) {
		c.Pending = append(c.Pending, handoff.TranscriptEntry{Author: handoff.AuthorUser, Text: "newer"})
	})

	calls := 0
	got, err := s.UpdateConversationFrom(ctx, stale, func(c *handoff.Conversation) error {
		calls++
		c.LastSeq++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 || got.LastSeq != 2 || len(got.Pending) != 1 || got.Version != stale.Version+2 {
		t.Fatalf("from a stale record: %d calls, record %+v; want fn rerun on the newer record", calls, got)
	}
	fresh := get(t, s, id)
	calls = 0
	got, err = s.UpdateConversationFrom(ctx, fresh, func(c *handoff.Conversation) error {
		calls++
		c.Mode = handoff.ModeQueued
		return nil
	})
	if err != nil || calls != 1 || got.Version != fresh.Version+1 || got.Mode != handoff.ModeQueued {
		t.Fatalf("from the current record: %d calls, %+v, %v", calls, got, err)
	}
	if unseen, err := s.UpdateConversationFrom(ctx, handoff.Conversation{ID: "never-seen", Mode: handoff.ModeBot}, func(c *handoff.Conversation) error {
		c.Mode = handoff.ModePending
		return nil
	}); err != nil || unseen.Version != 1 {
		t.Fatalf("from a never-seen record: %+v, %v", unseen, err)
	}
}

// testAppliedEvents: the worker records an event ID as applied in the same
// compare-and-swap as the state change, and decides "already applied" from
// it; an ID lost by a racing writer, or one that fn sees missing after a
// conflict, would apply an event twice.
func testAppliedEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	const id = "applied"
	stale := update(t, s, id, func(c *handoff.Conversation) { c.Applied.Add("ev-1", at, time.Hour) })
	update(t, s, id, func(c *handoff.Conversation) { c.Applied.Add("ev-2", at, time.Hour) })

	// A writer starting from the stale record must see ev-2 on its retry.
	var sawEv2 bool
	got, err := s.UpdateConversationFrom(ctx, stale, func(c *handoff.Conversation) error {
		sawEv2 = c.Applied.Has("ev-2")
		if sawEv2 {
			return store.ErrAbort // what the worker does: already applied
		}
		c.Applied.Add("ev-2", at, time.Hour)
		c.LastSeq++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawEv2 || got.LastSeq != 0 {
		t.Fatalf("from a stale record: fn saw ev-2 %v, stored %+v; want the newer list seen and the update aborted", sawEv2, got)
	}

	// Concurrent writers (fewer than the cap) each add their own ID: every
	// one is there exactly once.
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for {
				_, err := s.UpdateConversation(ctx, id, func(c *handoff.Conversation) error {
					c.Applied.Add(fmt.Sprintf("w-%d", w), at.Add(time.Duration(w)*time.Second), time.Hour)
					return nil
				})
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				if err != nil {
					errs <- err
				}
				return
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent update: %v", err)
	}
	c := get(t, s, id)
	count := map[string]int{}
	for _, e := range c.Applied {
		count[e.ID]++
	}
	for _, want := range append([]string{"ev-1", "ev-2"}, func() []string {
		var out []string
		for w := range writers {
			out = append(out, fmt.Sprintf("w-%d", w))
		}
		return out
	}()...) {
		if count[want] != 1 {
			t.Errorf("applied %q recorded %d times; want once (list %+v)", want, count[want], c.Applied)
		}
	}
	if len(c.Applied) != writers+2 {
		t.Errorf("%d applied entries; want %d", len(c.Applied), writers+2)
	}
}

func testConversationsInMode(t *testing.T, s store.Store) {
	ctx := t.Context()
	long := "projects/acme/agent/sessions/" + strings.Repeat("x", 300) // too long for a key
	list := func(m handoff.Mode) []string {
		t.Helper()
		ids, err := s.ConversationsInMode(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(ids)
		return ids
	}
	update(t, s, "lm1", func(c *handoff.Conversation) { c.Mode = handoff.ModeQueued })
	update(t, s, long, func(c *handoff.Conversation) { c.Mode = handoff.ModeAgent })
	update(t, s, "lm2", func(c *handoff.Conversation) { c.Mode = handoff.ModeAgent })
	update(t, s, "lm1", func(c *handoff.Conversation) { c.Mode = handoff.ModeAgent })
	update(t, s, "lm2", func(c *handoff.Conversation) { c.Mode = handoff.ModeClosed })
	agent := list(handoff.ModeAgent)
	if !slices.Contains(agent, "lm1") || !slices.Contains(agent, long) || slices.Contains(agent, "lm2") {
		t.Errorf("in agent: %q; want lm1 and the long ID, not lm2", agent)
	}
	if q := list(handoff.ModeQueued); slices.Contains(q, "lm1") {
		t.Errorf("in queued: %q; lm1 left it", q)
	}
	if c := list(handoff.ModeClosed); !slices.Contains(c, "lm2") {
		t.Errorf("in closed: %q; want lm2", c)
	}
}

func testCountByMode(t *testing.T, s store.Store) {
	ctx := t.Context()
	count := func() map[handoff.Mode]int64 {
		t.Helper()
		c, err := s.CountByMode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	before := count()
	update(t, s, "m1", func(c *handoff.Conversation) { c.Mode = handoff.ModePending })
	update(t, s, "m2", func(c *handoff.Conversation) { c.Mode = handoff.ModePending })
	update(t, s, "m1", func(c *handoff.Conversation) { c.Mode = handoff.ModeQueued })
	update(t, s, "m1", func(c *handoff.Conversation) { c.LastSeq = 9 }) // no mode change
	after := count()
	if after[handoff.ModePending]-before[handoff.ModePending] != 1 || after[handoff.ModeQueued]-before[handoff.ModeQueued] != 1 {
		t.Fatalf("counts before %v after %v: want one more pending and one more queued", before, after)
	}
	update(t, s, "m1", func(c *handoff.Conversation) { c.Mode = handoff.ModeBot })
	final := count()
	if final[handoff.ModeQueued] != before[handoff.ModeQueued] || final[handoff.ModeBot]-before[handoff.ModeBot] != 1 {
		t.Fatalf("after back to bot: %v (before %v)", final, before)
	}
}
