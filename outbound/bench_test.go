package outbound_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/gateway"
	"github.com/handoff-dev/handoff/internal/testenv"
	"github.com/handoff-dev/handoff/outbound"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/stream"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// BenchmarkAgentMessageToCallback measures what a user of a REST bot waits
// for: an agent's message from LiveChat's webhook into the gateway until
// the bot's callback endpoint has it, verified. Everything runs in this
// process on loopback: embedded NATS, a real Redis, the gateway's HTTP
// handler, the outbound consumer and the receiver. Messages are sent at a
// fixed rate (HANDOFF_BENCH_RATE, default 200/s) for HANDOFF_BENCH_SECONDS
// (default 10), spread over 200 conversations, and the latency of each is
// timed from the start of its webhook POST to its arrival at the receiver.
//
//	go test ./outbound -run '^$' -bench AgentMessageToCallback -benchtime=1x
func BenchmarkAgentMessageToCallback(b *testing.B) {
	rate, secs, convs := envInt("HANDOFF_BENCH_RATE", 200), envInt("HANDOFF_BENCH_SECONDS", 10), 200
	n := testenv.StartNATS(b)
	_, js := n.Connect()
	ctx := context.Background()
	if _, err := stream.Setup(ctx, js, stream.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	r := testenv.StartRedis(b)
	st, err := store.OpenRedis(r.URL(), store.WithPrefix(r.Prefix()))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()

	// The receiver verifies each callback as a bot would and notes when it
	// arrived, by LiveChat event ID.
	secret := testenv.NewSecret(b)
	wh, _ := standardwebhooks.NewWebhook(secret)
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	bad := 0
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		at := time.Now()
		var ev struct {
			Data handoff.AgentMessage `json:"data"`
		}
		if wh.Verify(body, req.Header) != nil || json.Unmarshal(body, &ev) != nil {
			mu.Lock()
			bad++
			mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		if _, dup := arrived[ev.Data.LiveChatEventID]; !dup {
			arrived[ev.Data.LiveChatEventID] = at
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()

	gcfg := gateway.DefaultConfig()
	gcfg.LiveChatWebhookSecret = "bench-secret"
	gcfg.APIKeys = []string{"bench-key"}
	gw, err := gateway.New(gcfg, publisher.New(js), st, prometheus.NewRegistry(), quietLog())
	if err != nil {
		b.Fatal(err)
	}
	gsrv := httptest.NewServer(gw)
	defer gsrv.Close()

	m, err := outbound.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	cb, err := outbound.NewCallback(outbound.CallbackConfig{URL: rcv.URL, Secrets: secret}, m)
	if err != nil {
		b.Fatal(err)
	}
	c, err := outbound.New(outbound.DefaultConfig(), js, st, outbound.Routes{handoff.ChannelREST: cb}, m, prometheus.NewRegistry(), quietLog())
	if err != nil {
		b.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	defer func() { stop(); <-done }()

	for i := range convs {
		conv := fmt.Sprintf("bench-conv-%d", i)
		if _, err := st.UpdateConversation(ctx, conv, func(c *handoff.Conversation) error {
			c.Mode, c.ChatID, c.CustomerID = handoff.ModeAgent, fmt.Sprintf("CHAT%04d", i), "cust"
			c.ReplyTo = handoff.ReplyTo{Channel: handoff.ChannelREST, Address: conv}
			// The agent joined before writing, as in a chat an agent owns
			// (the join webhook names them): a message from an agent the
			// gateway cannot name yet waits for the name, up to
			// gateway.Config.AgentNameWait, which is not what this measures.
			c.SetAgent("agent-1", "Anna")
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	total := rate * secs
	sent := make(map[string]time.Time, total)
	var wg sync.WaitGroup
	var postErrs int
	b.ResetTimer()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := range total {
		<-tick.C
		chat := fmt.Sprintf("CHAT%04d", i%convs)
		evID := fmt.Sprintf("BENCH_%d", i)
		body := `{"webhook_id":"w","secret_key":"bench-secret","action":"incoming_event","organization_id":"o","payload":{"chat_id":"` + chat +
			`","thread_id":"T1","event":{"id":"` + evID + `","type":"message","text":"reply ` + strconv.Itoa(i) +
			`","author_id":"agent-1","created_at":"2026-11-20T10:00:00Z","visibility":"all"}},"additional_data":{}}`
		start := time.Now()
		mu.Lock()
		sent[evID] = start
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Post(gsrv.URL+"/livechat/webhook", "application/json", bytes.NewReader([]byte(body)))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != 200 {
				mu.Lock()
				postErrs++
				mu.Unlock()
			}
		}()
	}
	tick.Stop()
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(arrived)
		mu.Unlock()
		if got >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()

	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for id, s := range sent {
		if a, ok := arrived[id]; ok {
			lat = append(lat, a.Sub(s))
		}
	}
	if len(lat) != total || postErrs > 0 || bad > 0 {
		b.Fatalf("%d of %d callbacks arrived, %d webhook errors, %d bad signatures", len(lat), total, postErrs, bad)
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(q(0.50)), "p50_ms")
	b.ReportMetric(ms(q(0.99)), "p99_ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max_ms")
	b.ReportMetric(float64(rate), "msgs/s")
	b.Logf("%d agent messages at %d/s over %d conversations: p50 %s, p99 %s, max %s", total, rate, convs, q(0.5), q(0.99), lat[len(lat)-1])
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
