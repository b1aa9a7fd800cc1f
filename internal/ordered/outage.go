package ordered

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// outageLog logs hand-backs during an outage once per outage and
// dependency, not once per event: in the minute of a failover hundreds of
// events are handed back a second, and the log must stay readable. The
// first hand-back logs a warning; later ones are counted, a reminder with
// the count comes every outageReminder while it lasts, and the first event
// applied once outageQuiet has passed without a hand-back says it is over,
// with how many were handed back. The quiet period matters on Redis
// Cluster: while one master is down, events on the others still apply.
type outageLog struct {
	log  *slog.Logger
	open atomic.Int32 // outages in the map, so over() is cheap when none
	mu   sync.Mutex
	by   map[string]*outage
}

type outage struct {
	since, reminded, last time.Time
	handedBack            int
}

const (
	// outageReminder is how often a lasting outage is logged again.
	outageReminder = time.Minute
	// outageQuiet is how long an outage must go without a hand-back
	// before an applied event ends it.
	outageQuiet = 5 * time.Second
)

func newOutageLog(log *slog.Logger) *outageLog {
	return &outageLog{log: log, by: map[string]*outage{}}
}

// dependencyOf names what an outage reason says is down.
func dependencyOf(reason string) string {
	switch reason {
	case "store_unavailable":
		return "store"
	case "livechat_circuit_open":
		return "livechat"
	case "nats_unavailable", "lease_lost":
		return "nats"
	}
	return reason
}

// report counts one event handed back for reason.
func (o *outageLog) report(reason string, err error) {
	dep := dependencyOf(reason)
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	ot := o.by[dep]
	if ot == nil {
		o.by[dep] = &outage{since: now, reminded: now, last: now, handedBack: 1}
		o.open.Add(1)
		o.log.Warn("outage: handing events back until it is over", "dependency", dep, "reason", reason, "err", err)
		return
	}
	ot.handedBack++
	ot.last = now
	if now.Sub(ot.reminded) >= outageReminder {
		ot.reminded = now
		o.log.Warn("outage continues", "dependency", dep, "reason", reason, "handed_back", ot.handedBack,
			"for", now.Sub(ot.since).Round(time.Second), "err", err)
	}
}

// over ends the open outages that had no hand-back for outageQuiet: an
// event was applied, so NATS, the store and LiveChat answer again.
func (o *outageLog) over() {
	if o.open.Load() == 0 {
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	for dep, ot := range o.by {
		if now.Sub(ot.last) < outageQuiet {
			continue
		}
		o.log.Info("outage over", "dependency", dep, "handed_back", ot.handedBack, "lasted", ot.last.Sub(ot.since).Round(100*time.Millisecond))
		delete(o.by, dep)
		o.open.Add(-1)
	}
}
