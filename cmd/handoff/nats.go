package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsFlags are the connection and stream settings shared by subcommands.
type natsFlags struct {
	url    string
	auth   natsAuth
	stream stream.Config
}

// natsAuth names the files that authenticate a process to NATS. Files, not
// values: in Kubernetes they come from a Secret mounted read-only, so no
// credential sits in a ConfigMap, a URL or the process list. The
// environment variables are the nats CLI's, so one Secret serves both.
type natsAuth struct {
	creds, nkey, cert, key, ca string
}

func (n *natsFlags) register(f *flags, withStreams bool) {
	f.String(&n.url, "nats-url", "NATS_URL", nats.DefaultURL, "NATS server URL(s), comma-separated; put credentials in the files below, not in the URL")
	f.String(&n.auth.creds, "nats-creds", "NATS_CREDS", "", "NATS user credentials file (JWT and nkey seed, from nsc)")
	f.String(&n.auth.nkey, "nats-nkey", "NATS_NKEY", "", "file holding a NATS user nkey seed (SU...)")
	f.String(&n.auth.cert, "nats-cert", "NATS_CERT", "", "client certificate (PEM file) for NATS TLS; needs --nats-key")
	f.String(&n.auth.key, "nats-key", "NATS_KEY", "", "private key (PEM file) of --nats-cert")
	f.String(&n.auth.ca, "nats-ca", "NATS_CA", "", "CA certificates (PEM file) that sign the NATS server's certificate; turns TLS on")
	n.stream = stream.DefaultConfig()
	if !withStreams {
		return
	}
	d := stream.DefaultConfig()
	f.Int(&n.stream.Replicas, "stream-replicas", "HANDOFF_STREAM_REPLICAS", d.Replicas, "copies of each stream: 1 for one server, 3 for a cluster")
	f.Duration(&n.stream.Duplicates, "stream-duplicate-window", "HANDOFF_STREAM_DUPLICATE_WINDOW", d.Duplicates, "window in which a repeated event ID is stored once")
	f.Int64(&n.stream.MaxBytes, "stream-max-bytes", "HANDOFF_STREAM_MAX_BYTES", d.MaxBytes, "size bound of each stream; a full inbound stream refuses new events")
	f.Duration(&n.stream.MaxAge, "stream-max-age", "HANDOFF_STREAM_MAX_AGE", d.MaxAge, "how long an unprocessed event may wait")
	f.Duration(&n.stream.DLQMaxAge, "dlq-max-age", "HANDOFF_DLQ_MAX_AGE", d.DLQMaxAge, "how long dead letters are kept")
	f.Duration(&n.stream.FeedMaxAge, "feed-max-age", "HANDOFF_FEED_MAX_AGE", d.FeedMaxAge, "how long user-facing events stay readable in the feed (HANDOFF_FEED), so event streams can resume")
	f.Duration(&n.stream.AckWait, "ack-wait", "HANDOFF_ACK_WAIT", d.AckWait, "time before an unacknowledged event goes to another worker")
	f.Int(&n.stream.MaxAckPending, "max-ack-pending", "HANDOFF_MAX_ACK_PENDING", d.MaxAckPending, "events in flight across all workers")
}

// options turns the credential files into connection options. A file that
// is named but unreadable is an error here, before connecting: falling back
// to an anonymous connection would hide a broken Secret mount.
func (a natsAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	readable := func(flag, path string) error {
		if _, err := os.Stat(path); err != nil {
			return usageError{fmt.Errorf("%s: %w", flag, err)}
		}
		return nil
	}
	if a.creds != "" && a.nkey != "" {
		return nil, usageError{errors.New("--nats-creds and --nats-nkey: give one (a creds file already holds the nkey seed)")}
	}
	if a.creds != "" {
		if err := readable("--nats-creds", a.creds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(a.creds))
	}
	if a.nkey != "" {
		o, err := nats.NkeyOptionFromSeed(a.nkey)
		if err != nil {
			return nil, usageError{fmt.Errorf("--nats-nkey: %w", err)}
		}
		opts = append(opts, o)
	}
	if (a.cert == "") != (a.key == "") {
		return nil, usageError{errors.New("--nats-cert and --nats-key go together")}
	}
	if a.cert != "" {
		for flag, p := range map[string]string{"--nats-cert": a.cert, "--nats-key": a.key} {
			if err := readable(flag, p); err != nil {
				return nil, err
			}
		}
		opts = append(opts, nats.ClientCert(a.cert, a.key))
	}
	if a.ca != "" {
		if err := readable("--nats-ca", a.ca); err != nil {
			return nil, err
		}
		opts = append(opts, nats.RootCAs(a.ca))
	}
	return opts, nil
}

// connect opens a NATS connection to --nats-url with the configured
// credential files.
func (n *natsFlags) connect(name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := n.auth.options()
	if err != nil {
		return nil, nil, err
	}
	return connect(n.url, name, log, opts...)
}

