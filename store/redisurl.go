package store

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// ParseRedisURL turns a Redis URL into options for redis.NewUniversalClient.
// It accepts three forms, each also with TLS ("rediss" instead of "redis"):
//
//	redis://[user:password@]host[:6379][/db][?option=value...]
//	    one Redis server (redis.ParseURL rules).
//	redis+sentinel://[user:password@]host[:26379][,host2[:26379]...]/master[/db][?option=value...]
//	    Sentinel: the comma list names the sentinels, the first path segment
//	    the master. user:password authenticate to the master; add
//	    sentinel_username and sentinel_password options when the sentinels
//	    need their own.
//	redis+cluster://[user:password@]host[:6379][,host2[:6379]...][?option=value...]
//	    Redis Cluster: the comma list is the seed nodes (one is enough); no db.
//
// The options are redis.ParseURL's (dial_timeout, read_timeout,
// max_retries, pool_size, skip_verify, ...); an unknown option is an error.
// Cluster URLs take one more, cluster_reload_interval (a Go duration,
// default 10s): how often the client reloads the slot map when nothing
// forces it to. A connection error to a node, or a CLUSTERDOWN, READONLY or
// TRYAGAIN answer, also reloads it, at most once a second, so a promoted
// replica is found within a second of its promotion.
// Go-redis' default retries are kept (every write of Redis is idempotent).
// With TLS on Sentinel or Cluster the server name is taken from each
// address dialled, since the nodes are discovered at run time.
//
// The options returned also disable the CLIENT SETINFO identity and the
// maintenance-notifications handshake (open-source Redis logs warnings for
// both) and make go-redis honour context deadlines.
func ParseRedisURL(rawURL string) (*RedisOptions, error) {
	o, err := parseRedisURL(rawURL)
	if err != nil {
		// Never quote the URL itself: it may hold a password.
		return nil, fmt.Errorf("store: redis URL: %w", err)
	}
	o.DisableIdentity = true
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	o.ContextTimeoutEnabled = true
	if o.PoolSize == 0 {
		// go-redis' default (10 per CPU) makes a worker with a thousand
		// events in flight queue for connections: measured, 150 ms per
		// command at 4,000 events/s. Each connection costs 64 KiB of
		// buffers, so not more than needed: 128 removed the queueing.
		o.PoolSize = DefaultPoolSize
	}
	return o, nil
}

// DefaultPoolSize is the connection pool size when the URL sets no
// pool_size.
const DefaultPoolSize = 128

// DefaultClusterReloadInterval is how often a Cluster client reloads its
// slot map when the URL sets no cluster_reload_interval. go-redis' own
// default (60 s) is what made a failover cost a minute; one CLUSTER SLOTS
// per process every 10 s costs nothing.
const DefaultClusterReloadInterval = 10 * time.Second

// RedisOptions is what a Redis URL says: go-redis' options, and the ones
// its UniversalOptions have no field for.
type RedisOptions struct {
	redis.UniversalOptions
	// ClusterReloadInterval is how often a Cluster client reloads its slot
	// map unprompted (cluster_reload_interval); 0 on other URLs.
	ClusterReloadInterval time.Duration
}

// NewClient returns a client for the options: a single-server, Sentinel
// (failover) or Cluster client. The Cluster client reloads its slot map on
// connection errors (see ParseRedisURL).
func (o *RedisOptions) NewClient() redis.UniversalClient {
	if !o.IsClusterMode {
		return redis.NewUniversalClient(&o.UniversalOptions)
	}
	co := o.UniversalOptions.Cluster()
	co.ClusterStateReloadInterval = o.ClusterReloadInterval
	c := redis.NewClusterClient(co)
	c.AddHook(&reloadOnError{cluster: c, every: time.Second})
	return c
}

