package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a 3-node nats-server cluster with JetStream on every
// node, for failover tests: streams created with Replicas 3 survive a
// node, and stopping the node that leads a stream or consumer makes the
// others elect a new leader. The nodes are nats-server processes (as
// StartNATSProcess runs them), not servers embedded in the test: under
// the race detector an embedded cluster runs five to ten times slower and
// a failover test would time the detector instead of the election, and a
// process can also be killed (Kill), as a crash would.
type NATSCluster struct {
	t     testing.TB
	nodes []*NATS
}

// StartNATSCluster starts the three servers (named n1, n2, n3), waits
// until JetStream has a meta leader, and stops them when the test ends.
func StartNATSCluster(t testing.TB) *NATSCluster {
	t.Helper()
	c := &NATSCluster{t: t}
	for i := range 3 {
		c.nodes = append(c.nodes, &NATS{t: t, dir: t.TempDir(), port: FreePort(t), process: true,
			name: fmt.Sprintf("n%d", i+1), clusterPort: FreePort(t)})
	}
	for _, n := range c.nodes {
		for _, o := range c.nodes {
			if o != n {
				n.routes = append(n.routes, fmt.Sprintf("nats://127.0.0.1:%d", o.clusterPort))
			}
		}
	}
	t.Cleanup(c.stopAll)
	// No node has JetStream before a quorum is up: launch all, then wait.
	for _, n := range c.nodes {
		n.mu.Lock()
		err := n.launch()
		n.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.nodes {
		n.mu.Lock()
		err := n.awaitReady()
		n.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	c.WaitJetStream(30 * time.Second)
	return c
}

func (c *NATSCluster) stopAll() {
	for _, n := range c.nodes {
		n.Stop()
	}
}

// URL lists every server's client URL, comma-separated (the form
// --nats-url and nats.Connect take).
func (c *NATSCluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Connect returns a connection to the cluster and a JetStream handle,
// closed when the test ends; it reconnects forever, to any server.
func (c *NATSCluster) Connect() (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		c.t.Fatalf("testenv: connect to the nats cluster: %v", err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatalf("testenv: jetstream: %v", err)
	}
	return nc, js
}

// WaitJetStream waits until JetStream can place a stream on all three
// servers (a meta leader is elected and every peer is known), failing the
// test after limit.
func (c *NATSCluster) WaitJetStream(limit time.Duration) {
	c.t.Helper()
	nc, js := c.Connect()
	defer nc.Close()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "TESTENV_PROBE", Subjects: []string{"testenv.probe"}, Replicas: 3, Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(ctx, "TESTENV_PROBE")
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testenv: JetStream of the nats cluster not ready after %v: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop shuts the named server down (SIGTERM: nats-server's own
// shutdown), failing the test if it is not running. It hands no
// leadership over, so the others elect new leaders.
func (c *NATSCluster) Stop(name string) {
	c.t.Helper()
	c.running(name).Stop()
}

// Kill ends the named server with SIGKILL: no goodbye to its clients or
// peers, as in a crash; the others notice it only when its routes time
// out.
func (c *NATSCluster) Kill(name string) {
	c.t.Helper()
	c.running(name).Kill()
}

func (c *NATSCluster) running(name string) *NATS {
	c.t.Helper()
	for _, n := range c.nodes {
		n.mu.Lock()
		up := n.name == name && n.cmd != nil
		n.mu.Unlock()
		if up {
			return n
		}
	}
	c.t.Fatalf("testenv: no running nats server %q", name)
	return nil
}

// Start starts a stopped server again on its ports and store; it rejoins
// the cluster and catches up.
func (c *NATSCluster) Start(name string) {
	c.t.Helper()
	for _, n := range c.nodes {
		n.mu.Lock()
		stopped := n.name == name && n.cmd == nil
		n.mu.Unlock()
		if stopped {
			n.Start()
			return
		}
	}
	c.t.Fatalf("testenv: no stopped nats server %q", name)
}

// StreamLeader names the server leading the stream.
func (c *NATSCluster) StreamLeader(js jetstream.JetStream, stream string) string {
	c.t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		c.t.Fatalf("testenv: stream %s: %v", stream, err)
	}
	info, err := s.Info(context.Background())
	if err != nil || info.Cluster == nil {
		c.t.Fatalf("testenv: stream %s info: %v", stream, err)
	}
	return info.Cluster.Leader
}

// ConsumerLeader names the server leading the consumer.
func (c *NATSCluster) ConsumerLeader(js jetstream.JetStream, stream, consumer string) string {
	c.t.Helper()
	info, err := consumerInfo(js, stream, consumer)
	if err != nil || info.Cluster == nil {
		c.t.Fatalf("testenv: consumer %s/%s info: %v", stream, consumer, err)
	}
	return info.Cluster.Leader
}

func consumerInfo(js jetstream.JetStream, stream, consumer string) (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return nil, err
	}
	return cons.Info(ctx)
}

// MoveConsumerLeader asks the consumer's leader to step down in favour of
// the named server, and waits until it has (failing the test after 30 s):
// a test that stops one server can then take the stream's and the
// consumer's leader down together.
func (c *NATSCluster) MoveConsumerLeader(nc *nats.Conn, js jetstream.JetStream, stream, consumer, to string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := consumerInfo(js, stream, consumer)
		if err == nil && info.Cluster != nil && info.Cluster.Leader == to {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testenv: consumer %s/%s leader did not move to %s: %+v %v", stream, consumer, to, info, err)
		}
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			body, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
			_, _ = nc.Request(fmt.Sprintf("$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", stream, consumer), body, 5*time.Second)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
