package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// timeline samples the inbound stream and the workers' consumer from a
// failure on, so a failover test can say where its recovery time went:
// when JetStream answered again, when the consumer had a leader, the first
// event acknowledged after the failure, the longest stretch without
// progress, and the end. A slow run then points at its cause (a pull stuck
// on the old leader, an event waiting out the ack wait) instead of a
// single figure.
type timeline struct {
	js    jetstream.JetStream
	since time.Time
	stop  chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	streams []streamSample
	conss   []consumerSample
}

type streamSample struct {
	at     time.Duration
	msgs   uint64
	leader string
}

type consumerSample struct {
	at                       time.Duration
	leader                   string
	ackPending, pending      int
	redelivered, waitingPull int
}

// startTimeline samples every 50 ms from now until stop is called. The
// stream and the consumer are sampled apart: during an election one of
// them may not answer for seconds.
func startTimeline(js jetstream.JetStream) *timeline {
	tl := &timeline{js: js, since: time.Now(), stop: make(chan struct{})}
	tl.wg.Add(2)
	go tl.loop(func(ctx context.Context) {
		s, err := js.Stream(ctx, stream.InStream)
		if err != nil {
			return
		}
		info, err := s.Info(ctx)
		if err != nil {
			return
		}
		smp := streamSample{at: time.Since(tl.since), msgs: info.State.Msgs}
		if info.Cluster != nil {
			smp.leader = info.Cluster.Leader
		}
		tl.mu.Lock()
		tl.streams = append(tl.streams, smp)
		tl.mu.Unlock()
	})
	go tl.loop(func(ctx context.Context) {
		c, err := js.Consumer(ctx, stream.InStream, stream.Consumer)
		if err != nil {
			return
		}
		info, err := c.Info(ctx)
		if err != nil {
			return
		}
		smp := consumerSample{at: time.Since(tl.since), ackPending: info.NumAckPending, pending: int(info.NumPending),
			redelivered: info.NumRedelivered, waitingPull: info.NumWaiting}
		if info.Cluster != nil {
			smp.leader = info.Cluster.Leader
		}
		tl.mu.Lock()
		tl.conss = append(tl.conss, smp)
		tl.mu.Unlock()
	})
	return tl
}

func (tl *timeline) loop(sample func(context.Context)) {
	defer tl.wg.Done()
	for {
		select {
		case <-tl.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		sample(ctx)
		cancel()
		select {
		case <-tl.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// finish stops sampling and describes the phases after the failure of
// old (the stopped server's name, or "" when no leader changed), with
// left events in the stream at the failure.
func (tl *timeline) finish(old string, left uint64) string {
	close(tl.stop)
	tl.wg.Wait()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	r := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	var b strings.Builder
	streamBack, consBack, firstAck := time.Duration(-1), time.Duration(-1), time.Duration(-1)
	for _, s := range tl.streams {
		if streamBack < 0 && s.leader != old {
			streamBack = s.at
		}
		if firstAck < 0 && s.msgs < left {
			firstAck = s.at
		}
	}
	var consLeaders []string
	for _, c := range tl.conss {
		if consBack < 0 && c.leader != old {
			consBack = c.at
		}
		if len(consLeaders) == 0 || consLeaders[len(consLeaders)-1] != c.leader {
			consLeaders = append(consLeaders, c.leader)
		}
	}
	// The longest stretch in which the stream kept its size after the
	// first ack: what a stuck event costs.
	var gap, gapAt time.Duration
	var gapMsgs uint64
	for i := 1; i < len(tl.streams); i++ {
		if firstAck < 0 || tl.streams[i].at < firstAck {
			continue
		}
		j := i
		for j < len(tl.streams) && tl.streams[j].msgs == tl.streams[i-1].msgs {
			j++
		}
		if j < len(tl.streams) && tl.streams[j].at-tl.streams[i-1].at > gap {
			gap, gapAt, gapMsgs = tl.streams[j].at-tl.streams[i-1].at, tl.streams[i-1].at, tl.streams[i-1].msgs
		}
	}
	fmt.Fprintf(&b, "stream answers with a leader at %s, consumer at %s (leaders %s), first ack at %s; longest stall %s from %s with %d events left",
		r(streamBack), r(consBack), strings.Join(consLeaders, "→"), r(firstAck), r(gap), r(gapAt), gapMsgs)
	if gap > 3*time.Second {
		// What the consumer said during the stall: awaiting ack with
		// nobody holding the events, or pulls missing.
		for _, c := range tl.conss {
			if c.at >= gapAt && c.at <= gapAt+gap {
				fmt.Fprintf(&b, "; during the stall at %s: leader %s, ack pending %d, pending %d, redelivered %d, waiting pulls %d",
					r(c.at), c.leader, c.ackPending, c.pending, c.redelivered, c.waitingPull)
				break
			}
		}
	}
	return b.String()
}