// connectWaiting is connect for a process that consumes for as long as it
// runs (the worker): when no NATS server answers at start (NATS restarting,
// or starting beside it), it tries again with backoff until ctx ends,
// logging once, instead of exiting to be restarted later. Other failures
// (credentials, flags) end it at once.
func (n *natsFlags) connectWaiting(ctx context.Context, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	delay := 250 * time.Millisecond
	since, warned := time.Now(), false
	for {
		nc, js, err := n.connect(name, log)
		if err == nil || !errors.Is(err, nats.ErrNoServers) {
			if err == nil && warned {
				log.Info("nats reachable", "url", nc.ConnectedUrlRedacted(), "waited", time.Since(since).Round(time.Second))
			}
			return nc, js, err
		}
		if !warned {
			log.Warn("no NATS server answers; trying again until one does", "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("%w (stopped waiting: %w)", err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// connect opens a NATS connection that reconnects forever and logs its
// state changes, and a JetStream handle on it.
func connect(url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// redactURLs hides the passwords and tokens of NATS URLs, which an error
// message would otherwise carry into the logs.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(unparsable URL)"
			continue
		}
		if u.User != nil {
			u.User = url.User("redacted")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

func printChanges(w io.Writer, changes []stream.Change) {
	for _, c := range changes {
		fmt.Fprintf(w, "%-8s %-16s %s\n", c.Kind, c.Name, c.Action)
	}
}

func runSetup(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		n                         natsFlags
		lg                        logging
		lc                        liveChatFlags
		webhookURL, webhookSecret string
	)
	f := newFlags("setup", "[flags]", "Create or update the JetStream streams (HANDOFF_IN, HANDOFF_OUT, HANDOFF_DLQ)\nand the workers' durable consumer. With --livechat-webhook-url, also register\nLiveChat's webhooks for the reverse path (agent messages, closed chats) with\nthe --livechat-* client settings. Safe to run any number of times.")
	n.register(f, true)
	lg.register(f)
	f.String(&webhookURL, "livechat-webhook-url", "HANDOFF_SETUP_LIVECHAT_WEBHOOK_URL", "", "the gateway's public /livechat/webhook URL to register with LiveChat (empty: skip)")
	f.String(&webhookSecret, "livechat-webhook-secret", "HANDOFF_GATEWAY_LIVECHAT_WEBHOOK_SECRET", "", "secret_key to register; the gateway checks it")
	lc.register(f)
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	log, err := lg.logger()
	if err != nil {
		return err
	}
	nc, js, err := n.connect("handoff-setup", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	changes, err := stream.Setup(ctx, js, n.stream)
	printChanges(stdout, changes)
	if err != nil || webhookURL == "" {
		return err
	}
	if err := lc.refreshToken(nil, log); err != nil {
		return err
	}
	return registerWebhooks(ctx, lc.client(nil, log), webhookURL, webhookSecret, stdout)
}

func runPublish(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		n                                       natsFlags
		lg                                      logging
		conversation, typ, data, id, source, at string
		asJSON                                  bool
	)
	types := make([]string, len(handoff.EventTypes))
	for i, t := range handoff.EventTypes {
		types[i] = string(t)
	}
	f := newFlags("publish", "--conversation ID --type TYPE --data JSON [flags]",
		"Publish one event and print where JetStream stored it. Running it twice with the\nsame --id applies the event once: JetStream stores it once inside the duplicate\nwindow, and the worker drops a copy stored after a NATS restart or the window\n(within its --idempotency-window).\n\nExample:\n  handoff publish --conversation projects/p/agent/sessions/s1 --type handoff.requested \\\n    --data '{\"customer\":{\"name\":\"Ana\"},\"reason\":\"billing\"}'")
	n.register(f, false)
	lg.register(f)
	f.String(&conversation, "conversation", "", "", "conversation ID as the bot knows it (required)")
	f.String(&typ, "type", "", "", "event type: "+strings.Join(types, ", ")+" (required)")
	f.String(&data, "data", "", "{}", "event data as JSON, or @FILE to read it from a file, or @- for stdin")
	f.String(&id, "id", "", "", "event ID (default: a new UUIDv7); reuse it to make a retry safe")
	f.String(&source, "source", "HANDOFF_SOURCE", "handoff-cli", "CloudEvents source")
	f.String(&at, "time", "", "", "event time, RFC 3339 (default: now)")
	f.Bool(&asJSON, "json", "", false, "print the receipt as JSON")
	if err := f.parse(args, stdout); err != nil {
		return err
	}
	if conversation == "" || typ == "" {
		return usageError{errors.New("publish: --conversation and --type are required")}
	}
	raw, err := readData(data)
	if err != nil {
		return err
	}
	if !json.Valid(raw) {
		return fmt.Errorf("publish: --data is not valid JSON")
	}
	ev := handoff.Event{
		SpecVersion:     handoff.SpecVersion,
		ID:              id,
		Source:          source,
		Type:            handoff.EventType(typ),
		Subject:         conversation,
		Time:            time.Now().UTC(),
		DataContentType: handoff.ContentTypeJSON,
		Data:            raw,
	}
	if ev.ID == "" {
		ev.ID = handoff.NewID()
	}
	if at != "" {
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return fmt.Errorf("publish: --time: %w", err)
		}
		ev.Time = t.UTC()
	}
	if err := ev.Validate(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	log, err := lg.logger()
	if err != nil {
		return err
	}
	nc, js, err := n.connect("handoff-publish", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	rcpt, err := publisher.New(js).Publish(ctx, ev)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"id": ev.ID, "stream": rcpt.Stream, "sequence": rcpt.Sequence, "duplicate": rcpt.Duplicate,
		})
	}
	dup := ""
	if rcpt.Duplicate {
		dup = " (duplicate: already stored, nothing new)"
	}
	fmt.Fprintf(stdout, "published %s id=%s stream=%s seq=%d%s\n", ev.Type, ev.ID, rcpt.Stream, rcpt.Sequence, dup)
	return nil
}

func readData(v string) ([]byte, error) {
	switch {
	case v == "@-":
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("publish: read --data from stdin: %w", err)
		}
		return b, nil
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(v[1:])
		if err != nil {
			return nil, fmt.Errorf("publish: read --data: %w", err)
		}
		return b, nil
	}
	return []byte(v), nil
}
