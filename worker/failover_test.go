package worker_test

import (
	"context"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// failoverBound is issue 14's bound on recovery: the backlog (or the
// events published after the failure) is applied within 15 s of a NATS
// leader's or a Redis master's death. The servers' own detection takes
// part of it: a Raft election is 4 to 9 s in nats-server, and the Redis
// tests use a 2 s cluster-node-timeout / down-after-milliseconds.
const failoverBound = 15 * time.Second

// checkBound fails the test when took exceeds issue 14's bound. It holds
// under the race detector too (CI runs -race): the servers (nats-server
// and redis-server) and the workers are processes of their own, built
// without it, so only the test's publisher and simulator run slower.
func checkBound(t *testing.T, took time.Duration, what string) {
	t.Helper()
	if took > failoverBound {
		t.Errorf("%s took %v; want within %v", what, took, failoverBound)
	}
}

// newFailoverEnv is an env on the given JetStream and store, for tests
// that bring their own (clustered) servers; worker processes reach them by
// URL. The simulator answers every call after latency.
func newFailoverEnv(t *testing.T, js jetstream.JetStream, replicas int, st store.Store, latency time.Duration) *env {
	t.Helper()
	e := &env{t: t, js: js, st: st}
	e.sim = livechatsim.New(livechatsim.Options{Logger: quietLog()})
	t.Cleanup(e.sim.Close)
	if err := e.sim.SetFaults(livechatsim.Faults{Latency: &livechatsim.Latency{FixedMS: int(latency.Milliseconds())}}); err != nil {
		t.Fatal(err)
	}
	e.simTS = httptest.NewServer(e.sim)
	t.Cleanup(e.simTS.Close)
	cfg := stream.DefaultConfig()
	cfg.Replicas = replicas
	if _, err := stream.Setup(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	e.pub = publisher.New(js, publisher.WithSource("test-bot"))
	return e
}

// failoverWorkers starts n worker processes on natsURL (streams of
// replicas copies: the workers apply the stream settings) and redisURL, with
// the default ack wait (30 s), so a test sees what an election costs in
// production, not in a test configuration.
func (e *env) failoverWorkers(n int, natsURL string, replicas int, redisURL string) *procSet {
	e.t.Helper()
	bin, err := testenv.HandoffBinary()
	if err != nil {
		e.t.Fatal(err)
	}
	ps := &procSet{t: e.t, bin: bin, ps: make([]*proc, n), args: []string{
		"--nats-url", natsURL, "--stream-replicas", strconv.Itoa(replicas),
		"--redis-url", redisURL,
		"--livechat-api-url", e.simTS.URL, "--livechat-accounts-url", e.simTS.URL,
		"--livechat-client-id", "handoff-test", "--livechat-client-secret", "s", "--livechat-refresh-token", "r",
		"--metrics-addr", "", "--shutdown-timeout", "5s",
	}}
	for i := range n {
		ps.start(i)
	}
	// Cleanups run last-in first-out: the workers stop before their logs
	// are read.
	e.t.Cleanup(ps.dumpLogsOnFailure)
	e.t.Cleanup(ps.stopAll)
	return ps
}

// waitApplied waits until the inbound stream is empty and returns how
// long that took from since, failing the test after limit. Unlike
// waitDrained it rides out JetStream's answers during an election.
func (e *env) waitApplied(since time.Time, limit time.Duration) time.Duration {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	var left uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := e.js.Stream(ctx, stream.InStream)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(ctx)
		}
		cancel()
		if err == nil {
			if info.State.Msgs == 0 {
				return time.Since(since)
			}
			left = info.State.Msgs
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("inbound stream still holds %d events after %v (last error %v)", left, limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLines counts the lines of the worker processes' logs holding s.
func (s *procSet) logLines(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.logs {
		n += strings.Count(l.String(), sub)
	}
	return n
}

// TestFailoverNATSLeader is issue 14's first acceptance test: three
// worker processes work through a backlog on a 3-node NATS cluster with R3
// streams; the server leading both the inbound stream and the workers'
// consumer is stopped. Every event is applied once, in order, and the
// backlog is done within the bound of the stop (50 s before the fix: the
// acks lost in the election waited for the ack wait).
func TestFailoverNATSLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("failover test skipped in -short mode")
	}
	cluster := testenv.StartNATSCluster(t)
	nc, js := cluster.Connect()
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("the worker processes use the default key prefix: needs its own Redis, unset REDIS_URL")
	}
	r := testenv.StartRedis(t)
	st, err := store.OpenRedis(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := newFailoverEnv(t, js, 3, st, 100*time.Millisecond)
	leader := cluster.StreamLeader(js, stream.InStream)
	cluster.MoveConsumerLeader(nc, js, stream.InStream, stream.Consumer, leader)

	ps := e.failoverWorkers(3, cluster.URL(), 3, r.URL())

	// The stop comes with half the events left, five per conversation:
	// 6.6-8.4 s of work with no failure on this machine (load 10), like
	// the issue's report ("an ~8-second backlog finished 50 s after the
	// kill"). The tail is slow because a conversation's events go one at
	// a time.
	n, m := 60, 10
	want := e.publishConversations(0, n, m, nil)
	for e.inboundLen() > uint64(n*m/2) {
		time.Sleep(20 * time.Millisecond)
	}
	left := e.inboundLen()
	// The clock starts when the stop is sent: the server's own shutdown
	// is part of what a failover costs.
	stopped := time.Now()
	tl := startTimeline(js)
	cluster.Stop(leader)
	exited := time.Since(stopped)
	took := e.waitApplied(stopped, 120*time.Second)
	t.Logf("stopped %s (stream and consumer leader; it exited after %v) with %d of %d events left; backlog done %v later; %s",
		leader, exited.Round(100*time.Millisecond), left, n*m, took.Round(100*time.Millisecond), tl.finish(leader, left))
	if left == 0 {
		t.Errorf("the backlog was done before the stop: nothing was tested")
	}
	checkBound(t, took, "finishing the backlog after the leader stopped")
	ps.stopAll() // before reading their logs
	e.checkExactlyOnceInOrder(want)
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Errorf("%d dead letters, first: %v", len(dl), dl[0])
	}
	// Hand-backs are logged once per outage and dependency, not per event.
	if n := ps.logLines("outage: handing events back"); n > 2*len(ps.ps) {
		t.Errorf("%d outage lines from %d workers; want at most one per dependency and worker", n, len(ps.ps))
	}
}

// TestFailoverRedisCluster is issue 14's second acceptance test: two
// worker processes on a Redis Cluster (3 masters, 3 replicas); a master is
// killed (SIGKILL) during a backlog, and more conversations arrive right
// after. All of it is applied within the bound of the kill (68 s before
// the fix: the client dialled the dead master until its slot map reload),
// once and in order.
func TestFailoverRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("failover test skipped in -short mode")
	}
	rc := testenv.StartRedisCluster(t, 2*time.Second)
	testRedisFailover(t, rc.URL(), func() string {
		victim := rc.Masters()[0]
		rc.Kill(victim)
		return victim
	})
}

