package gateway

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(5, 20, func() time.Time { return now })
	for i := 0; i < 20; i++ {
		if ok, _ := l.take("a"); !ok {
			t.Fatalf("take %d of the burst refused", i+1)
		}
	}
	ok, wait := l.take("a")
	if ok || wait != 200*time.Millisecond {
		t.Fatalf("21st take: ok=%v wait=%v, want refused with 200ms", ok, wait)
	}
	if ok, _ := l.take("b"); !ok {
		t.Fatal("another key is limited by the first one's bucket")
	}
	now = now.Add(time.Second)
	for i := 0; i < 5; i++ {
		if ok, _ := l.take("a"); !ok {
			t.Fatalf("after 1s, take %d of 5 refused", i+1)
		}
	}
	if ok, _ := l.take("a"); ok {
		t.Fatal("more than rate per second after the burst")
	}
	if got := retryAfterSeconds(200 * time.Millisecond); got != 1 {
		t.Errorf("Retry-After for 200ms: %d, want 1", got)
	}
	if got := retryAfterSeconds(1500 * time.Millisecond); got != 2 {
		t.Errorf("Retry-After for 1.5s: %d, want 2", got)
	}
}

// Keys whose buckets refilled are forgotten, so a stream of one-off keys
// (made-up conversation IDs) does not grow memory without bound.
func TestLimiterForgetsIdleKeys(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(5, 20, func() time.Time { return now })
	for i := 0; i < 100_000; i++ {
		l.take(fmt.Sprint("k", i))
		if i%1000 == 999 {
			now = now.Add(5 * time.Second) // every bucket refills
		}
	}
	if n := len(l.buckets); n > 4*minSweep {
		t.Errorf("%d buckets held after 100,000 idle keys", n)
	}
}

func TestLimiterOff(t *testing.T) {
	for _, l := range []*limiter{nil, newLimiter(0, 20, nil), newLimiter(5, 0, nil)} {
		for i := 0; i < 1000; i++ {
			if ok, _ := l.take("a"); !ok {
				t.Fatal("a limiter with no rate refused")
			}
		}
	}
}
