package worker_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/publisher"
)

var (
	faultConversations = flag.Int("fault.conversations", 300, "conversations in the fault tests")
	faultMessages      = flag.Int("fault.messages", 10, "events per conversation in the fault tests (one handoff, then messages)")
	faultNATSConvs     = flag.Int("fault.nats-conversations", 100, "conversations in the fault test on the NATS KV store (CI runs it smaller; set it to -fault.conversations for the full size)")
)

// proc is one `handoff worker` process.
type proc struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

type procSet struct {
	t    testing.TB
	bin  string
	args []string
	mu   sync.Mutex
	ps   []*proc
	logs []*bytes.Buffer
}

func (s *procSet) start(i int) {
	s.t.Helper()
	var buf bytes.Buffer
	cmd := exec.Command(s.bin, append([]string{"worker"}, s.args...)...)
	cmd.Stdout = &syncWriter{w: &buf}
	cmd.Stderr = cmd.Stdout
	cmd.Env = append(os.Environ(), "HANDOFF_LOG_LEVEL=info")
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start worker: %v", err)
	}
	s.mu.Lock()
	s.ps[i] = &proc{cmd: cmd, log: &buf}
	s.logs = append(s.logs, &buf)
	s.mu.Unlock()
}

func (s *procSet) kill(i int) {
	s.mu.Lock()
	p := s.ps[i]
	s.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

func (s *procSet) stopAll() {
	for i := range s.ps {
		s.mu.Lock()
		p := s.ps[i]
		s.mu.Unlock()
		if p == nil {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				s.t.Errorf("worker %d exited %d after SIGTERM", i, code)
			}
		case <-time.After(30 * time.Second):
			s.t.Errorf("worker %d did not stop within 30s of SIGTERM", i)
			_ = p.cmd.Process.Kill()
		}
	}
}

