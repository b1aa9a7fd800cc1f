package livechatsim_test

import (
	"context"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/livechat/livechatsim"
)

// BenchmarkSimSendEvent measures send_event through the real client over
// loopback HTTP with many concurrent callers, each writing to its own
// chat as the worker does. The figure that matters is req/s.
func BenchmarkSimSendEvent(b *testing.B) {
	ctx := context.Background()
	sim := livechatsim.New(livechatsim.Options{})
	srv := httptest.NewServer(sim)
	defer func() { srv.Close(); sim.Close() }()
	c := livechat.New(livechat.Config{APIURL: srv.URL, AccountsURL: srv.URL, ClientID: "bench", RefreshToken: "r"})
	agent, err := c.RefreshAgentToken(ctx)
	if err != nil {
		b.Fatal(err)
	}
	const callers = 64
	type conv struct{ token, chat string }
	convs := make([]conv, callers)
	for i := range convs {
		tok, err := c.IssueCustomerToken(ctx, agent.AccessToken, "")
		if err != nil {
			b.Fatal(err)
		}
		res, err := c.StartChat(ctx, tok.AccessToken, livechat.StartChatRequest{Continuous: true})
		if err != nil {
			b.Fatal(err)
		}
		convs[i] = conv{tok.AccessToken, res.ChatID}
	}
	var next, seq atomic.Int64
	// RunParallel starts parallelism×GOMAXPROCS goroutines: one per chat.
	b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		cv := convs[int(next.Add(1)-1)%callers]
		for pb.Next() {
			n := seq.Add(1)
			if _, err := c.SendEvent(ctx, cv.token, cv.chat, livechat.Event{Text: "benchmark message", CustomID: "b-" + strconv.FormatInt(n, 10)}, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
