package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/publisher"
	"github.com/handoff-dev/handoff/store"
)

// httpError is an error with the status and machine-readable code the
// client gets in {"error":{"code":...,"reason":...}}.
type httpError struct {
	status int
	code   string
	reason string
}

func (e *httpError) Error() string { return e.code + ": " + e.reason }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, "bad_request", fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","reason":"cannot encode response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, reason string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="handoff"`)
	}
	writeJSON(w, status, errorBody{errorDetail{Code: code, Reason: reason}})
}

// fail answers err: client mistakes as 4xx with their reason, NATS or
// Redis outages and timeouts as 503 (so Dialogflow and Chat see a failure
// and the user gets the bot's fallback, never a silent drop), anything else
// as 500 without internals.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	var mbe *http.MaxBytesError
	var le *limitError
	switch {
	case errors.As(err, &le):
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(le.retryAfter)))
		switch le.limit {
		case limitPending:
			writeError(w, http.StatusServiceUnavailable, "no_agents", "too many conversations are waiting for an agent; retry later")
		case limitMessage:
			writeError(w, http.StatusTooManyRequests, "rate_limited", "too many messages in this conversation; retry after the Retry-After seconds")
		default:
			writeError(w, http.StatusTooManyRequests, "rate_limited", "too many handoff requests; retry after the Retry-After seconds")
		}
	case errors.As(err, &he):
		writeError(w, he.status, he.code, he.reason)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body is larger than %d bytes", mbe.Limit))
	case errors.Is(err, handoff.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid_event", err.Error())
	case errors.Is(err, publisher.ErrUnavailable), errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrConflict),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// All retryable: a retry carries the same event ID, so it cannot
		// store the event twice.
		g.log.Warn("request failed: backend unavailable", "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the event store is unavailable, retry later")
	default:
		g.log.Error("request failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

// checkContentType accepts application/json with an optional UTF-8
// charset; JSON has no other legal encoding on the wire.
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return errors.New("Content-Type must be application/json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return fmt.Errorf("Content-Type must be application/json, got %q", ct)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return fmt.Errorf("charset must be utf-8, got %q", cs)
	}
	return nil
}

// readJSON decodes the (size-limited) body into v. Unknown fields are
// ignored, as Google adds fields without notice. An empty body is an error
// unless allowEmpty.
func readJSON(r *http.Request, v any, allowEmpty bool) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return decodeJSON(body, v, allowEmpty)
}

// readBody reads the size-limited body; going over the limit is returned
// as the *http.MaxBytesError that fail maps to 413.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, badRequest("reading body: %v", err)
	}
	return body, nil
}

func decodeJSON(body []byte, v any, allowEmpty bool) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest("body is empty, want a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		var pe *time.ParseError
		switch {
		case errors.As(err, &se):
			return badRequest("malformed JSON at byte %d: %v", se.Offset, se)
		case errors.As(err, &te):
			// In the request's own terms: JSON kinds, never Go types.
			field := te.Field
			if field == "" {
				return badRequest("the body must be a JSON %s, got JSON %s", jsonKind(te.Type), te.Value)
			}
			return badRequest("field %q must be a JSON %s, got JSON %s", field, jsonKind(te.Type), te.Value)
		case errors.As(err, &pe):
			// Go's message quotes its reference layout ("2006-01-02...")
			// and no field: find the field by the value it refused.
			field := "a time field"
			if path := pathOfString(body, pe.Value); path != "" {
				field = fmt.Sprintf("field %q", path)
			}
			return badRequest("%s must be an RFC 3339 time such as \"2026-11-20T10:00:00Z\", got %q", field, truncate(pe.Value))
		}
		return badRequest("malformed JSON: %v", err)
	}
	return nil
}

// pathOfString is the JSON path (a.b[2].c) of the first string in body
// equal to value, or "".
func pathOfString(body []byte, value string) string {
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		return ""
	}
	var walk func(v any, path string) (string, bool)
	walk = func(v any, path string) (string, bool) {
		switch x := v.(type) {
		case string:
			return path, x == value
		case []any:
			for i, e := range x {
				if p, ok := walk(e, fmt.Sprintf("%s[%d]", path, i)); ok {
					return p, true
				}
			}
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if path != "" {
					p = path + "." + k
				}
				if p, ok := walk(x[k], p); ok {
					return p, true
				}
			}
		}
		return "", false
	}
	p, _ := walk(doc, "")
	return p
}

// jsonKind names the JSON kind a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		// "must be a JSON number, got JSON number 1.5" would say nothing.
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return "value"
}
