package outbound

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/handoff-dev/handoff/texts"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	chat "google.golang.org/api/chat/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
)

// DefaultChatEndpoint is the Chat API's base URL.
const DefaultChatEndpoint = "https://chat.googleapis.com/"

// chatTextLimit is the Chat API's limit on a message's text, in bytes;
// longer agent messages go out as several messages, in order.
const chatTextLimit = 32000

// GoogleChatConfig configures delivery into Google Chat as the app.
type GoogleChatConfig struct {
	// CredentialsFile is a service-account key (JSON). Empty: Application
	// Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, the metadata
	// server on Google Cloud).
	CredentialsFile string
	// CredentialsJSON is the key itself, instead of a file.
	CredentialsJSON []byte
	// Endpoint overrides the Chat API's base URL (tests, private access).
	Endpoint string
	// TokenURL overrides the key's token_uri (tests); only with a key.
	TokenURL string
	// Timeout bounds one API call, the token exchange included (default 15 s).
	Timeout time.Duration
	// MaxRetryAfter caps the API's Retry-After (default 10 min).
	MaxRetryAfter time.Duration
	Breaker       BreakerConfig
	// Transport carries the requests (default: http.DefaultTransport's).
	Transport http.RoundTripper
	// Texts are the status and closing texts per language (default
	// texts.Defaults()).
	Texts *texts.Set
}

// GoogleChat posts events into the space and thread the user wrote from,
// with spaces.messages.create as the app (scope chat.bot), through Google's
// own client (google.golang.org/api/chat/v1).
type GoogleChat struct {
	cfg     GoogleChatConfig
	svc     *chat.Service
	breaker *breaker
	m       *Metrics
}

// NewGoogleChat loads the credentials and builds the client. Tokens are
// fetched on the first delivery and cached (and renewed) by oauth2.
func NewGoogleChat(ctx context.Context, cfg GoogleChatConfig, m *Metrics) (*GoogleChat, error) {
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultChatEndpoint
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = 10 * time.Minute
	}
	if cfg.Texts == nil {
		d := texts.Defaults()
		cfg.Texts = &d
	}
	tr := cfg.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	// The token exchange uses the same transport and timeout; the context
	// only carries the client to oauth2, it is not kept for cancellation.
	tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: tr, Timeout: cfg.Timeout})

	key := cfg.CredentialsJSON
	if key == nil && cfg.CredentialsFile != "" {
		b, err := os.ReadFile(cfg.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("google chat credentials: %w", err)
		}
		key = b
	}
	var ts oauth2.TokenSource
	switch {
	case key != nil:
		jc, err := google.JWTConfigFromJSON(key, chat.ChatBotScope)
		if err != nil {
			return nil, fmt.Errorf("google chat credentials: want a service-account key: %w", err)
		}
		if cfg.TokenURL != "" {
			jc.TokenURL = cfg.TokenURL
		}
		ts = jc.TokenSource(tokenCtx)
	case cfg.TokenURL != "":
		return nil, errors.New("google chat: a token URL needs a service-account key (--chat-credentials)")
	default:
		creds, err := google.FindDefaultCredentials(tokenCtx, chat.ChatBotScope)
		if err != nil {
			return nil, fmt.Errorf("google chat: no --chat-credentials and no Application Default Credentials: %w", err)
		}
		ts = creds.TokenSource
	}
	hc := &http.Client{
		Transport: &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, ts), Base: tr},
		Timeout:   cfg.Timeout,
	}
	svc, err := chat.NewService(ctx, option.WithHTTPClient(hc), option.WithEndpoint(cfg.Endpoint))
	if err != nil {
		return nil, fmt.Errorf("google chat client: %w", err)
	}
	g := &GoogleChat{cfg: cfg, svc: svc, m: m}
	g.breaker = newBreaker("google_chat", cfg.Breaker, m.circuit.WithLabelValues("google_chat"))
	return g, nil
}

// Name implements Channel.
func (g *GoogleChat) Name() string { return "google_chat" }

var chatAddress = regexp.MustCompile(`^(spaces/[A-Za-z0-9_-]+)(/threads/[A-Za-z0-9_.-]+)?$`)

