package store_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/store/storetest"
	"github.com/redis/go-redis/v9/maintnotifications"
)

func TestRedisConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		r := testenv.StartRedis(t)
		return store.NewRedis(r.Client(), store.WithPrefix(r.Prefix()))
	})
}

func TestOpenRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	s, err := store.OpenRedis(r.URL(), store.WithPrefix(r.Prefix()))
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	defer s.Close()
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	c, err := s.UpdateConversation(t.Context(), "x", func(c *handoff.Conversation) error { c.ChatID = "chat"; return nil })
	if err != nil || c.Version != 1 {
		t.Fatalf("UpdateConversation = %+v, %v", c, err)
	}
	// The keys land where the Keys table says.
	keys, err := r.Client().Keys(t.Context(), r.Prefix()+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{r.Prefix() + "chat:chat", r.Prefix() + "conv:{x}", r.Prefix() + "modes:bot"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys = %q; want %q", keys, want)
	}
}

func TestParseRedisURL(t *testing.T) {
	tests := []struct {
		url        string
		addrs      []string
		db         int
		master     string
		user, pass string
		sentUser   string
		sentPass   string
		tls        bool
		serverName string
		cluster    bool
		reload     time.Duration
		err        string // substring of the error; "" for none
	}{
		{url: "redis://localhost:6379/0", addrs: []string{"localhost:6379"}},
		{url: "redis://h", addrs: []string{"h:6379"}},
		{url: "redis://u:p%40ss@h:7000/3?dial_timeout=2s", addrs: []string{"h:7000"}, db: 3, user: "u", pass: "p@ss"},
		{url: "redis://:secret@[::1]:6380", addrs: []string{"[::1]:6380"}, pass: "secret"},
		{url: "rediss://h.example.com:6380/1", addrs: []string{"h.example.com:6380"}, db: 1, tls: true, serverName: "h.example.com"},
		{url: "redis+sentinel://s1:26379,s2:26380,s3/mymaster/2", addrs: []string{"s1:26379", "s2:26380", "s3:26379"}, master: "mymaster", db: 2},
		{url: "redis+sentinel://:pw@s1/mymaster?sentinel_password=spw&sentinel_username=su", addrs: []string{"s1:26379"}, master: "mymaster", pass: "pw", sentUser: "su", sentPass: "spw"},
		{url: "rediss+sentinel://s1,s2/m", addrs: []string{"s1:26379", "s2:26379"}, master: "m", tls: true},
		{url: "redis+cluster://n1:7000,n2:7001,n3", addrs: []string{"n1:7000", "n2:7001", "n3:6379"}, cluster: true, reload: store.DefaultClusterReloadInterval},
		{url: "redis+cluster://n1:7000", addrs: []string{"n1:7000"}, cluster: true, reload: store.DefaultClusterReloadInterval},
		{url: "rediss+cluster://u:p@n1:7000,n2:7000/?read_timeout=1s", addrs: []string{"n1:7000", "n2:7000"}, cluster: true, tls: true, user: "u", pass: "p", reload: store.DefaultClusterReloadInterval},
		{url: "redis+cluster://n1:7000?cluster_reload_interval=2s&dial_timeout=1s", addrs: []string{"n1:7000"}, cluster: true, reload: 2 * time.Second},

		{url: "", err: "no scheme"},
		{url: "localhost:6379", err: "no scheme"},
		{url: "http://h", err: "unknown scheme"},
		{url: "redis+ring://h", err: "unknown scheme"},
		{url: "redis://a:1,b:2", err: "redis+cluster://"},
		{url: "redis://h:notaport", err: "bad host"},
		{url: "redis://h:99999", err: "bad port"},
		{url: "redis://h:", err: "bad port"},
		{url: "redis://", err: "empty host"},
		{url: "redis://h/notadb", err: "database"},
		{url: "redis://h?bogus=1", err: "unexpected option"},
		{url: "redis+sentinel://s1:26379", err: "no master"},
		{url: "redis+sentinel://s1/m/x", err: "database"},
		{url: "redis+cluster://n1/3", err: "only database 0"},
		{url: "redis+cluster://n1,,n2", err: "empty host"},
		{url: "redis+cluster://n1?cluster_reload_interval=soon", err: "cluster_reload_interval"},
		{url: "redis+cluster://n1?cluster_reload_interval=0s", err: "cluster_reload_interval"},
		{url: "redis://h?cluster_reload_interval=1s", err: "redis+cluster:// only"},
		{url: "redis+sentinel://s1/m?cluster_reload_interval=1s", err: "redis+cluster:// only"},
		{url: "redis://:secret@h/%zz", err: "invalid URL escape"},
		{url: "redis://:secret@h/x", err: "database"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			o, err := store.ParseRedisURL(tc.url)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v; want one containing %q", err, tc.err)
				}
				if strings.Contains(tc.url, "secret") && strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRedisURL: %v", err)
			}
			if !slices.Equal(o.Addrs, tc.addrs) || o.DB != tc.db || o.MasterName != tc.master ||
				o.Username != tc.user || o.Password != tc.pass || o.IsClusterMode != tc.cluster ||
				o.SentinelUsername != tc.sentUser || o.SentinelPassword != tc.sentPass {
				t.Fatalf("got addrs %q db %d master %q user %q pass %q sentinel %q/%q cluster %v",
					o.Addrs, o.DB, o.MasterName, o.Username, o.Password, o.SentinelUsername, o.SentinelPassword, o.IsClusterMode)
			}
			if o.ClusterReloadInterval != tc.reload {
				t.Fatalf("cluster reload interval = %v; want %v", o.ClusterReloadInterval, tc.reload)
			}
			if (o.TLSConfig != nil) != tc.tls {
				t.Fatalf("TLS = %v; want %v", o.TLSConfig != nil, tc.tls)
			}
			if tc.tls && o.TLSConfig.ServerName != tc.serverName {
				t.Fatalf("TLS ServerName = %q; want %q", o.TLSConfig.ServerName, tc.serverName)
			}
			if !o.DisableIdentity || o.MaintNotificationsConfig == nil ||
				o.MaintNotificationsConfig.Mode != maintnotifications.ModeDisabled {
				t.Fatalf("identity/maintenance handshakes not disabled: %v %+v", o.DisableIdentity, o.MaintNotificationsConfig)
			}
		})
	}
}