func parseRedisURL(rawURL string) (*RedisOptions, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, fmt.Errorf("no scheme: want redis://, rediss://, redis+sentinel:// or redis+cluster://")
	}
	base, kind, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("unknown scheme %q", scheme)
	}
	defaultPort := "6379"
	switch kind {
	case "", "cluster":
	case "sentinel":
		defaultPort = "26379"
	default:
		return nil, fmt.Errorf("unknown scheme %q", scheme)
	}

	// Split the authority by hand: net/url does not take a host list.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hostlist := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hostlist = authority[:i+1], authority[i+1:]
	}
	var addrs []string
	for h := range strings.SplitSeq(hostlist, ",") {
		addr, err := hostPort(h, defaultPort)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, addr)
	}
	if kind == "" && len(addrs) > 1 {
		return nil, fmt.Errorf("%d hosts in a %s:// URL: use %s+cluster:// or %s+sentinel://", len(addrs), base, base, base)
	}

	// Let net/url and redis.ParseURL read the rest, with one placeholder
	// host: user info, path and options are the same in all three forms.
	u, err := url.Parse(base + "://" + userinfo + "host" + tail)
	if err != nil {
		return nil, fmt.Errorf("%s URL: %w", scheme, redactErr(err))
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%s URL has a fragment", scheme)
	}
	u.Host = addrs[0]
	q := u.Query()
	var master, sentinelUser, sentinelPass string
	var reload time.Duration
	switch kind {
	case "sentinel":
		segs := strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' })
		if len(segs) == 0 {
			return nil, fmt.Errorf("%s URL names no master: want %s://host:26379/mymaster[/db]", scheme, scheme)
		}
		master = segs[0]
		u.Path = "/" + strings.Join(segs[1:], "/")
		u.RawPath = ""
		sentinelUser, sentinelPass = q.Get("sentinel_username"), q.Get("sentinel_password")
		q.Del("sentinel_username")
		q.Del("sentinel_password")
		u.RawQuery = q.Encode()
	case "cluster":
		if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
			return nil, fmt.Errorf("%s URL selects database %q; Cluster has only database 0", scheme, p)
		}
		if q.Has("db") {
			return nil, fmt.Errorf("%s URL selects a database; Cluster has only database 0", scheme)
		}
		reload = DefaultClusterReloadInterval
		if q.Has("cluster_reload_interval") {
			d, err := time.ParseDuration(q.Get("cluster_reload_interval"))
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s URL: cluster_reload_interval %q: want a positive duration such as 10s", scheme, q.Get("cluster_reload_interval"))
			}
			reload = d
			q.Del("cluster_reload_interval")
			u.RawQuery = q.Encode()
		}
	}
	if kind != "cluster" && q.Has("cluster_reload_interval") {
		return nil, fmt.Errorf("%s URL: cluster_reload_interval applies to redis+cluster:// only", scheme)
	}
	so, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("%s URL: %w", scheme, redactErr(err))
	}

	o := &RedisOptions{ClusterReloadInterval: reload, UniversalOptions: redis.UniversalOptions{
		Addrs:                   addrs,
		DB:                      so.DB,
		ClientName:              so.ClientName,
		Protocol:                so.Protocol,
		Username:                so.Username,
		Password:                so.Password,
		MaxRetries:              so.MaxRetries,
		MinRetryBackoff:         so.MinRetryBackoff,
		MaxRetryBackoff:         so.MaxRetryBackoff,
		DialTimeout:             so.DialTimeout,
		ReadTimeout:             so.ReadTimeout,
		WriteTimeout:            so.WriteTimeout,
		PoolFIFO:                so.PoolFIFO,
		PoolSize:                so.PoolSize,
		PoolTimeout:             so.PoolTimeout,
		MinIdleConns:            so.MinIdleConns,
		MaxIdleConns:            so.MaxIdleConns,
		MaxActiveConns:          so.MaxActiveConns,
		MaxConcurrentDials:      so.MaxConcurrentDials,
		ConnMaxIdleTime:         so.ConnMaxIdleTime,
		ConnMaxLifetime:         so.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   so.ConnMaxLifetimeJitter,
		PipelinePoolSize:        so.PipelinePoolSize,
		PipelineReadBufferSize:  so.PipelineReadBufferSize,
		PipelineWriteBufferSize: so.PipelineWriteBufferSize,
		TLSConfig:               so.TLSConfig,
		MasterName:              master,
		SentinelUsername:        sentinelUser,
		SentinelPassword:        sentinelPass,
		IsClusterMode:           kind == "cluster",
	}}
	if o.TLSConfig != nil && kind != "" {
		// Nodes are discovered at run time: verify each against the name
		// it is dialled by (tls.DialWithDialer fills an empty ServerName).
		o.TLSConfig.ServerName = ""
	}
	return o, nil
}

// hostPort validates one host[:port] of a URL and adds the default port.
func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("empty host")
	}
	u := &url.URL{Host: h}
	host, port := u.Hostname(), u.Port()
	if host == "" || strings.ContainsAny(host, " /?#@") {
		return "", fmt.Errorf("bad host %q", h)
	}
	if port == "" {
		if strings.HasSuffix(h, ":") {
			return "", fmt.Errorf("bad port in %q", h)
		}
		port = defaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("bad port in %q", h)
	}
	if strings.Count(host, ":") > 0 && !strings.HasPrefix(h, "[") {
		return "", fmt.Errorf("bad host %q (IPv6 addresses go in brackets)", h)
	}
	return net.JoinHostPort(host, port), nil
}

// redactErr drops the URL from a *url.Error, which would print the password.
func redactErr(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
