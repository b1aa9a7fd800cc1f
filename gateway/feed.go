package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// The user-facing feed: GET /v1/conversations/{id}/events reads the
// conversation's subject of HANDOFF_FEED (appended by the outbound
// delivery) as Server-Sent Events, or as JSON when the client asks for it
// (Accept: application/json). An event's feed sequence is its `id:` and
// the cursor (`Last-Event-ID`, `?after=`), so a client that reconnects
// resumes exactly after the last event it saw, for as long as the feed
// keeps events (--feed-max-age).

// Defaults of the feed settings.
const (
	DefaultMaxStreams      = 1000
	DefaultStreamHeartbeat = 15 * time.Second
	DefaultPullLimit       = 100
	MaxPullWait            = 30 * time.Second
)

// Option adds an optional part to a Gateway.
type Option func(*Gateway)

// WithFeed serves GET /v1/conversations/{id}/events from js's HANDOFF_FEED.
func WithFeed(js jetstream.JetStream) Option { return func(g *Gateway) { g.feed = js } }

// StreamToken is the per-conversation token a browser presents to read one
// conversation's events (and nothing else): an HMAC of the conversation ID
// under the gateway's stream token secret. Empty when no secret is set.
func (g *Gateway) StreamToken(conversation string) string {
	if g.cfg.StreamTokenSecret == "" {
		return ""
	}
	m := hmac.New(sha256.New, []byte(g.cfg.StreamTokenSecret))
	m.Write([]byte("handoff-stream-v1\x00" + conversation))
	return "st1." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// authFeed accepts an API key (servers) or the conversation's stream token,
// as a bearer or as ?token= (EventSource cannot set headers).
func (g *Gateway) authFeed(r *http.Request) error {
	tok, ok := bearer(r)
	if !ok {
		tok = r.URL.Query().Get("token")
	}
	if tok == "" {
		return errors.New("missing API key or stream token")
	}
	if strings.HasPrefix(tok, "st1.") {
		want := g.StreamToken(r.PathValue("id"))
		if want == "" || !secretEqual(tok, want) {
			return errBadCredentials
		}
		return nil
	}
	match := false
	for _, k := range g.keys {
		if secretEqual(tok, k.secret) {
			match = true
		}
	}
	if !match {
		return errBadCredentials
	}
	return nil
}

// cors answers browsers from the configured origins; others get no CORS
// headers, so their pages cannot read the stream.
func (g *Gateway) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || !(slices.Contains(g.cfg.CORSOrigins, origin) || slices.Contains(g.cfg.CORSOrigins, "*")) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Allow-Headers", "Authorization, Last-Event-ID, Accept")
	h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
	h.Set("Access-Control-Max-Age", "600")
}

func (g *Gateway) serveEventsPreflight(w http.ResponseWriter, r *http.Request) {
	g.cors(w, r)
	w.WriteHeader(http.StatusNoContent)
}

// feedItem is one event of the pull answer.
type feedItem struct {
	ID    string          `json:"id"`
	Type  string          `json:"type"`
	Event json.RawMessage `json:"event"`
}

// pullAnswer is the JSON answer: the events after the cursor, oldest
// first, and the cursor to send next time.
type pullAnswer struct {
	Events []feedItem `json:"events"`
	Next   string     `json:"next"`
}

func (g *Gateway) serveEvents(w http.ResponseWriter, r *http.Request) {
	g.cors(w, r)
	id, err := restConversation(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if g.feed == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the event feed is not enabled on this gateway")
		return
	}
	after, err := feedCursor(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if wantsJSON(r) {
		g.servePull(w, r, id, after)
		return
	}
	g.serveSSE(w, r, id, after)
}

// feedCursor reads where to start: Last-Event-ID (an EventSource
// reconnecting) wins over ?after=; none means from the start of the feed.
func feedCursor(r *http.Request) (uint64, error) {
	raw, what := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if raw == "" {
		raw, what = r.URL.Query().Get("after"), "after"
	}
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, badRequest("%s must be an event id from this feed (a whole number), got %q", what, truncate(raw))
	}
	return n, nil
}

func wantsJSON(r *http.Request) bool {
	a := r.Header.Get("Accept")
	return strings.Contains(a, "application/json") && !strings.Contains(a, "text/event-stream")
}

// consumer opens an ordered consumer on the conversation's feed subject,
// starting after the cursor.
func (g *Gateway) consumer(ctx context.Context, conversation string, after uint64) (jetstream.Consumer, error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{stream.FeedSubject(conversation)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if after > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = after + 1
	}
	c, err := g.feed.OrderedConsumer(ctx, stream.FeedStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("read feed: %w", err)
	}
	return c, nil
}