// Deliver posts the event's text. Every part carries requestId = the event
// ID (plus "-n" from the second part on) and a client-assigned messageId
// derived from it, so a retry after a lost answer returns the first
// message instead of posting again.
func (g *GoogleChat) Deliver(ctx context.Context, m Outgoing) error {
	sm := chatAddress.FindStringSubmatch(m.To.Address)
	if sm == nil {
		return failure(Permanent, "bad_address", fmt.Errorf("google chat: reply_to address %q is not spaces/X or spaces/X/threads/Y", m.To.Address))
	}
	space, threaded := sm[1], sm[2] != ""
	text := Render(m.Event, m.Language, *g.cfg.Texts)
	if text == "" {
		return nil
	}
	for i, part := range splitText(text, chatTextLimit) {
		key := m.Key
		if i > 0 {
			key = fmt.Sprintf("%s-%d", m.Key, i)
		}
		msg := &chat.Message{Text: part}
		if threaded {
			msg.Thread = &chat.Thread{Name: m.To.Address}
		}
		err := g.breaker.do(ctx, "google_chat", func(ctx context.Context) error {
			return g.create(ctx, space, msg, key, threaded)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (g *GoogleChat) create(ctx context.Context, space string, msg *chat.Message, key string, threaded bool) error {
	call := g.svc.Spaces.Messages.Create(space, msg).RequestId(key).MessageId(ClientMessageID(key)).Context(ctx)
	if threaded {
		call = call.MessageReplyOption("REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")
	}
	_, err := call.Do()
	if err == nil {
		return nil
	}
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		if ctx.Err() != nil && !isTimeout(err) {
			return failure(Transient, "canceled", err)
		}
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return tokenFailure(re)
		}
		e := failure(Transient, "google_chat_network", fmt.Errorf("google chat: create message: %w", err))
		e.Uncertain, e.down = true, true
		return e
	}
	switch code := ge.Code; {
	case code == http.StatusConflict:
		// ALREADY_EXISTS: the client-assigned messageId is taken, so an
		// earlier attempt (with another request ID, or past Chat's request
		// ID memory) posted this very message.
		return nil
	case code == http.StatusForbidden || code == http.StatusNotFound:
		// The app was removed from the space, or the space is gone.
		return failure(Permanent, statusReason("google_chat", code), fmt.Errorf("google chat: %w", err))
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		e := failure(Transient, statusReason("google_chat", code), fmt.Errorf("google chat: %w", err))
		e.RetryAfter = retryAfter(ge.Header, time.Now(), g.cfg.MaxRetryAfter)
		e.Uncertain, e.down = code >= 500, code >= 500
		return e
	case code == http.StatusUnauthorized:
		// A token Chat refuses: oauth2 fetches a new one when this one
		// expires; retry rather than lose the message.
		return failure(Transient, "google_chat_401", fmt.Errorf("google chat: %w", err))
	default:
		return failure(Permanent, statusReason("google_chat", code), fmt.Errorf("google chat: %w", err))
	}
}

// tokenFailure classifies a failed token exchange: a refused key (400/401:
// deleted or disabled) needs an operator, so it counts as an outage of the
// destination rather than dead-lettering every user's messages.
func tokenFailure(re *oauth2.RetrieveError) error {
	code := 0
	if re.Response != nil {
		code = re.Response.StatusCode
	}
	e := failure(Transient, "google_chat_token", fmt.Errorf("google chat: token exchange failed (HTTP %d, %s)", code, re.ErrorCode))
	e.down = true
	return e
}

// ClientMessageID is the Chat messageId of a key: "client-" and 32 hex
// digits of its SHA-256. Chat wants at most 63 characters of [a-z0-9-],
// unique in the space; raw event IDs can be neither.
func ClientMessageID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "client-" + hex.EncodeToString(sum[:16])
}

// splitText cuts text into parts of at most limit bytes, at line or word
// breaks where possible and never inside a UTF-8 sequence.
func splitText(text string, limit int) []string {
	var parts []string
	for len(text) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		if i := strings.LastIndexAny(text[:cut], "\n "); i > limit/2 {
			cut = i + 1
		}
		parts = append(parts, text[:cut])
		text = text[cut:]
	}
	return append(parts, text)
}