func (s *procSet) dumpLogsOnFailure() {
	if !s.t.Failed() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range s.logs {
		lines := strings.Split(l.String(), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		s.t.Logf("worker process log %d (tail):\n%s", i, strings.Join(lines, "\n"))
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// publishRetrying publishes a new event and, while NATS is unreachable,
// publishes it again with the same ID until it is stored: what a bot or the
// gateway does, and what makes a copy after a NATS restart. It calls
// e.onPublish with the stored event.
func (e *env) publishRetrying(typ handoff.EventType, conv string, data any) handoff.Event {
	e.t.Helper()
	ev, err := handoff.NewEvent(typ, conv, data)
	if err != nil {
		e.t.Fatal(err)
	}
	e.republish(ev)
	if e.onPublish != nil {
		e.onPublish(ev)
	}
	return ev
}

// republish publishes ev as it is (same ID, so same Nats-Msg-Id), retrying
// while NATS is unreachable, for at most a minute.
func (e *env) republish(ev handoff.Event) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := e.pub.Publish(ctx, ev)
		cancel()
		if err == nil {
			return
		}
		if !errors.Is(err, publisher.ErrUnavailable) || time.Now().After(deadline) {
			e.t.Errorf("publish %s: %v", ev.ID, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// publishConversations publishes n conversations of m events each (a
// handoff, then messages), conversations interleaved, each in order, and
// returns the custom_ids LiveChat must end up with, per conversation.
func (e *env) publishConversations(first, n, m int, pause func()) map[string][]string {
	want := make(map[string][]string, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c := conv(first + i)
				ids := make([]string, 0, m)
				h := e.publishRetrying(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{
					Customer: handoff.Customer{Name: fmt.Sprintf("Customer %d", i)},
					Text:     "agent please",
				})
				ids = append(ids, h.ID+"/0")
				for j := 1; j < m; j++ {
					ev := e.publishRetrying(handoff.TypeMessageUser, c, handoff.UserMessage{Text: fmt.Sprintf("message %d of %s", j, c)})
					ids = append(ids, ev.ID)
					if pause != nil {
						pause()
					}
				}
				mu.Lock()
				want[c] = ids
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return want
}

// TestFaultsKilledWorkers is the acceptance test of the worker's
// guarantees: three worker processes are SIGKILLed and restarted at random
// while LiveChat fails, rate-limits, expires tokens, drops connections after
// applying requests and stalls. Halfway through, nats-server itself is
// SIGKILLed and restarted, while a publisher re-publishes a random 10 % of
// the events (same ID): copies of events already applied are stored again,
// since the restarted server no longer knows their IDs. In the end every
// message is in LiveChat once, in order, one chat per conversation, and
// nothing is dead-lettered.
//
// It runs once per store backend: the guarantees must not depend on Redis.
func TestFaultsKilledWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	t.Run("redis", func(t *testing.T) { faultsKilledWorkers(t, "redis", *faultConversations) })
	t.Run("nats", func(t *testing.T) { faultsKilledWorkers(t, "nats", *faultNATSConvs) })
}

func faultsKilledWorkers(t *testing.T, backend string, n int) {
	bin, err := testenv.HandoffBinary()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, testenv.StartNATSProcess(t))
	var (
		chosenMu sync.Mutex
		chosen   []handoff.Event // to be published again
	)
	e.onPublish = func(ev handoff.Event) {
		if rand.IntN(10) == 0 {
			chosenMu.Lock()
			chosen = append(chosen, ev)
			chosenMu.Unlock()
		}
	}
	if err := e.sim.SetFaults(livechatsim.Faults{
		Latency:        &livechatsim.Latency{FixedMS: 1, TailMS: 400, TailRatio: 0.01},
		Errors:         []livechatsim.ErrorFault{{Action: "*", Rate: 0.10, Type: "internal", Status: 500}},
		RateLimit:      &livechatsim.RateLimit{Rate: 0.05, RetryAfterS: 1},
		DropAfterApply: &livechatsim.Drop{Rate: 0.03},
		TokenLifetimeS: 6,
	}); err != nil {
		t.Fatal(err)
	}
	ps := &procSet{t: t, bin: bin, ps: make([]*proc, 3), args: []string{
		"--nats-url", e.nats.URL(),
		"--store", backend, "--redis-url", e.redis.URL(),
		"--livechat-api-url", e.simTS.URL, "--livechat-accounts-url", e.simTS.URL,
		"--livechat-client-id", "handoff-test", "--livechat-client-secret", "s", "--livechat-refresh-token", "r",
		"--metrics-addr", "",
		"--backoff-base", "10ms", "--backoff-max", "1s", "--max-attempts", "60",
		"--breaker-open-for", "300ms", "--shutdown-timeout", "5s",
		"--ack-wait", "4s",
	}}
	if p := e.redis.Prefix(); os.Getenv("REDIS_URL") != "" && backend == "redis" {
		t.Skipf("the fault test needs its own Redis (prefix %s would not reach the workers)", p)
	}
	// The worker processes use the default key prefix or bucket; read what
	// they wrote.
	e.st = e.defaultStore(backend)
	for i := range ps.ps {
		ps.start(i)
	}
	defer ps.dumpLogsOnFailure()

	stopKilling := make(chan struct{})
	killerDone := make(chan int)
	// No worker is killed in the moments around nats-server's kill: a
	// nats-server killed abruptly forgets the deliveries of its last ~100 ms,
	// and a worker killed in the same instant, between a LiveChat call
	// and its record, leaves no note that it called LiveChat: the one case
	// the worker cannot close on a single server (ARCHITECTURE.md, "A
	// delivery JetStream forgot").
	var killMu sync.Mutex
	go func() {
		kills := 0
		defer func() { killerDone <- kills }()
		for {
			select {
			case <-stopKilling:
				return
			case <-time.After(time.Duration(700+rand.IntN(1300)) * time.Millisecond):
			}
			i := rand.IntN(3)
			killMu.Lock()
			ps.kill(i)
			killMu.Unlock()
			kills++
			time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
			ps.start(i)
		}
	}()

	m := *faultMessages
	want := e.publishConversations(0, n, m, func() { time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) })

	// Halfway: kill nats-server, and re-publish the chosen events while it
	// is down (the publishes retry) and after it is back.
	waitFor(t, 60*time.Second, func() bool { return e.inboundLen() <= uint64(n*m/2) })
	killMu.Lock()
	time.Sleep(500 * time.Millisecond) // past the server's consumer-state writes of the last worker kill
	e.nats.Kill()
	rand.Shuffle(len(chosen), func(i, j int) { chosen[i], chosen[j] = chosen[j], chosen[i] })
	republished := make(chan struct{})
	go func() {
		defer close(republished)
		for _, ev := range chosen {
			e.republish(ev)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)
	e.nats.Start()
	killMu.Unlock()
	<-republished
	// Keep killing while the workers catch up, so the tail of the run is
	// as hostile as its head; stop when little is left, then drain.
	deadline := time.Now().Add(60 * time.Second)
	for e.inboundLen() > uint64(n*m/20) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	close(stopKilling)
	kills := <-killerDone
	e.waitDrained(150 * time.Second)
	ps.stopAll()

	e.checkExactlyOnceInOrder(want)
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Errorf("%d dead letters, first: %v", len(dl), dl[0])
	}
	// Every sequence beyond one per event is a copy JetStream stored; if
	// there were none, the restart did not make the worker face any.
	copies := int(e.inboundLastSeq()) - n*m
	if copies <= 0 {
		t.Errorf("JetStream stored no copy of the %d re-published events: the run did not test the worker's idempotency", len(chosen))
	}
	stats := e.sim.Stats()
	t.Logf("%d conversations × %d events, %d worker kills, 1 NATS kill, %d events re-published, %d copies stored; simulator answers: %v", n, m, kills, len(chosen), copies, stats)
	if kills < 3 {
		t.Errorf("only %d kills: the run was too short to test crashes", kills)
	}
	if stats["send_event"][500] == 0 || stats["send_event"][429] == 0 {
		t.Errorf("the injected faults did not happen: %v", stats)
	}
	if stats["customer_token"][200] <= int64(n) {
		t.Errorf("customer tokens issued %d times for %d customers: token expiry was not exercised", stats["customer_token"][200], n)
	}
}

// TestOutagesRedisAndNATS stops Redis for 10 s and restarts NATS while two
// workers run; they back off, resume, and the end state is exact.
func TestOutagesRedisAndNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("outage test skipped in -short mode")
	}
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("needs a Redis the test can stop")
	}
	e := newEnv(t)
	cfg := testConfig()
	reg1, _ := e.startWorker(cfg)
	e.startWorker(cfg)

	n, m := 100, 10
	published := make(chan map[string][]string)
	go func() {
		published <- e.publishConversations(0, n, m, func() { time.Sleep(2 * time.Millisecond) })
	}()
	time.Sleep(500 * time.Millisecond)
	e.mark("stopping Redis")
	e.redis.Stop()
	time.Sleep(10 * time.Second)
	e.redis.Start()
	e.mark("Redis started")
	want := <-published

	e.mark("stopping NATS")
	e.nats.Stop()
	e.mark("NATS stopped")
	time.Sleep(time.Second)
	e.nats.Start()
	e.mark("NATS started")
	more := e.publishConversations(n, 20, m, nil)
	e.mark("published the last conversations")
	for k, v := range more {
		want[k] = v
	}
	e.waitDrained(120 * time.Second)
	e.checkExactlyOnceInOrder(want)
	if dl := e.deadLetters(); len(dl) != 0 {
		t.Errorf("%d dead letters, first: %v", len(dl), dl[0])
	}
	if got := metricValue(t, reg1, "handoff_worker_retries_total", "reason", "store_unavailable"); got == 0 {
		t.Errorf("no retry for store_unavailable recorded during the Redis outage")
	}
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(testenv.RunTests(m))
}