// TestFailoverRedisSentinel is TestFailoverRedisCluster behind Sentinel:
// the master is killed and the sentinels promote its replica.
func TestFailoverRedisSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("failover test skipped in -short mode")
	}
	rs := testenv.StartRedisSentinel(t, 2*time.Second)
	testRedisFailover(t, rs.URL(), rs.KillMaster)
}

func testRedisFailover(t *testing.T, redisURL string, kill func() string) {
	st, err := store.OpenRedis(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A process, like the workers: the bound must not measure the race
	// detector.
	ns := testenv.StartNATSProcess(t)
	_, js := ns.Connect()
	e := newFailoverEnv(t, js, 1, st, 20*time.Millisecond)
	ps := e.failoverWorkers(2, ns.URL(), 1, redisURL)

	// A first batch shows the workers are up and in flight at the kill.
	n, m := 40, 5
	want := e.publishConversations(0, n, m, nil)
	for e.inboundLen() > uint64(n*m/2) {
		time.Sleep(20 * time.Millisecond)
	}
	left := e.inboundLen()
	victim := kill()
	killed := time.Now()
	// New handoffs arrive while the master is gone.
	for k, v := range e.publishConversations(n, 30, m, nil) {
		want[k] = v
	}
	took := e.waitApplied(killed, 120*time.Second)
	t.Logf("killed master %s with %d of %d events left, then published %d more; all applied %v after the kill",
		victim, left, n*m, 30*m, took.Round(100*time.Millisecond))
	checkBound(t, took, "applying the events after the kill")
	ps.stopAll() // before reading their logs
	e.checkExactlyOnceInOrder(want)
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Errorf("%d dead letters, first: %v", len(dl), dl[0])
	}
	// Hand-backs are logged once per outage and dependency, not per event.
	if n := ps.logLines("outage: handing events back"); n > 2*len(ps.ps) {
		t.Errorf("%d outage lines from %d workers; want at most one per dependency and worker", n, len(ps.ps))
	}
}
