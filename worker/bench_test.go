package worker_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
	"github.com/handoff-dev/handoff/stream"
	"github.com/handoff-dev/handoff/worker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The benchmarks run whole scenarios once each (use -benchtime=1x) and
// report figures as metrics; BenchmarkHandoff runs them all in one process
// so the ratios compare runs on the same machine at the same time:
//
//	go test ./worker -run '^$' -bench BenchmarkHandoff -benchtime=1x
//
// (a) the worker, 1,000 conversations × 20 events, no added latency;
// (b) a naive consumer doing the same calls without ordering or
//     idempotency, 16 goroutines: the baseline;
// (c) the worker with 100 ms LiveChat latency, 2,000 conversations;
// (d) publish-to-LiveChat latency at 500 events/s;
// (e) the worker process's peak RSS with 10,000 active conversations;
// (f) one hot conversation: 1,000 events published first, then 300
//     conversations × 3 events, LiveChat answering in 50 ms, default
//     settings: when the 300 are in LiveChat, the hot conversation's pace
//     against LiveChat's (20 events/s), and the redeliveries per 1,000
//     events that --max-held-per-conversation costs.
//
// (a) also reports the Redis memory of an active conversation: every key
// the worker wrote (MEMORY USAGE) divided by the conversations, and the
// record alone, after 20 events (so 20 applied event IDs) and at the cap of
// handoff.MaxAppliedEvents.

var benchScale = 1.0

func init() {
	if s := os.Getenv("HANDOFF_BENCH_SCALE"); s != "" {
		if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
			benchScale = f
		}
	}
}

func scaled(n int) int { return max(1, int(float64(n)*benchScale)) }

func BenchmarkHandoff(b *testing.B) {
	backends := []string{"redis", "nats"}
	if v := os.Getenv("HANDOFF_BENCH_STORES"); v != "" {
		backends = strings.Split(v, ",")
	}
	var base float64
	a := map[string]float64{}
	b.Run("b_baseline", func(b *testing.B) { base = benchBaseline(b, scaled(1000), 20) })
	for _, st := range backends {
		b.Run(st+"/a_worker", func(b *testing.B) {
			var e *env
			a[st], e = benchWorker(b, st, scaled(1000), 20, 0)
			if st == "redis" {
				e.reportRedisMemory(b, scaled(1000))
			}
		})
		b.Run(st+"/c_worker_100ms", func(b *testing.B) { benchWorker(b, st, scaled(2000), 10, 100) })
		b.Run(st+"/d_latency_500ps", func(b *testing.B) { benchLatency(b, st, 500, 10*time.Second) })
		b.Run(st+"/e_rss_10k", func(b *testing.B) { benchRSS(b, st, scaled(10000)) })
		b.Run(st+"/f_hot", func(b *testing.B) { benchHot(b, st, scaled(1000), scaled(300), 50) })
	}
	for _, st := range backends {
		if a[st] > 0 && base > 0 {
			fmt.Printf("%s: (a)/(b) = %.0f / %.0f events/s = %.2f\n", st, a[st], base, a[st]/base)
		}
	}
	if a["redis"] > 0 && a["nats"] > 0 {
		fmt.Printf("(a) nats/redis = %.2f\n", a["nats"]/a["redis"])
	}
}

// publishAll stores conversations × perConv events (a handoff, then
// messages) in the inbound stream before any worker runs, with async
// publishes so publishing is not what is measured.
func (e *env) publishAll(b testing.TB, conversations, perConv int) int {
	if b == nil {
		b = e.t
	}
	b.Helper()
	total := 0
	for j := range perConv {
		var futures []jetstream.PubAckFuture
		for i := range conversations {
			c := conv(i)
			var ev handoff.Event
			var err error
			if j == 0 {
				ev, err = handoff.NewEvent(handoff.TypeHandoffRequested, c, handoff.HandoffRequested{Text: "agent"})
			} else {
				ev, err = handoff.NewEvent(handoff.TypeMessageUser, c, handoff.UserMessage{Text: fmt.Sprintf("message %d", j)})
			}
			if err != nil {
				b.Fatal(err)
			}
			body, _ := ev.Marshal()
			f, err := e.js.PublishMsgAsync(&nats.Msg{Subject: stream.InSubject(c), Data: body, Header: nats.Header{"Ce-Type": {string(ev.Type)}}}, jetstream.WithMsgID(ev.ID))
			if err != nil {
				b.Fatal(err)
			}
			futures = append(futures, f)
			total++
			if len(futures) == 1000 {
				// Wait now and then: nats.go stalls a publisher with more
				// than 4,000 unacknowledged async publishes.
				waitAcks(b, futures)
				futures = futures[:0]
			}
		}
		waitAcks(b, futures)
	}
	return total
}

