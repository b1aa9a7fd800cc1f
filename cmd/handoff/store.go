package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/handoff-dev/handoff/store"
	"github.com/handoff-dev/handoff/store/natskv"
)

// storeFlags choose and configure the store backend: Redis (the default)
// or NATS JetStream key-value buckets.
type storeFlags struct {
	backend     string
	redisURL    string
	redisPrefix string
	bucket      string
	replicas    int
}

// register declares --store, --redis-url and the NATS KV settings;
// withPrefix adds --redis-prefix (the gateway has always had it).
func (s *storeFlags) register(f *flags, withPrefix bool) {
	f.String(&s.backend, "store", "HANDOFF_STORE", "redis", "state backend: redis (at --redis-url), nats (JetStream key-value buckets on --nats-url), or a nats:// URL of another NATS")
	f.String(&s.redisURL, "redis-url", "REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL: redis://, rediss:// (TLS), redis+sentinel://, redis+cluster:// (with --store redis)")
	if withPrefix {
		f.String(&s.redisPrefix, "redis-prefix", "HANDOFF_GATEWAY_REDIS_PREFIX", store.DefaultPrefix, "prefix of every Redis key")
	}
	f.String(&s.bucket, "store-bucket", "HANDOFF_STORE_BUCKET", natskv.DefaultBucket, "name of the key-value bucket (and prefix of the per-mode buckets) with --store nats")
	f.Int(&s.replicas, "store-replicas", "HANDOFF_STORE_REPLICAS", 1, "copies of each key-value bucket with --store nats: 1 for one server, 3 for a cluster")
}

// natsStoreURL returns the NATS URL the store uses, or "" for Redis.
func (s *storeFlags) natsStoreURL(natsURL string) (string, error) {
	switch b := strings.TrimSpace(s.backend); {
	case b == "" || b == "redis":
		return "", nil
	case b == "nats":
		return natsURL, nil
	case strings.HasPrefix(b, "nats://") || strings.HasPrefix(b, "tls://"):
		return b, nil
	}
	return "", usageError{fmt.Errorf("--store %q: want redis, nats or a nats:// URL", redactURL(s.backend))}
}

// open connects the chosen backend. name names the NATS connection, which
// uses n's credential files.
func (s *storeFlags) open(ctx context.Context, n *natsFlags, name string, log *slog.Logger) (store.Store, error) {
	u, err := s.natsStoreURL(n.url)
	if err != nil {
		return nil, err
	}
	if u == "" {
		store.SetLogger(log)
		var opts []store.Option
		if s.redisPrefix != "" {
			opts = append(opts, store.WithPrefix(s.redisPrefix))
		}
		return store.OpenRedis(s.redisURL, opts...)
	}
	// Its own connection: store requests never queue behind the consumer's
	// traffic, and closing the store does not close the consumer.
	auth, err := n.auth.options()
	if err != nil {
		return nil, err
	}
	nc, _, err := connect(u, name+"-store", log, auth...)
	if err != nil {
		return nil, err
	}
	st, err := natskv.Open(ctx, nc, natskv.WithBucket(s.bucket), natskv.WithReplicas(s.replicas))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return st, nil
}
