package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRedisCluster checks the cluster serves every slot from three
// masters, and that killing one gets its replica promoted.
func TestRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six redis-server processes")
	}
	start := time.Now()
	c := testenv.StartRedisCluster(t, 2*time.Second)
	t.Logf("cluster up in %v", time.Since(start).Round(time.Millisecond))
	masters := c.Masters()
	if len(masters) != 3 {
		t.Fatalf("masters = %v; want 3", masters)
	}
	cl := c.Client()
	if err := cl.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.Kill(masters[0])
	killed := time.Now()
	c.WaitHealthy(30 * time.Second)
	t.Logf("replica promoted in %v", time.Since(killed).Round(time.Millisecond))
	for _, m := range c.Masters() {
		if m == masters[0] {
			t.Fatalf("killed node %s still listed as a master", m)
		}
	}
}

// TestNATSCluster checks an R3 stream gets a leader, and a new one when
// its leader stops.
func TestNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats servers")
	}
	start := time.Now()
	c := testenv.StartNATSCluster(t)
	t.Logf("cluster up in %v", time.Since(start).Round(time.Millisecond))
	_, js := c.Connect()
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "r3.a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	leader := c.StreamLeader(js, "R3")
	c.Stop(leader)
	stopped := time.Now()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := js.Publish(pctx, "r3.a", []byte("y"))
		cancel()
		if err == nil {
			break
		}
		if time.Since(stopped) > 60*time.Second {
			t.Fatalf("no new stream leader 60s after stopping %s: %v", leader, err)
		}
	}
	t.Logf("new stream leader %s elected in %v", c.StreamLeader(js, "R3"), time.Since(stopped).Round(time.Millisecond))
	if got := c.StreamLeader(js, "R3"); got == leader {
		t.Fatalf("stream leader still %s after it stopped", got)
	}
}