func waitAcks(b testing.TB, futures []jetstream.PubAckFuture) {
	b.Helper()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
}

func benchWorker(b *testing.B, backend string, conversations, perConv, latencyMS int) (float64, *env) {
	e := newEnvStore(b, backend)
	if latencyMS > 0 {
		if err := e.sim.SetFaults(livechatsim.Faults{Latency: &livechatsim.Latency{FixedMS: latencyMS}}); err != nil {
			b.Fatal(err)
		}
	}
	total := e.publishAll(b, conversations, perConv)
	b.ResetTimer()
	start := time.Now()
	cfg := testConfig()
	cfg.MaxInFlight = 4096
	e.startWorker(cfg)
	e.waitDrained(10 * time.Minute)
	elapsed := time.Since(start)
	b.StopTimer()
	rate := float64(total) / elapsed.Seconds()
	b.ReportMetric(rate, "events/s")
	fmt.Printf("worker (%s): %d conversations × %d events, LiveChat latency %d ms: %d events in %v = %.0f events/s\n",
		backend, conversations, perConv, latencyMS, total, elapsed.Round(time.Millisecond), rate)
	return rate, e
}

// benchHot publishes a backlog of hot events to one conversation, then
// conversations × 3 events, and runs one worker on default settings.
func benchHot(b *testing.B, backend string, hot, conversations, latencyMS int) {
	e := newEnvStore(b, backend)
	if err := e.sim.SetFaults(livechatsim.Faults{Latency: &livechatsim.Latency{FixedMS: latencyMS}}); err != nil {
		b.Fatal(err)
	}
	const hotConv = "projects/acme/agent/sessions/hot"
	e.publishBurst(b, hotConv, hot)
	total := hot + e.publishAll(b, conversations, 3)
	str, err := e.js.Stream(context.Background(), stream.InStream)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	reg, _ := e.startWorker(worker.DefaultConfig())
	var others time.Duration
	for others == 0 {
		info, err := str.Info(context.Background(), jetstream.WithSubjectFilter(stream.InSubject(hotConv)))
		if err != nil {
			b.Fatal(err)
		}
		if info.State.Msgs == info.State.Subjects[stream.InSubject(hotConv)] {
			others = time.Since(start)
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatal("the ordinary conversations were not applied within 10 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.waitDrained(10 * time.Minute)
	elapsed := time.Since(start)
	b.StopTimer()
	redeliveries := e.redeliveries(total)
	perK := 1000 * float64(redeliveries) / float64(total)
	hotRate := float64(hot) / elapsed.Seconds()
	b.ReportMetric(others.Seconds(), "others_s")
	b.ReportMetric(hotRate, "hot_events/s")
	b.ReportMetric(perK, "redeliveries/1000")
	fmt.Printf("hot (%s): %d hot events, then %d conversations × 3, LiveChat latency %d ms: the others applied after %v; the hot conversation took %v (%.1f events/s, LiveChat's pace %d/s); %d redeliveries (%.0f per 1,000 events, %.1f per hot event), %v fairness hand-backs, %v recalled\n",
		backend, hot, conversations, latencyMS, others.Round(10*time.Millisecond), elapsed.Round(100*time.Millisecond), hotRate, 1000/latencyMS,
		redeliveries, perK, float64(redeliveries)/float64(hot), metricValue(b, reg, "handoff_worker_fairness_hand_backs_total"),
		metricValue(b, reg, "handoff_worker_fairness_recalls_total"))
}

// reportRedisMemory measures what the conversations cost Redis: every key
// under the test's prefix (records, chat index, customer tokens, the mode
// sets), divided by the conversations; the records alone; and one record
// holding the cap of applied event IDs.
func (e *env) reportRedisMemory(b *testing.B, conversations int) {
	ctx := context.Background()
	rdb := e.redis.Client()
	var total, records, nRecords int64
	iter := rdb.Scan(ctx, 0, e.redis.Prefix()+"*", 1000).Iterator()
	for iter.Next(ctx) {
		n, err := rdb.MemoryUsage(ctx, iter.Val()).Result()
		if err != nil {
			b.Fatal(err)
		}
		total += n
		if strings.HasPrefix(iter.Val(), e.redis.Prefix()+"conv:") {
			records += n
			nRecords++
		}
	}
	if err := iter.Err(); err != nil {
		b.Fatal(err)
	}
	if nRecords == 0 {
		b.Fatal("no conversation record under the test's prefix")
	}
	sample, err := e.st.Conversation(ctx, conv(0))
	if err != nil {
		b.Fatal(err)
	}
	full, err := e.st.UpdateConversation(ctx, "bench-at-cap", func(c *handoff.Conversation) error {
		*c = sample
		for i := range handoff.MaxAppliedEvents {
			c.Applied.Add(fmt.Sprintf("0193a5f2-7c1e-7b7a-9d1e-%012d", i), time.Now(), 24*time.Hour)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	atCap, err := rdb.MemoryUsage(ctx, e.redis.Prefix()+"conv:{"+full.ID+"}").Result()
	if err != nil {
		b.Fatal(err)
	}
	// The scan ran before the capped record was written: it is in neither.
	perConv := float64(total) / float64(conversations)
	perRecord := float64(records) / float64(nRecords)
	b.ReportMetric(perConv, "redis_B/conversation")
	b.ReportMetric(perRecord, "record_B")
	b.ReportMetric(float64(atCap), "record_at_cap_B")
	fmt.Printf("redis: %.0f bytes per active conversation (all keys), record %.0f bytes with %d applied IDs, %d bytes at the cap of %d\n",
		perConv, perRecord, len(sample.Applied), atCap, handoff.MaxAppliedEvents)
}

// benchBaseline is the naive consumer the worker is compared with: per
// message two Redis commands, one POST to the simulator and an ack, from 16
// goroutines, with no ordering, idempotency or retries.
func benchBaseline(b *testing.B, conversations, perConv int) float64 {
	e := newEnv(b)
	ctx := context.Background()
	lc := e.liveChat(nil)
	lc.SetOrganizationID(livechatsim.DefaultOrganizationID)
	cust, err := lc.IssueCustomerToken(ctx, "agent", "")
	if err != nil {
		b.Fatal(err)
	}
	chat, err := lc.StartChat(ctx, cust.AccessToken, livechat.StartChatRequest{Continuous: true, Events: []livechat.Event{{Type: "message", Text: "hi", Recipients: "all"}}})
	if err != nil {
		b.Fatal(err)
	}
	org := lc.KnownOrganizationID()
	total := e.publishAll(b, conversations, perConv)
	rdb := e.redis.Client()
	hc := livechat.DefaultHTTPClient()
	url := e.simTS.URL + "/v3.6/customer/action/send_event?organization_id=" + org

	// A work-queue stream allows one consumer per subject: the baseline
	// takes the worker's place.
	if err := e.js.DeleteConsumer(ctx, stream.InStream, stream.Consumer); err != nil {
		b.Fatal(err)
	}
	cons, err := e.js.CreateOrUpdateConsumer(ctx, stream.InStream, jetstream.ConsumerConfig{Durable: "baseline", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	var done atomic.Int64
	msgs := make(chan jetstream.Msg, 256)
	cc, err := cons.Consume(func(m jetstream.Msg) { msgs <- m }, jetstream.PullMaxMessages(256))
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range msgs {
				key := e.redis.Prefix() + "baseline:" + m.Subject()
				rdb.Get(ctx, key)
				rdb.Set(ctx, key, m.Data(), time.Hour)
				body := fmt.Sprintf(`{"chat_id":%q,"event":{"type":"message","text":"x","recipients":"all"}}`, chat.ChatID)
				req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+cust.AccessToken)
				req.Header.Set("Content-Type", "application/json")
				if resp, err := hc.Do(req); err == nil {
					resp.Body.Close()
				}
				_ = m.Ack()
				done.Add(1)
			}
		}()
	}
	for done.Load() < int64(total) {
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cc.Stop()
	close(msgs)
	wg.Wait()
	rate := float64(total) / elapsed.Seconds()
	b.ReportMetric(rate, "events/s")
	fmt.Printf("baseline: %d events in %v = %.0f events/s\n", total, elapsed.Round(time.Millisecond), rate)
	return rate
}

// benchLatency publishes at a steady rate and measures, per message, the
// time from the event's publication to the simulator filing it.
func benchLatency(b *testing.B, backend string, perSecond int, d time.Duration) {
	e := newEnvStore(b, backend)
	e.startWorker(testConfig())
	ctx := context.Background()
	const conversations = 200
	for i := range conversations {
		e.publish(handoff.TypeHandoffRequested, conv(i), handoff.HandoffRequested{Text: "agent"})
	}
	e.waitDrained(time.Minute)
	sent := map[string]time.Time{}
	b.ResetTimer()
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		ev, _ := handoff.NewEvent(handoff.TypeMessageUser, conv(i%conversations), handoff.UserMessage{Text: "ping"})
		if _, err := e.pub.Publish(ctx, ev); err != nil {
			b.Fatal(err)
		}
		sent[ev.ID] = ev.Time
	}
	e.waitDrained(time.Minute)
	b.StopTimer()
	var lat []time.Duration
	for _, c := range e.sim.Chats() {
		for _, ev := range c.Events {
			if t, ok := sent[ev.CustomID]; ok {
				lat = append(lat, ev.CreatedAt.Sub(t))
			}
		}
	}
	if len(lat) != len(sent) {
		b.Fatalf("%d of %d messages reached the simulator", len(lat), len(sent))
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(p(0.95).Microseconds())/1000, "p95_ms")
	b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99_ms")
	fmt.Printf("latency (%s) at %d events/s over %v (%d messages): p50 %v p95 %v p99 %v max %v\n",
		backend, perSecond, d, len(lat), p(0.5).Round(10*time.Microsecond), p(0.95).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
}

// benchRSS runs the worker as its own process and reads its peak resident
// memory after it has opened chats for n conversations and sent each a
// message.
func benchRSS(b *testing.B, backend string, n int) {
	bin, err := testenv.HandoffBinary()
	if err != nil {
		b.Fatal(err)
	}
	e := newEnv(b)
	if os.Getenv("REDIS_URL") != "" && backend == "redis" {
		b.Skip("needs the test's own Redis")
	}
	total := e.publishAll(b, n, 2)
	cmd := exec.Command(bin, "worker", "--nats-url", e.nats.URL(), "--store", backend, "--redis-url", e.redis.URL(),
		"--livechat-api-url", e.simTS.URL, "--livechat-accounts-url", e.simTS.URL,
		"--livechat-client-id", "bench", "--livechat-client-secret", "s", "--livechat-refresh-token", "r",
		"--metrics-addr", "", "--log-level", "warn")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	e.waitDrained(10 * time.Minute)
	rss := peakRSS(b, cmd.Process.Pid)
	b.ReportMetric(float64(rss)/(1<<20), "peak_rss_MB")
	fmt.Printf("worker process (%s): %d conversations, %d events: peak RSS %.1f MB\n", backend, n, total, float64(rss)/(1<<20))
}

func peakRSS(b *testing.B, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc status")
	return 0
}
