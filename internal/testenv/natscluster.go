package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a 3-node nats-server cluster with JetStream on every
// node, embedded in the test process, for failover tests: streams created
// with Replicas 3 survive a node, and stopping the node that leads a
// stream or consumer makes the others elect a new leader (the Raft
// election takes 4 to 9 s in nats-server).
type NATSCluster struct {
	t     testing.TB
	mu    sync.Mutex
	nodes []*natsNode
}

type natsNode struct {
	name              string
	port, clusterPort int
	dir               string
	srv               *server.Server
}

// StartNATSCluster starts the three servers (named n1, n2, n3), waits
// until JetStream has a meta leader, and shuts them down when the test
// ends.
func StartNATSCluster(t testing.TB) *NATSCluster {
	t.Helper()
	c := &NATSCluster{t: t}
	for i := range 3 {
		c.nodes = append(c.nodes, &natsNode{
			name: fmt.Sprintf("n%d", i+1), port: FreePort(t), clusterPort: FreePort(t), dir: t.TempDir(),
		})
	}
	t.Cleanup(c.stopAll)
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		wg.Add(1)
		// Each server waits for its routes before it is ready: start
		// them together.
		go func() { defer wg.Done(); errs[i] = c.run(n) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	c.WaitJetStream(30 * time.Second)
	return c
}

func (c *NATSCluster) run(n *natsNode) error {
	var routes []string
	for _, o := range c.nodes {
		if o != n {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.clusterPort))
		}
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: n.name,
		Host:       "127.0.0.1",
		Port:       n.port,
		JetStream:  true,
		StoreDir:   n.dir,
		NoLog:      true,
		NoSigs:     true,
		Cluster: server.ClusterOpts{
			Name: "handoff-test",
			Host: "127.0.0.1",
			Port: n.clusterPort,
		},
		Routes:             server.RoutesFromStr(strings.Join(routes, ",")),
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  8 << 30,
	})
	if err != nil {
		return fmt.Errorf("nats server %s: %w", n.name, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats server %s not ready after 20s", n.name)
	}
	c.mu.Lock()
	n.srv = srv
	c.mu.Unlock()
	return nil
}

func (c *NATSCluster) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.srv != nil {
			n.srv.Shutdown()
			n.srv.WaitForShutdown()
			n.srv = nil
		}
	}
}

// URL lists every server's client URL, comma-separated (the form
// --nats-url and nats.Connect take).
func (c *NATSCluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
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

// Stop shuts the named server down, as a crash would for its peers: it
// hands no leadership over, so the others elect new leaders.
func (c *NATSCluster) Stop(name string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.name == name && n.srv != nil {
			n.srv.Shutdown()
			n.srv.WaitForShutdown()
			n.srv = nil
			return
		}
	}
	c.t.Fatalf("testenv: no running nats server %q", name)
}

// Start starts a stopped server again on its ports and store; it rejoins
// the cluster and catches up.
func (c *NATSCluster) Start(name string) {
	c.t.Helper()
	for _, n := range c.nodes {
		c.mu.Lock()
		stopped := n.name == name && n.srv == nil
		c.mu.Unlock()
		if stopped {
			if err := c.run(n); err != nil {
				c.t.Fatalf("testenv: %v", err)
			}
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
