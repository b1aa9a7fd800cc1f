package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of 3 masters and 3 replicas, six
// redis-server processes on loopback, for failover tests: a test kills a
// master (SIGKILL) and the cluster promotes its replica after NodeTimeout.
type RedisCluster struct {
	t testing.TB
	// NodeTimeout is the cluster-node-timeout: how long a master must be
	// unreachable before its replica takes over.
	NodeTimeout time.Duration
	mu          sync.Mutex
	nodes       []*redisNode
}

type redisNode struct {
	port, bus int
	dir       string
	cmd       *exec.Cmd
}

func (n *redisNode) addr() string { return fmt.Sprintf("127.0.0.1:%d", n.port) }

// needRedisBinaries fails the test, naming what to install, without the
// Redis binaries a multi-server test runs.
func needRedisBinaries(t testing.TB, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("testenv: this test needs %s: install redis-server (Debian: apt-get install redis-server, which brings redis-cli; .ci/run does this)", b)
		}
	}
}

// StartRedisCluster creates a Redis Cluster with `redis-cli --cluster
// create` and waits until every slot is served and every master has its
// replica in sync. The processes are killed when the test ends.
func StartRedisCluster(t testing.TB, nodeTimeout time.Duration) *RedisCluster {
	t.Helper()
	needRedisBinaries(t, "redis-server", "redis-cli")
	c := &RedisCluster{t: t, NodeTimeout: nodeTimeout}
	t.Cleanup(c.stopAll)
	for range 6 {
		n := &redisNode{port: FreePort(t), bus: FreePort(t), dir: t.TempDir()}
		c.nodes = append(c.nodes, n)
		c.startNode(n)
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.addr())
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(60 * time.Second)
	return c
}

func (c *RedisCluster) startNode(n *redisNode) {
	c.t.Helper()
	n.cmd = startRedisServer(c.t, n.port,
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-port", strconv.Itoa(n.bus),
		"--cluster-node-timeout", strconv.FormatInt(c.NodeTimeout.Milliseconds(), 10),
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--repl-diskless-sync-delay", "0", "--dir", n.dir)
}

func (c *RedisCluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.cmd != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
			n.cmd = nil
		}
	}
}

// URL is a redis+cluster:// URL naming every node as a seed.
func (c *RedisCluster) URL() string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr()
	}
	return "redis+cluster://" + strings.Join(addrs, ",")
}

// Masters returns the addresses of the masters serving slots, as a
// running node sees them now.
func (c *RedisCluster) Masters() []string {
	c.t.Helper()
	for _, n := range c.liveNodes() {
		out, err := redisCLI(n.port, "cluster", "nodes")
		if err != nil {
			continue
		}
		var masters []string
		for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			// <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <state> <slots...>
			if len(f) >= 9 && strings.Contains(f[2], "master") && !strings.Contains(f[2], "fail") {
				addr, _, _ := strings.Cut(f[1], "@")
				masters = append(masters, addr)
			}
		}
		return masters
	}
	c.t.Fatalf("testenv: no Redis Cluster node answers CLUSTER NODES")
	return nil
}

// Kill SIGKILLs the node at addr, as a crash would.
func (c *RedisCluster) Kill(addr string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.addr() == addr && n.cmd != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
			n.cmd = nil
			return
		}
	}
	c.t.Fatalf("testenv: no running Redis Cluster node at %s", addr)
}

// Restart starts a killed node again on its port and data; it rejoins the
// cluster (a killed master comes back as a replica of its successor).
func (c *RedisCluster) Restart(addr string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.addr() == addr && n.cmd == nil {
			c.startNode(n)
			return
		}
	}
	c.t.Fatalf("testenv: no stopped Redis Cluster node at %s", addr)
}

func (c *RedisCluster) liveNodes() []*redisNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []*redisNode
	for _, n := range c.nodes {
		if n.cmd != nil {
			live = append(live, n)
		}
	}
	return live
}

