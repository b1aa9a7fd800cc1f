// Package testenv starts the real servers handoff's tests run against: an
// embedded nats-server with JetStream, and a redis-server process (or the
// Redis named by REDIS_URL). There are no fakes: a test that needs NATS or
// Redis gets the real thing, or fails saying what is missing.
package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
)

// NATS is a JetStream server for a test, stored in a temp dir: embedded in
// the test process (StartNATS) or a nats-server process of its own
// (StartNATSProcess). Either can be stopped and started again on the same
// port and store, to test restarts; the process can also be killed.
type NATS struct {
	t    testing.TB
	dir  string
	port int
	mu   sync.Mutex
	srv  *server.Server
	// process: run nats-server as a child process (cmd while it runs).
	process bool
	cmd     *exec.Cmd
	exited  chan struct{}
	// name is the server's name; a node of a NATSCluster also has the
	// port its routes listen on and its peers' route URLs.
	name        string
	clusterPort int
	routes      []string
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

// StartNATSProcess starts nats-server as a separate process, built from the
// nats-server module handoff already depends on (so the same version as the
// embedded one), and stops it when the test ends. Unlike the embedded
// server it can be killed with SIGKILL (Kill): a crash, not a shutdown.
func StartNATSProcess(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{t: t, dir: t.TempDir(), port: FreePort(t), process: true}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// natsServerBinary builds nats-server once per test binary, and reuses a
// build of the same module version left by an earlier run (linking it takes
// seconds on a small machine).
var natsServerBinary = sync.OnceValues(func() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	// The version as go.mod requires it (test binaries carry no module
	// list to ask).
	version := "unknown"
	if mod, err := os.ReadFile(filepath.Join(root, "go.mod")); err == nil {
		for line := range strings.Lines(string(mod)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/nats-io/nats-server/v2" {
				version = f[1]
			}
		}
	}
	dir := filepath.Join(os.TempDir(), "handoff-test-nats-server", sanitize(version))
	bin := filepath.Join(dir, "nats-server")
	if version != "unknown" {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	_ = tmp.Close()
	cmd := exec.Command("go", "build", "-o", tmp.Name(), "github.com/nats-io/nats-server/v2")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("testenv: go build nats-server: %v\n%s", err, out)
	}
	// Rename is atomic: a concurrent test binary sees no half-written file.
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", err
	}
	return bin, nil
})

// Start (re)starts the server on its port and store.
func (n *NATS) Start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.process {
		n.startProcess()
		return
	}
	if n.srv != nil {
		return
	}
	srv, err := stream.RunEmbedded("127.0.0.1", n.port, n.dir)
	if err != nil {
		n.t.Fatalf("testenv: %v", err)
	}
	n.srv = srv
}

func (n *NATS) startProcess() {
	n.t.Helper()
	if n.cmd != nil {
		return
	}
	if err := n.launch(); err != nil {
		n.t.Fatal(err)
	}
	if err := n.awaitReady(); err != nil {
		n.t.Fatal(err)
	}
}