func (g *Gateway) servePull(w http.ResponseWriter, r *http.Request, conversation string, after uint64) {
	limit := DefaultPullLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > DefaultPullLimit {
			g.fail(w, r, badRequest("limit must be a whole number from 1 to %d", DefaultPullLimit))
			return
		}
		limit = n
	}
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || time.Duration(n)*time.Second > MaxPullWait {
			g.fail(w, r, badRequest("wait must be whole seconds from 0 to %d", int(MaxPullWait/time.Second)))
			return
		}
		wait = time.Duration(n) * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.RequestTimeout+wait)
	defer cancel()
	c, err := g.consumer(ctx, conversation, after)
	if err != nil {
		g.fail(w, r, fmt.Errorf("%w: %w", publisher.ErrUnavailable, err))
		return
	}
	var batch jetstream.MessageBatch
	if wait > 0 {
		batch, err = c.Fetch(limit, jetstream.FetchMaxWait(wait))
	} else {
		batch, err = c.FetchNoWait(limit)
	}
	if err != nil {
		g.fail(w, r, fmt.Errorf("%w: %w", publisher.ErrUnavailable, err))
		return
	}
	out := pullAnswer{Events: []feedItem{}, Next: strconv.FormatUint(after, 10)}
	for msg := range batch.Messages() {
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		seq := strconv.FormatUint(md.Sequence.Stream, 10)
		out.Events = append(out.Events, feedItem{ID: seq, Type: msg.Headers().Get("Ce-Type"), Event: json.RawMessage(msg.Data())})
		g.markSeen(ctx, conversation, md.Sequence.Stream)
		out.Next = seq
		if wait > 0 {
			// Long-poll answers as soon as something arrived.
			break
		}
	}
	for i := range out.Events {
		if out.Events[i].Type == "" {
			out.Events[i].Type = eventType(out.Events[i].Event)
		}
	}
	g.m.streamEvents.WithLabelValues("pull").Add(float64(len(out.Events)))
	writeJSON(w, http.StatusOK, out)
}

// eventType reads a CloudEvent's type when the message lacks the header.
func eventType(raw []byte) string {
	var e struct {
		Type handoff.EventType `json:"type"`
	}
	_ = json.Unmarshal(raw, &e)
	return string(e.Type)
}

func (g *Gateway) serveSSE(w http.ResponseWriter, r *http.Request, conversation string, after uint64) {
	select {
	case g.streams <- struct{}{}:
		defer func() { <-g.streams }()
	default:
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "too_many_streams", "this gateway serves as many event streams as it may; retry shortly")
		return
	}
	g.m.streamsOpen.Inc()
	defer g.m.streamsOpen.Dec()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	c, err := g.consumer(ctx, conversation, after)
	if err != nil {
		g.fail(w, r, fmt.Errorf("%w: %w", publisher.ErrUnavailable, err))
		return
	}
	msgs, err := c.Messages()
	if err != nil {
		g.fail(w, r, fmt.Errorf("%w: %w", publisher.ErrUnavailable, err))
		return
	}
	defer msgs.Stop()
	go func() {
		<-ctx.Done()
		msgs.Stop()
	}()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The server's write timeout is for ordinary requests; a stream lives
	// as long as the client stays, and each write gets its own deadline.
	write := func(s string) error {
		_ = rc.SetWriteDeadline(time.Now().Add(g.cfg.RequestTimeout + 5*time.Second))
		if _, err := fmt.Fprint(w, s); err != nil {
			return err
		}
		return rc.Flush()
	}
	// retry tells EventSource how soon to reconnect.
	if write("retry: 2000\n\n") != nil {
		return
	}

	type next struct {
		msg jetstream.Msg
		err error
	}
	ch := make(chan next)
	go func() {
		defer close(ch)
		for {
			m, err := msgs.Next()
			select {
			case ch <- next{m, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	beat := time.NewTicker(g.cfg.StreamHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if write(": heartbeat\n\n") != nil {
				return
			}
		case n, ok := <-ch:
			if !ok || n.err != nil {
				if n.err != nil && !errors.Is(n.err, jetstream.ErrMsgIteratorClosed) {
					g.log.Warn("event stream ended", "err", n.err)
				}
				return
			}
			md, err := n.msg.Metadata()
			if err != nil {
				continue
			}
			typ := n.msg.Headers().Get("Ce-Type")
			if typ == "" {
				typ = eventType(n.msg.Data())
			}
			// Claimed before it is written, so a Dialogflow turn racing
			// the stream does not carry it too; a client that loses it
			// on the way gets it again by resuming after Last-Event-ID.
			g.markSeen(ctx, conversation, md.Sequence.Stream)
			// The CloudEvent is one line of JSON, so it is one data: line.
			data := strings.ReplaceAll(string(n.msg.Data()), "\n", "")
			if write(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", md.Sequence.Stream, typ, data)) != nil {
				return
			}
			g.m.streamEvents.WithLabelValues("sse").Inc()
		}
	}
}
