package livechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Error types of the Web API error envelope
// {"error":{"type":...,"message":...,"data":{...}}}, one per type the
// reference lists. LiveChat has no numeric codes, so callers classify by
// these strings first and by HTTP status second.
const (
	ErrTypeAuthentication              = "authentication"
	ErrTypeAuthorization               = "authorization"
	ErrTypeChatAnonymized              = "chat_anonymized"
	ErrTypeChatInactive                = "chat_inactive"
	ErrTypeCustomerBanned              = "customer_banned"
	ErrTypeGreetingNotFound            = "greeting_not_found"
	ErrTypeGroupNotFound               = "group_not_found"
	ErrTypeGroupOffline                = "group_offline"
	ErrTypeGroupUnavailable            = "group_unavailable"
	ErrTypeGroupsOffline               = "groups_offline"
	ErrTypeInternal                    = "internal"
	ErrTypeLicenseExpired              = "license_expired"
	ErrTypeLimitReached                = "limit_reached"
	ErrTypeNotAllowed                  = "not_allowed"
	ErrTypeNotFound                    = "not_found"
	ErrTypePendingRequestsLimitReached = "pending_requests_limit_reached"
	ErrTypeRequestTimeout              = "request_timeout"
	ErrTypeServiceUnavailable          = "service_unavailable"
	ErrTypeTooManyRequests             = "too_many_requests"
	ErrTypeUnsupportedVersion          = "unsupported_version"
	ErrTypeUsersLimitReached           = "users_limit_reached"
	ErrTypeValidation                  = "validation"
	ErrTypeWrongProductVersion         = "wrong_product_version"
	ErrTypeMisdirectedRequest          = "misdirected_request"
	ErrTypeEntityTooLarge              = "entity_too_large"
	ErrTypeLicenseNotFound             = "license_not_found"
)

// ErrorTypes lists every Web API error type above, for tests and tools
// that need to walk them.
var ErrorTypes = []string{
	ErrTypeAuthentication, ErrTypeAuthorization, ErrTypeChatAnonymized,
	ErrTypeChatInactive, ErrTypeCustomerBanned, ErrTypeGreetingNotFound,
	ErrTypeGroupNotFound, ErrTypeGroupOffline, ErrTypeGroupUnavailable,
	ErrTypeGroupsOffline, ErrTypeInternal, ErrTypeLicenseExpired,
	ErrTypeLimitReached, ErrTypeNotAllowed, ErrTypeNotFound,
	ErrTypePendingRequestsLimitReached, ErrTypeRequestTimeout,
	ErrTypeServiceUnavailable, ErrTypeTooManyRequests,
	ErrTypeUnsupportedVersion, ErrTypeUsersLimitReached, ErrTypeValidation,
	ErrTypeWrongProductVersion, ErrTypeMisdirectedRequest,
	ErrTypeEntityTooLarge, ErrTypeLicenseNotFound,
}

// OAuth exception values of the accounts service envelope
// {"oauth_exception":...,"exception_description":...}. They become
// Error.Type unchanged.
const (
	OAuthInvalidRequest          = "invalid_request"
	OAuthUnauthorizedClient      = "unauthorized_client"
	OAuthAccessDenied            = "access_denied"
	OAuthServerError             = "server_error"
	OAuthTemporarilyUnavailable  = "temporarily_unavailable"
	OAuthUnsupportedGrantType    = "unsupported_grant_type"
	OAuthInvalidGrant            = "invalid_grant"
	OAuthInvalidClient           = "invalid_client"
	OAuthForbidden               = "forbidden"
	OAuthConflict                = "conflict"
	OAuthResourceNotFound        = "resource_not_found"
	maxErrorMessageFromRawBodies = 200
)

