// Package testenv starts the real servers handoff's tests run against: an
// embedded nats-server with JetStream, and a redis-server process (or the
// Redis named by REDIS_URL). There are no fakes: a test that needs NATS or
// Redis gets the real thing, or fails saying what is missing.
package testenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// NATS is an embedded nats-server with JetStream, stored in a temp dir. It
// can be stopped and started again on the same port and store, to test
// restarts.
type NATS struct {
	t    testing.TB
	dir  string
	port int
	mu   sync.Mutex
	srv  *server.Server
}

// StartNATS starts an embedded JetStream server for the test and stops it
// when the test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{t: t, dir: t.TempDir(), port: FreePort(t)}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// Start (re)starts the server on its port and store.
func (n *NATS) Start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return
	}
	srv, err := stream.RunEmbedded("127.0.0.1", n.port, n.dir)
	if err != nil {
		n.t.Fatalf("testenv: %v", err)
	}
	n.srv = srv
}

// Stop shuts the server down; clients see a disconnect.
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// URL is the server's client URL.
func (n *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// Connect returns a connection and a JetStream handle, closed when the test
// ends. The connection reconnects forever, as the service's do.
func (n *NATS) Connect() (*nats.Conn, jetstream.JetStream) {
	n.t.Helper()
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		n.t.Fatalf("testenv: connect to nats: %v", err)
	}
	n.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		n.t.Fatalf("testenv: jetstream: %v", err)
	}
	return nc, js
}

// Redis is a Redis server for a test: either a redis-server process the
// test started (which it can stop and start again) or the one REDIS_URL
// names (then Stop and Start fail the test).
type Redis struct {
	t      testing.TB
	url    string
	port   int
	dir    string
	cmd    *exec.Cmd
	prefix string
	mu     sync.Mutex
}

// StartRedis gives the test a Redis. With REDIS_URL set it uses that server
// and a key prefix unique to the test (so tests never see each other's keys);
// otherwise it starts redis-server on a free port with no persistence. It
// fails the test, naming the missing binary, when neither is possible.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{t: t, prefix: fmt.Sprintf("test:%s:%d:", sanitize(t.Name()), time.Now().UnixNano())}
	if u := os.Getenv("REDIS_URL"); u != "" {
		r.url = u
		t.Cleanup(r.cleanupPrefix)
		return r
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("testenv: tests need Redis: install redis-server (Debian: apt-get install redis-server; .ci/run does this) or set REDIS_URL")
	}
	r.port = FreePort(t)
	r.dir = t.TempDir()
	r.url = fmt.Sprintf("redis://127.0.0.1:%d/0", r.port)
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '/' || r == ':' {
			return '_'
		}
		return r
	}, s)
}

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return r.url }

// Prefix is a key prefix unique to this test; stores under test should use
// it so a shared REDIS_URL server is safe.
func (r *Redis) Prefix() string { return r.prefix }

// Client returns a go-redis client closed when the test ends.
func (r *Redis) Client() *redis.Client {
	r.t.Helper()
	opt, err := redis.ParseURL(r.url)
	if err != nil {
		r.t.Fatalf("testenv: REDIS_URL: %v", err)
	}
	opt.DisableIdentity = true
	c := redis.NewClient(opt)
	r.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Start starts (or restarts) the redis-server process on its port.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.port == 0 {
		r.t.Fatalf("testenv: cannot start the Redis at REDIS_URL; unset it to let tests run their own")
	}
	if r.cmd != nil {
		return
	}
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		// Append-only with fsync every write, so a stopped (or killed)
		// server comes back with its data, as a production Redis would.
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir,
		"--protected-mode", "no", "--loglevel", "warning")
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("testenv: start redis-server: %v", err)
	}
	var logMu sync.Mutex
	var logTail []string
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			logMu.Lock()
			logTail = append(logTail, s.Text())
			logMu.Unlock()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			logMu.Lock()
			defer logMu.Unlock()
			r.t.Fatalf("testenv: redis-server on port %d not ready after 10s: %s", r.port, strings.Join(logTail, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.cmd = cmd
}

// Stop kills the redis-server process; clients see connection errors. The
// data survives (append-only file) for the next Start.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		if r.port == 0 {
			r.t.Fatalf("testenv: cannot stop the Redis at REDIS_URL")
		}
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

func (r *Redis) cleanupPrefix() {
	opt, err := redis.ParseURL(r.url)
	if err != nil {
		return
	}
	opt.DisableIdentity = true
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, r.prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RepoRoot returns the module's root directory, found from the working
// directory of the test.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := ModuleRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dir
}

// ModuleRoot is RepoRoot for code that has no testing.TB at hand (a
// TestMain, a sync.Once).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// HandoffBinary builds cmd/handoff once per test binary and returns its
// path, for tests that run the real command as a separate process.
var HandoffBinary = sync.OnceValues(func() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "handoff-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "handoff")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/handoff")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: go build ./cmd/handoff: %v\n%s", err, out)
	}
	return bin, nil
})
