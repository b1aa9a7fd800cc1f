package store

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// reloadOnError is a Cluster client hook that reloads the slot map when a
// command fails because its node cannot be reached or answers that the
// cluster is changing (CLUSTERDOWN, READONLY, TRYAGAIN, ...). go-redis reloads
// only on MOVED/ASK and on its reload interval: after a master dies, nobody
// answers MOVED, so without this the client dials the dead master until the
// interval runs out (60 s by default), long after its replica was promoted.
//
// Reloads are rate-limited to one per `every`: during the seconds before
// the promotion every command fails, and each reload is a CLUSTER SLOTS
// round trip.
type reloadOnError struct {
	cluster *redis.ClusterClient
	every   time.Duration
	last    atomic.Int64 // unix nanoseconds of the last reload asked for
}

var _ redis.Hook = (*reloadOnError)(nil)

func (h *reloadOnError) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (h *reloadOnError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(err)
		return err
	}
}

func (h *reloadOnError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.check(err)
		for _, c := range cmds {
			h.check(c.Err())
		}
		return err
	}
}

func (h *reloadOnError) check(err error) {
	if err == nil || !unavailable(err) {
		return
	}
	now := time.Now().UnixNano()
	last := h.last.Load()
	if now-last < int64(h.every) || !h.last.CompareAndSwap(last, now) {
		return
	}
	// ReloadState reloads in the background and never blocks the caller.
	h.cluster.ReloadState(context.Background())
}
