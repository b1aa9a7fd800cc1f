package livechatsim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// Faults is what the simulator does wrong on purpose. The zero value is a
// healthy LiveChat. Rates are probabilities per request in [0, 1]; an
// empty action list or "*" means every action.
type Faults struct {
	Latency *Latency `json:"latency,omitempty"`
	// Errors answer a share of requests with an error instead of
	// applying them.
	Errors []ErrorFault `json:"errors,omitempty"`
	// RateLimit answers a share of requests 429 too_many_requests.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// TokenLifetimeS, when set, is the lifetime of tokens issued from now
	// on, in seconds.
	TokenLifetimeS int `json:"token_lifetime_s,omitempty"`
	// DropAfterApply applies a share of requests and then closes the
	// connection without answering: the caller cannot know the outcome.
	DropAfterApply *Drop `json:"drop_after_apply,omitempty"`
	// AgentsOffline makes every group offline: list_group_statuses says
	// so and start_chat/resume_chat without continuous fail with
	// groups_offline.
	AgentsOffline bool `json:"agents_offline,omitempty"`
	// Region, when set, is where the license lives: Web API requests
	// naming another region (X-Region, or the token prefix) fail with
	// misdirected_request and error.data.region.
	Region string `json:"region,omitempty"`
	// EncodeTokens makes token answers URL-encode the token
	// ("dal%3A..."), as some LiveChat answers do.
	EncodeTokens bool `json:"encode_tokens,omitempty"`
	// Legacy and Deprecation, when set, are sent as those headers on
	// every Web API answer.
	Legacy      string `json:"legacy,omitempty"`
	Deprecation string `json:"deprecation,omitempty"`
}

// Latency delays answers: every request by FixedMS, and a TailRatio share
// by TailMS more. With AfterApply the request is applied first and only
// the answer is late: a slow start_chat whose chat already exists, so an
// agent can write to it before the caller knows its ID.
type Latency struct {
	FixedMS    int      `json:"fixed_ms,omitempty"`
	TailMS     int      `json:"tail_ms,omitempty"`
	TailRatio  float64  `json:"tail_ratio,omitempty"`
	Actions    []string `json:"actions,omitempty"`
	AfterApply bool     `json:"after_apply,omitempty"`
}

// ErrorFault answers Rate of the requests for Action with an error of
// Type. Status 0 uses the type's usual status; RetryAfter, when set, is
// sent verbatim as the Retry-After header (seconds or an HTTP date).
type ErrorFault struct {
	Action     string         `json:"action"`
	Rate       float64        `json:"rate"`
	Status     int            `json:"status,omitempty"`
	Type       string         `json:"type"`
	Message    string         `json:"message,omitempty"`
	Data       map[string]any `json:"data,omitempty"`
	RetryAfter string         `json:"retry_after,omitempty"`
}

// RateLimit answers Rate of the requests 429 with Retry-After.
type RateLimit struct {
	Rate        float64  `json:"rate"`
	RetryAfterS int      `json:"retry_after_s,omitempty"`
	Actions     []string `json:"actions,omitempty"`
}

// Drop is DropAfterApply's share and actions.
type Drop struct {
	Rate    float64  `json:"rate"`
	Actions []string `json:"actions,omitempty"`
}

// compiledFaults is Faults checked and indexed for the request path.
type compiledFaults struct {
	Faults
	errors map[string][]ErrorFault // by action; "*" for all
}

func matches(actions []string, action string) bool {
	if len(actions) == 0 {
		return true
	}
	for _, a := range actions {
		if a == action || a == "*" {
			return true
		}
	}
	return false
}

func validRate(r float64) bool { return r >= 0 && r <= 1 }

// SetFaults replaces the active faults.
func (s *Sim) SetFaults(f Faults) error {
	c := &compiledFaults{Faults: f, errors: map[string][]ErrorFault{}}
	for i, e := range f.Errors {
		if !validRate(e.Rate) {
			return fmt.Errorf("errors[%d]: rate %v not in [0,1]", i, e.Rate)
		}
		if e.Type == "" {
			e.Type = "internal"
		}
		if e.Status == 0 {
			e.Status = statusFor(e.Type)
		}
		if e.Status < 400 || e.Status > 599 {
			return fmt.Errorf("errors[%d]: status %d is not an error", i, e.Status)
		}
		a := e.Action
		if a == "" {
			a = "*"
		}
		c.errors[a] = append(c.errors[a], e)
	}
	if l := f.Latency; l != nil && (l.FixedMS < 0 || l.TailMS < 0 || !validRate(l.TailRatio)) {
		return fmt.Errorf("latency: negative or out of range")
	}
	if f.RateLimit != nil && !validRate(f.RateLimit.Rate) {
		return fmt.Errorf("rate_limit: rate %v not in [0,1]", f.RateLimit.Rate)
	}
	if f.DropAfterApply != nil && !validRate(f.DropAfterApply.Rate) {
		return fmt.Errorf("drop_after_apply: rate %v not in [0,1]", f.DropAfterApply.Rate)
	}
	if f.TokenLifetimeS < 0 {
		return fmt.Errorf("token_lifetime_s: negative")
	}
	s.faults.Store(c)
	return nil
}

// Faults returns the active faults.
func (s *Sim) Faults() Faults { return s.faults.Load().Faults }

// ResetFaults makes the simulator healthy again.
func (s *Sim) ResetFaults() { s.faults.Store(&compiledFaults{}) }

// roll reports true with probability rate.
func roll(rate float64) bool {
	return rate > 0 && (rate >= 1 || rand.Float64() < rate)
}

// delay waits out the latency fault before the request is applied, or
// until the request is abandoned.
func (f *compiledFaults) delay(ctx context.Context, action string) {
	if l := f.Latency; l != nil && !l.AfterApply {
		f.wait(ctx, action)
	}
}

// delayAnswer waits out an after_apply latency fault.
func (f *compiledFaults) delayAnswer(ctx context.Context, action string) {
	if l := f.Latency; l != nil && l.AfterApply {
		f.wait(ctx, action)
	}
}

func (f *compiledFaults) wait(ctx context.Context, action string) {
	l := f.Latency
	if l == nil || !matches(l.Actions, action) {
		return
	}
	d := time.Duration(l.FixedMS) * time.Millisecond
	if roll(l.TailRatio) {
		d += time.Duration(l.TailMS) * time.Millisecond
	}
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// injected returns the error to answer instead of applying the request.
func (f *compiledFaults) injected(action string) *apiError {
	if rl := f.RateLimit; rl != nil && matches(rl.Actions, action) && roll(rl.Rate) {
		e := &apiError{Type: "too_many_requests", Message: "Requests limit reached"}
		if rl.RetryAfterS > 0 {
			e.retryAfter = strconv.Itoa(rl.RetryAfterS)
		}
		return e
	}
	for _, key := range [2]string{action, "*"} {
		for _, ef := range f.errors[key] {
			if roll(ef.Rate) {
				msg := ef.Message
				if msg == "" {
					msg = "Injected " + ef.Type
				}
				return &apiError{Type: ef.Type, Message: msg, Data: ef.Data, status: ef.Status, retryAfter: ef.RetryAfter}
			}
		}
	}
	return nil
}

func (f *compiledFaults) drop(action string) bool {
	d := f.DropAfterApply
	return d != nil && matches(d.Actions, action) && roll(d.Rate)
}

func (s *Sim) tokenLifetime() time.Duration {
	if f := s.faults.Load(); f.TokenLifetimeS > 0 {
		return time.Duration(f.TokenLifetimeS) * time.Second
	}
	return s.opts.TokenLifetime
}
