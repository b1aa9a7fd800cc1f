package outbound

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com/) header names.
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// secretPrefix marks a Standard Webhooks secret: whsec_ and base64 of the key.
const secretPrefix = "whsec_"

// Signer signs callbacks per Standard Webhooks: HMAC-SHA256 over
// "id.timestamp.body" with each secret, base64, as "v1,<sig>". Several
// secrets give several signatures (space-separated), so a receiver can move
// to a new secret while the old one is still accepted.
type Signer struct {
	keys [][]byte
}

// ParseSecrets reads secrets in Standard Webhooks form (whsec_<base64 of
// 24 to 64 bytes>), separated by spaces or commas.
func ParseSecrets(s string) (*Signer, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' })
	if len(fields) == 0 {
		return nil, errors.New("callback secret: empty (want whsec_<base64>)")
	}
	sg := &Signer{}
	for i, f := range fields {
		b64, ok := strings.CutPrefix(f, secretPrefix)
		if !ok {
			return nil, fmt.Errorf("callback secret %d: must start with %s (Standard Webhooks form)", i+1, secretPrefix)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			// The secret itself never goes into the error.
			return nil, fmt.Errorf("callback secret %d: not base64 after %s", i+1, secretPrefix)
		}
		if len(key) < 24 || len(key) > 64 {
			return nil, fmt.Errorf("callback secret %d: %d bytes, want 24 to 64", i+1, len(key))
		}
		sg.keys = append(sg.keys, key)
	}
	return sg, nil
}

// Sign returns the webhook-signature header value for one attempt.
func (s *Signer) Sign(id string, ts time.Time, body []byte) string {
	sigs := make([]string, 0, len(s.keys))
	prefix := id + "." + strconv.FormatInt(ts.Unix(), 10) + "."
	for _, k := range s.keys {
		h := hmac.New(sha256.New, k)
		h.Write([]byte(prefix))
		h.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(h.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}

// WebhookID is the webhook-id of an event: its ID, which every retry
// repeats so a receiver can drop repeats. Standard Webhooks signs
// "id.timestamp.body", so an ID with a '.' or white space (possible for
// events a bot published itself) is replaced by a hash of it.
func WebhookID(eventID string) string {
	if eventID != "" && !strings.ContainsFunc(eventID, func(r rune) bool { return r == '.' || r <= ' ' || r == 0x7f }) {
		return eventID
	}
	sum := sha256.Sum256([]byte(eventID))
	return "evh_" + hex.EncodeToString(sum[:16])
}

// CallbackConfig configures the signed callback channel. URL and secrets
// are server configuration only: a value from a request could send agents'
// replies anywhere.
type CallbackConfig struct {
	URL     string
	Secrets string // whsec_<base64>, several separated by spaces
	// Timeout bounds one POST (default 15 s).
	Timeout time.Duration
	// MaxRetryAfter caps a receiver's Retry-After (default 10 min).
	MaxRetryAfter time.Duration
	Breaker       BreakerConfig
	// Transport carries the requests (default: http.DefaultTransport's
	// settings). Redirects are never followed, whatever it is.
	Transport http.RoundTripper
	UserAgent string
}

// Callback POSTs each event, as its CloudEvent JSON, to one configured
// endpoint, signed per Standard Webhooks.
type Callback struct {
	cfg     CallbackConfig
	signer  *Signer
	hc      *http.Client
	breaker *breaker
	m       *Metrics
	// gone is set by a 410 answer: Standard Webhooks asks senders to stop
	// calling an endpoint that says it is gone, so every later event is a
	// dead letter (replayable once the endpoint is back) until a restart.
	gone atomic.Bool
	now  func() time.Time
}

// NewCallback checks the configuration and returns the channel.
func NewCallback(cfg CallbackConfig, m *Metrics) (*Callback, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("callback url %q: want an absolute http(s) URL", cfg.URL)
	}
	if u.User != nil {
		return nil, errors.New("callback url: credentials in the URL are not allowed; the signature authenticates us")
	}
	signer, err := ParseSecrets(cfg.Secrets)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 10 * time.Minute
	}
	tr := cfg.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "handoff"
	}
	c := &Callback{
		cfg:    cfg,
		signer: signer,
		hc: &http.Client{
			Transport: tr,
			Timeout:   cfg.Timeout,
			// A redirect is a failure: following it would send the
			// signed body to an address nobody configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		m:   m,
		now: time.Now,
	}
	c.breaker = newBreaker("callback", cfg.Breaker, m.circuit.WithLabelValues("callback"))
	return c, nil
}

// Name implements Channel.
func (c *Callback) Name() string { return "callback" }

// Deliver POSTs the CloudEvent. The body is the event as stored, so every
// attempt sends the same bytes; the timestamp and signature are made per
// attempt, as Standard Webhooks requires.
func (c *Callback) Deliver(ctx context.Context, m Outgoing) error {
	if c.gone.Load() {
		return failure(Permanent, "callback_gone", errors.New("the callback endpoint answered 410 Gone earlier; restart after fixing it, then replay"))
	}
	body, err := m.Event.Marshal()
	if err != nil {
		return failure(Permanent, "malformed_event", err)
	}
	return c.breaker.do(ctx, "callback", func(ctx context.Context) error { return c.post(ctx, m.Key, body) })
}

func (c *Callback) post(ctx context.Context, key string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return failure(Permanent, "callback_config", err)
	}
	id := WebhookID(key)
	ts := c.now()
	req.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	req.Header.Set(HeaderWebhookID, id)
	req.Header.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(HeaderWebhookSignature, c.signer.Sign(id, ts, body))

	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil && !isTimeout(err) {
			// Our own shutdown, not the receiver's fault.
			return failure(Transient, "canceled", err)
		}
		e := failure(Transient, "callback_network", fmt.Errorf("post callback: %w", err))
		if isTimeout(err) {
			e.Reason = "callback_timeout"
		}
		// The receiver may have acted on it before the answer was lost.
		e.Uncertain, e.down = true, true
		return e
	}
	// Drain a little so the connection is reused; never read a hostile
	// receiver's body in full.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()

	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusGone:
		c.gone.Store(true)
		return failure(Permanent, "callback_410", errors.New("callback endpoint answered 410 Gone: no more deliveries until a restart"))
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code == 425 || code >= 500:
		e := failure(Transient, statusReason("callback", code), fmt.Errorf("callback endpoint answered %d", code))
		e.RetryAfter = retryAfter(resp.Header, c.now(), c.cfg.MaxRetryAfter)
		e.Uncertain = code >= 500
		e.down = code >= 500
		return e
	case code >= 300 && code < 400:
		return failure(Permanent, "callback_redirect", fmt.Errorf("callback endpoint answered %d (redirects are not followed: configure the final URL)", code))
	default:
		return failure(Permanent, statusReason("callback", code), fmt.Errorf("callback endpoint refused the event with %d", code))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
