package gateway

import (
	"math"
	"sync"
	"time"
)

// limiter is a set of token buckets, one per key: each holds up to burst
// tokens and refills at rate tokens per second. A full bucket is the same
// as no bucket, so full ones are dropped as the set grows: memory follows
// the keys active within burst/rate seconds, not every key ever seen.
//
// Limits are per gateway process; with N replicas behind a load balancer a
// caller gets about N times the rate. That is deliberate: a shared limiter
// in Redis would put a round trip on every request to defend against a
// flood that the per-process limit already bounds.
type limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	sweepAt int
}

type bucket struct {
	tokens float64
	last   time.Time
}

const minSweep = 1024

// newLimiter returns a limiter; rate <= 0 or burst <= 0 means unlimited.
func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	if now == nil {
		now = time.Now
	}
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}, sweepAt: minSweep}
}

// take spends one token of key's bucket. Without one it spends nothing
// and says how long until a token is there.
func (l *limiter) take(key string) (ok bool, retryAfter time.Duration) {
	if l == nil || l.rate <= 0 || l.burst <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.sweepAt {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

func (l *limiter) refill(b *bucket, now time.Time) {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(l.burst, b.tokens+dt*l.rate)
	}
	b.last = now
}

// sweep drops the buckets that have refilled; called with mu held.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if l.refill(b, now); b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	l.sweepAt = max(minSweep, 2*len(l.buckets))
}

// retryAfterSeconds is the Retry-After header value for a wait: whole
// seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