// launch starts the nats-server process without waiting for it; the
// nodes of a cluster are launched together, since none has JetStream
// before a quorum of them is up. n.mu is held.
func (n *NATS) launch() error {
	bin, err := natsServerBinary()
	if err != nil {
		return err
	}
	name := n.name
	if name == "" {
		name = "handoff-test"
	}
	// The embedded server's limits (stream.RunEmbedded), so both kinds
	// behave alike.
	conf := fmt.Sprintf("listen: \"127.0.0.1:%d\"\nserver_name: %q\njetstream {\n  store_dir: %q\n  max_memory_store: 256MB\n  max_file_store: 8GB\n}\n",
		n.port, name, filepath.Join(n.dir, "jetstream"))
	if n.clusterPort != 0 {
		routes, _ := json.Marshal(n.routes)
		conf += fmt.Sprintf("cluster {\n  name: handoff-test\n  listen: \"127.0.0.1:%d\"\n  routes: %s\n}\n", n.clusterPort, routes)
	}
	confFile := filepath.Join(n.dir, "nats.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	cmd := exec.Command(bin, "-c", confFile, "-l", n.logFile())
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: start nats-server %s: %w", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.cmd, n.exited = cmd, exited
	return nil
}

func (n *NATS) logFile() string { return filepath.Join(n.dir, "nats-server.log") }

// awaitReady waits until the launched server answers: JetStream for a
// single server, client connections for a node of a cluster (its
// JetStream needs its peers; NATSCluster.WaitJetStream waits for them).
// It ends the process if the server is not ready within 30 s. n.mu is
// held.
func (n *NATS) awaitReady() error {
	ready := jetStreamReady
	if n.clusterPort != 0 {
		ready = clientReady
	}
	deadline := time.Now().Add(30 * time.Second)
	for !ready(n.URL()) {
		select {
		case <-n.exited:
			n.cmd, n.exited = nil, nil
			log, _ := os.ReadFile(n.logFile())
			return fmt.Errorf("testenv: nats-server %s exited at start: %s", n.name, tail(string(log), 20))
		default:
		}
		if time.Now().After(deadline) {
			_ = n.cmd.Process.Kill()
			<-n.exited
			n.cmd, n.exited = nil, nil
			log, _ := os.ReadFile(n.logFile())
			return fmt.Errorf("testenv: nats-server %s on port %d not ready after 30s: %s", n.name, n.port, tail(string(log), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// clientReady reports whether a client can connect.
func clientReady(url string) bool {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return false
	}
	nc.Close()
	return true
}

// jetStreamReady reports whether a client can connect and JetStream
// answers (it has recovered its streams).
func jetStreamReady(url string) bool {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err == nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// Stop shuts the server down gracefully (the embedded server's Shutdown;
// SIGTERM for the process, on which nats-server shuts down the same way);
// clients see a disconnect.
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.process {
		n.signal(syscall.SIGTERM)
		return
	}
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// Kill ends the nats-server process with SIGKILL: no flush, no goodbye,
// as in a crash or an OOM kill. Only a server from StartNATSProcess can be
// killed.
func (n *NATS) Kill() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.process {
		n.t.Fatalf("testenv: an embedded NATS server cannot be killed; use StartNATSProcess")
	}
	n.signal(syscall.SIGKILL)
}

func (n *NATS) signal(sig syscall.Signal) {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	n.cmd, n.exited = nil, nil
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
	r.cmd = startRedisServer(r.t, r.port,
		// Append-only with fsync every write, so a stopped (or killed)
		// server comes back with its data, as a production Redis would.
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir)
}

// startRedisServer runs redis-server on 127.0.0.1:port with args added and
// waits until it accepts connections; it fails the test with the server's
// log if it does not within 10 s.
func startRedisServer(t testing.TB, port int, args ...string) *exec.Cmd {
	t.Helper()
	return startRedisProcess(t, "redis-server", port, append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--protected-mode", "no", "--loglevel", "warning"}, args...)...)
}

// startRedisProcess runs bin with args and waits until port accepts
// connections.
func startRedisProcess(t testing.TB, bin string, port int, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", bin, err)
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
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			logMu.Lock()
			defer logMu.Unlock()
			t.Fatalf("testenv: %s on port %d not ready after 10s: %s", bin, port, strings.Join(logTail, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
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
// path, for tests that run the real command as a separate process. A
// package that uses it runs its tests through RunTests, which removes the
// build afterwards (tens of megabytes per test binary).
var HandoffBinary = sync.OnceValues(func() (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "handoff-bin-")
	if err != nil {
		return "", err
	}
	builtMu.Lock()
	builtDir = dir
	builtMu.Unlock()
	bin := filepath.Join(dir, "handoff")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/handoff")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: go build ./cmd/handoff: %v\n%s", err, out)
	}
	return bin, nil
})

var (
	builtMu  sync.Mutex
	builtDir string // what HandoffBinary built, removed by RunTests
)

// RunTests runs the package's tests (call it from TestMain, after
// flag.Parse if the package has flags of its own) and then removes what
// HandoffBinary built. It returns the exit code for os.Exit.
func RunTests(m *testing.M) int {
	code := m.Run()
	builtMu.Lock()
	defer builtMu.Unlock()
	if builtDir != "" {
		_ = os.RemoveAll(builtDir)
	}
	return code
}