// WaitHealthy waits until every running node reports cluster_state:ok and
// three masters each have a replica whose link is up, failing the test
// after limit. After a kill it returns once the replica was promoted.
func (c *RedisCluster) WaitHealthy(limit time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	var why string
	for {
		why = c.unhealthy()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testenv: Redis Cluster not healthy after %v: %s", limit, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *RedisCluster) unhealthy() string {
	live := c.liveNodes()
	for _, n := range live {
		out, err := redisCLI(n.port, "cluster", "info")
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(out, "cluster_state:ok") {
			return n.addr() + " cluster_state is not ok"
		}
	}
	masters := 0
	for _, n := range live {
		out, err := redisCLI(n.port, "info", "replication")
		if err != nil {
			return err.Error()
		}
		if strings.Contains(out, "role:master") {
			masters++
			continue
		}
		if !strings.Contains(out, "master_link_status:up") {
			return n.addr() + " replica link is down"
		}
	}
	if masters < 3 {
		return fmt.Sprintf("%d masters", masters)
	}
	return ""
}

// Client returns a go-redis Cluster client (go-redis' defaults, not the
// service's) closed when the test ends, for checking data behind the
// service's back.
func (c *RedisCluster) Client() *redis.ClusterClient {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr()
	}
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, DisableIdentity: true})
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func redisCLI(port int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)...).Output()
	if err != nil {
		return "", fmt.Errorf("redis-cli -p %d %s: %w", port, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// RedisSentinel is a master, its replica and three sentinels (quorum 2)
// on loopback, for failover tests: a test kills the master and the
// sentinels promote the replica after DownAfter plus an election.
type RedisSentinel struct {
	t testing.TB
	// DownAfter is the sentinels' down-after-milliseconds.
	DownAfter time.Duration
	// Master is the sentinels' name of the monitored master.
	Master    string
	mu        sync.Mutex
	servers   []*redisNode // [0] starts as master
	sentinels []*redisNode
}

// StartRedisSentinel starts the master, the replica and the sentinels and
// waits until the sentinels agree on the master and know the replica.
func StartRedisSentinel(t testing.TB, downAfter time.Duration) *RedisSentinel {
	t.Helper()
	needRedisBinaries(t, "redis-server", "redis-cli")
	s := &RedisSentinel{t: t, DownAfter: downAfter, Master: "handoff"}
	t.Cleanup(s.stopAll)
	for i := range 2 {
		n := &redisNode{port: FreePort(t), dir: t.TempDir()}
		s.servers = append(s.servers, n)
		args := []string{"--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--repl-diskless-sync-delay", "0", "--dir", n.dir}
		if i > 0 {
			args = append(args, "--replicaof", "127.0.0.1", strconv.Itoa(s.servers[0].port))
		}
		n.cmd = startRedisServer(t, n.port, args...)
	}
	for range 3 {
		n := &redisNode{port: FreePort(t), dir: t.TempDir()}
		conf := filepath.Join(n.dir, "sentinel.conf")
		text := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
loglevel warning
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 10000
sentinel parallel-syncs %s 1
`, n.port, n.dir, s.Master, s.servers[0].port, s.Master, downAfter.Milliseconds(), s.Master, s.Master)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		n.cmd = startRedisProcess(t, "redis-server", n.port, conf, "--sentinel")
		s.sentinels = append(s.sentinels, n)
	}
	s.WaitHealthy(60 * time.Second)
	return s
}

func (s *RedisSentinel) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range append(s.servers, s.sentinels...) {
		if n.cmd != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
			n.cmd = nil
		}
	}
}

// URL is a redis+sentinel:// URL naming the sentinels and the master.
func (s *RedisSentinel) URL() string {
	addrs := make([]string, len(s.sentinels))
	for i, n := range s.sentinels {
		addrs[i] = n.addr()
	}
	return "redis+sentinel://" + strings.Join(addrs, ",") + "/" + s.Master
}

// MasterAddr is the master's address as the first sentinel that answers
// reports it.
func (s *RedisSentinel) MasterAddr() string {
	s.t.Helper()
	for _, n := range s.sentinels {
		out, err := redisCLI(n.port, "sentinel", "get-master-addr-by-name", s.Master)
		if err != nil {
			continue
		}
		f := strings.Fields(out)
		if len(f) == 2 {
			return f[0] + ":" + f[1]
		}
	}
	s.t.Fatalf("testenv: no sentinel knows master %s", s.Master)
	return ""
}

// KillMaster SIGKILLs the current master and returns its address.
func (s *RedisSentinel) KillMaster() string {
	s.t.Helper()
	addr := s.MasterAddr()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.servers {
		if n.addr() == addr && n.cmd != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
			n.cmd = nil
			return addr
		}
	}
	s.t.Fatalf("testenv: master %s is not running", addr)
	return ""
}

// WaitHealthy waits until every sentinel names the same running master
// and that master has a replica in sync (when one is running), failing
// the test after limit.
func (s *RedisSentinel) WaitHealthy(limit time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		why := s.unhealthy()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("testenv: Redis Sentinel setup not healthy after %v: %s", limit, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *RedisSentinel) unhealthy() string {
	var master string
	for _, n := range s.sentinels {
		out, err := redisCLI(n.port, "sentinel", "get-master-addr-by-name", s.Master)
		if err != nil {
			return err.Error()
		}
		addr := strings.Join(strings.Fields(out), ":")
		if master != "" && addr != master {
			return "sentinels disagree on the master"
		}
		master = addr
		info, err := redisCLI(n.port, "sentinel", "master", s.Master)
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(info, "num-other-sentinels\n2\n") {
			return n.addr() + " does not know the other sentinels yet"
		}
	}
	_, port, _ := strings.Cut(master, ":")
	p, _ := strconv.Atoi(port)
	out, err := redisCLI(p, "info", "replication")
	if err != nil {
		return "master " + master + ": " + err.Error()
	}
	if !strings.Contains(out, "role:master") {
		return master + " is not a master"
	}
	running := 0
	s.mu.Lock()
	for _, n := range s.servers {
		if n.cmd != nil {
			running++
		}
	}
	s.mu.Unlock()
	if running > 1 && !strings.Contains(out, "state=online") {
		return "master " + master + " has no replica in sync"
	}
	return ""
}

// RestartStopped starts the killed server again; the sentinels make it a
// replica of the new master.
func (s *RedisSentinel) RestartStopped() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.servers {
		if n.cmd == nil {
			n.cmd = startRedisServer(s.t, n.port, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--repl-diskless-sync-delay", "0", "--dir", n.dir)
		}
	}
}

// WaitReplicated waits until every replica of every running master has
// acknowledged all the master's writes so far (its offset equals the
// master's), failing the test after limit. Replication is asynchronous:
// a test that kills a master to test the client, not Redis' own window of
// loss, calls it before the kill.
func (c *RedisCluster) WaitReplicated(limit time.Duration) {
	c.t.Helper()
	var ports []int
	for _, n := range c.liveNodes() {
		ports = append(ports, n.port)
	}
	waitReplicated(c.t, ports, limit)
}

// WaitReplicated is RedisCluster.WaitReplicated for the sentinel's master.
func (s *RedisSentinel) WaitReplicated(limit time.Duration) {
	s.t.Helper()
	s.mu.Lock()
	var ports []int
	for _, n := range s.servers {
		if n.cmd != nil {
			ports = append(ports, n.port)
		}
	}
	s.mu.Unlock()
	waitReplicated(s.t, ports, limit)
}

// waitReplicated polls INFO replication on every master among ports until
// each of its replicas reports the master's offset. Replicas acknowledge
// about once a second, so this takes up to a second or two.
func waitReplicated(t testing.TB, ports []int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		lagging := ""
		for _, port := range ports {
			out, err := redisCLI(port, "info", "replication")
			if err != nil {
				lagging = err.Error()
				break
			}
			if !strings.Contains(out, "role:master") {
				continue
			}
			var offset string
			var replicas []string
			for line := range strings.SplitSeq(out, "\n") {
				line = strings.TrimSpace(line)
				if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
					offset = v
				}
				if strings.HasPrefix(line, "slave") && strings.Contains(line, "offset=") {
					replicas = append(replicas, line)
				}
			}
			if len(replicas) == 0 {
				lagging = fmt.Sprintf("master on port %d has no replica", port)
				break
			}
			for _, r := range replicas {
				if !strings.Contains(r+",", ",offset="+offset+",") {
					lagging = fmt.Sprintf("master on port %d at offset %s, replica %s", port, offset, r)
				}
			}
		}
		if lagging == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: Redis replicas not caught up after %v: %s", limit, lagging)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