// TestRedisOutage stops Redis under a store: every operation must fail with
// ErrUnavailable naming the operation, and work again once Redis is back.
func TestRedisOutage(t *testing.T) {
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("needs a Redis the test can stop; unset REDIS_URL")
	}
	r := testenv.StartRedis(t)
	s := store.NewRedis(r.Client(), store.WithPrefix(r.Prefix()))
	bump := func(c *handoff.Conversation) error { c.LastSeq++; return nil }
	if _, err := s.UpdateConversation(t.Context(), "c", bump); err != nil {
		t.Fatal(err)
	}

	r.Stop()
	ops := []struct {
		name, msg string
		call      func(ctx context.Context) error
	}{
		{"UpdateConversation", `update conversation "c"`, func(ctx context.Context) error {
			_, err := s.UpdateConversation(ctx, "c", bump)
			return err
		}},
		{"Conversation", `conversation "c"`, func(ctx context.Context) error { _, err := s.Conversation(ctx, "c"); return err }},
		{"ConversationByChat", `conversation by chat "chat"`, func(ctx context.Context) error {
			_, err := s.ConversationByChat(ctx, "chat")
			return err
		}},
		{"AppendTurn", `append turn`, func(ctx context.Context) error {
			return s.AppendTurn(ctx, "c", handoff.TranscriptEntry{Text: "x"}, 5)
		}},
		{"Remember", `remember "k"`, func(ctx context.Context) error { _, err := s.Remember(ctx, "k", time.Minute); return err }},
		{"Lock", `lock "l"`, func(ctx context.Context) error { _, _, err := s.Lock(ctx, "l", time.Minute); return err }},
		{"Ping", "ping", func(ctx context.Context) error { return s.Ping(ctx) }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
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

	r.Start()
	deadline := time.Now().Add(15 * time.Second)
	for s.Ping(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("store did not reconnect after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The test server persists (append-only file), so the record written
	// before the outage is still there and the next write follows it.
	before, err := s.Conversation(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.UpdateConversation(t.Context(), "c", bump)
	if err != nil || c.Version != before.Version+1 {
		t.Fatalf("after restart UpdateConversation = %+v, %v (version before %d)", c, err, before.Version)
	}
}

// TestUpdateGivesUpWithErrConflict makes every attempt lose its race (fn
// itself writes the record) and checks the error and the attempt count.
func TestUpdateGivesUpWithErrConflict(t *testing.T) {
	r := testenv.StartRedis(t)
	s := store.NewRedis(r.Client(), store.WithPrefix(r.Prefix()), store.WithMaxUpdateRetries(3))
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

// TestConversationTTL checks idle conversations expire with their index.
func TestConversationTTL(t *testing.T) {
	r := testenv.StartRedis(t)
	s := store.NewRedis(r.Client(), store.WithPrefix(r.Prefix()), store.WithConversationTTL(300*time.Millisecond), store.WithTurnsTTL(300*time.Millisecond))
	ctx := t.Context()
	if _, err := s.UpdateConversation(ctx, "c", func(c *handoff.Conversation) error { c.ChatID = "chat"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendTurn(ctx, "c", handoff.TranscriptEntry{Text: "hi"}, 5); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := s.Conversation(ctx, "c")
		_, chatErr := s.ConversationByChat(ctx, "chat")
		turns, turnsErr := s.Turns(ctx, "c")
		if err == nil && c.Version == 0 && errors.Is(chatErr, store.ErrNotFound) && turnsErr == nil && len(turns) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not expired: %+v %v, chat %v, turns %v %v", c, err, chatErr, turns, turnsErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func init() {
	// The outage test makes go-redis log every failed dial; not useful here.
	store.SetLogger(slog.New(slog.DiscardHandler))
}