// Error is a non-200 answer from LiveChat, decoded from either the Web API
// or the accounts error envelope.
type Error struct {
	// Action is the Web API action ("send_event") or the accounts
	// operation ("token", "customer_token").
	Action  string
	Status  int
	Type    string
	Message string
	Data    map[string]any
	// RetryAfter is the parsed Retry-After header; zero when absent.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("livechat: ")
	b.WriteString(e.Action)
	b.WriteString(": ")
	if e.Type != "" {
		b.WriteString(e.Type)
	} else {
		b.WriteString("error")
	}
	fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Retryable reports whether the same request may succeed later without any
// change: the transient types the reference lists and every 5xx.
func (e *Error) Retryable() bool {
	switch e.Type {
	case ErrTypeInternal, ErrTypeServiceUnavailable, ErrTypeRequestTimeout,
		ErrTypeTooManyRequests, ErrTypePendingRequestsLimitReached,
		OAuthServerError, OAuthTemporarilyUnavailable:
		return true
	}
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// knownType reports whether t is one of the Web API error types; statuses
// are only consulted for errors whose type says nothing.
func knownType(t string) bool {
	for _, k := range ErrorTypes {
		if k == t {
			return true
		}
	}
	return false
}

// IsAuthentication reports whether err means the token was refused
// (expired or revoked): get a new token and retry once. A bare 401 counts
// too, because the accounts service answers bad agent tokens with its own
// exception names.
func IsAuthentication(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Type == ErrTypeAuthentication || (!knownType(e.Type) && e.Status == http.StatusUnauthorized)
}

// IsChatInactive reports whether err says the chat has no active thread,
// so the caller should resume it.
func IsChatInactive(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Type == ErrTypeChatInactive
}

// IsType reports whether err is an *Error of type t.
func IsType(err error, t string) bool {
	var e *Error
	return errors.As(err, &e) && e.Type == t
}

// IsRetryable reports whether retrying the same request later may succeed:
// a transient LiveChat error or a network failure. Retrying a request that
// IsUncertain must be preceded by a reconciliation.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable()
	}
	var te *transportError
	if errors.As(err, &te) {
		// The caller's own cancellation is not a reason to try again.
		return !errors.Is(te.err, context.Canceled)
	}
	return false
}

// IsUncertain reports whether the request may have been applied even though
// no success answer arrived: LiveChat's own request_timeout, any 5xx, or a
// transport failure after the request was fully written (timeout, reset,
// EOF). The caller must look for the outcome (FindEvent, ListChats) before
// sending again, because LiveChat has no idempotency key.
func IsUncertain(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Type == ErrTypeRequestTimeout || e.Status >= 500
	}
	var te *transportError
	if errors.As(err, &te) {
		return te.written
	}
	return false
}

// RetryAfter returns how long LiveChat asked the caller to wait, or zero.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// transportError is a failure below HTTP: no status line was read. written
// records whether the whole request had been sent, which is what makes the
// outcome unknown.
type transportError struct {
	action  string
	err     error
	written bool
}

func (e *transportError) Error() string {
	if e.written {
		return fmt.Sprintf("livechat: %s: no answer after the request was sent: %v", e.action, e.err)
	}
	return fmt.Sprintf("livechat: %s: %v", e.action, e.err)
}

func (e *transportError) Unwrap() error { return e.err }

// Timeout lets net.Error-style checks see through the wrapper.
func (e *transportError) Timeout() bool {
	var ne net.Error
	return errors.Is(e.err, context.DeadlineExceeded) || (errors.As(e.err, &ne) && ne.Timeout())
}

// isConnectionLoss reports errors that mean the peer went away mid-exchange.
func isConnectionLoss(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// Dates in the past and garbage give zero.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		const maxSeconds = int64(1<<63-1) / int64(time.Second)
		if n > maxSeconds {
			n = maxSeconds
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// webErrorEnvelope is the Web API error body.
type webErrorEnvelope struct {
	Error *struct {
		Type    string         `json:"type"`
		Message string         `json:"message"`
		Data    map[string]any `json:"data"`
	} `json:"error"`
}

// oauthErrorEnvelope is the accounts service error body; some OAuth
// answers use the RFC 6749 names instead, so both are read.
type oauthErrorEnvelope struct {
	Exception   string `json:"oauth_exception"`
	Description string `json:"exception_description"`
	Error       string `json:"error"`
	ErrorDesc   string `json:"error_description"`
}

// decodeError turns a non-200 answer into *Error. It never fails: a body
// that is neither envelope keeps its status and a short excerpt as the
// message.
func decodeError(action string, status int, body []byte, retryAfter time.Duration) *Error {
	e := &Error{Action: action, Status: status, RetryAfter: retryAfter}
	var w webErrorEnvelope
	if json.Unmarshal(body, &w) == nil && w.Error != nil && w.Error.Type != "" {
		e.Type, e.Message, e.Data = w.Error.Type, w.Error.Message, w.Error.Data
		return e
	}
	var o oauthErrorEnvelope
	if json.Unmarshal(body, &o) == nil {
		switch {
		case o.Exception != "":
			e.Type, e.Message = o.Exception, o.Description
			return e
		case o.Error != "":
			e.Type, e.Message = o.Error, o.ErrorDesc
			return e
		}
	}
	if status == http.StatusTooManyRequests {
		e.Type = ErrTypeTooManyRequests
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > maxErrorMessageFromRawBodies {
		msg = msg[:maxErrorMessageFromRawBodies]
	}
	e.Message = strings.ToValidUTF8(msg, "?")
	return e
}
