package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/livechat"
	"github.com/handoff-dev/handoff/store"
	"golang.org/x/sync/singleflight"
)

// refreshAhead is the share of a token's lifetime left when it is
// re-issued: LiveChat's 8-hour tokens are renewed with about 1.5 h to go.
const refreshAhead = 0.2

// tokens hands out LiveChat tokens: the deployment's one agent token and a
// token per customer. Each is cached in memory and in the store, and renewed
// by one caller per process (single flight) and one process per deployment
// (a short store lock): LiveChat keeps only 25 live agent tokens per app and
// user and silently revokes the oldest, so a fleet that refreshed per
// replica would log itself out.
type tokens struct {
	lc  *livechat.Client
	st  store.Store
	br  *breaker
	m   *metrics
	log *slog.Logger
	sf  singleflight.Group

	mu        sync.Mutex
	agent     store.Token
	customers map[string]store.Token
	// refused remembers tokens LiveChat answered `authentication` to, so
	// a copy of them in the store is not trusted again.
	refused map[string]bool
}

func newTokens(lc *livechat.Client, st store.Store, br *breaker, m *metrics, log *slog.Logger) *tokens {
	return &tokens{lc: lc, st: st, br: br, m: m, log: log, customers: map[string]store.Token{}, refused: map[string]bool{}}
}

const (
	lockTTL  = 10 * time.Second
	lockWait = 15 * time.Second
)

// agentToken returns a fresh agent access token.
func (t *tokens) agentToken(ctx context.Context) (string, error) {
	t.mu.Lock()
	cached := t.agent
	t.mu.Unlock()
	if cached.Fresh(time.Now(), refreshAhead) && !t.isRefused(cached.AccessToken) {
		return cached.AccessToken, nil
	}
	v, err, _ := t.sf.Do("agent", func() (any, error) {
		tok, err := t.renew(ctx, "agent-token",
			func(ctx context.Context) (store.Token, error) { return t.st.AgentToken(ctx) },
			func(ctx context.Context) (store.Token, error) {
				var lt livechat.Token
				err := t.br.do(ctx, func(ctx context.Context) error {
					var err error
					lt, err = t.lc.RefreshAgentToken(ctx)
					return err
				})
				if err != nil {
					return store.Token{}, fmt.Errorf("refresh agent token: %w", err)
				}
				st := store.Token{AccessToken: lt.AccessToken, ExpiresAt: lt.ExpiresAt, IssuedAt: time.Now()}
				t.m.tokenReissues.WithLabelValues("agent").Inc()
				return st, t.st.SaveAgentToken(ctx, st)
			})
		if err != nil {
			return nil, err
		}
		t.mu.Lock()
		t.agent = tok
		t.mu.Unlock()
		return tok.AccessToken, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// customer returns a fresh token for an existing customer.
func (t *tokens) customer(ctx context.Context, customerID string) (string, error) {
	t.mu.Lock()
	cached := t.customers[customerID]
	t.mu.Unlock()
	if cached.Fresh(time.Now(), refreshAhead) && !t.isRefused(cached.AccessToken) {
		return cached.AccessToken, nil
	}
	v, err, _ := t.sf.Do("customer:"+customerID, func() (any, error) {
		tok, err := t.renew(ctx, "customer-token:"+customerID,
			func(ctx context.Context) (store.Token, error) { return t.st.CustomerToken(ctx, customerID) },
			func(ctx context.Context) (store.Token, error) {
				lt, err := t.issue(ctx, customerID)
				if err != nil {
					return store.Token{}, err
				}
				st := store.Token{AccessToken: lt.AccessToken, ExpiresAt: lt.ExpiresAt, IssuedAt: time.Now()}
				t.m.tokenReissues.WithLabelValues("customer").Inc()
				return st, t.st.SaveCustomerToken(ctx, customerID, st)
			})
		if err != nil {
			return nil, err
		}
		t.mu.Lock()
		t.customers[customerID] = tok
		t.mu.Unlock()
		return tok.AccessToken, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// newCustomer creates a LiveChat customer and caches its token.
func (t *tokens) newCustomer(ctx context.Context) (livechat.Token, error) {
	lt, err := t.issue(ctx, "")
	if err != nil {
		return livechat.Token{}, err
	}
	if lt.EntityID == "" {
		return livechat.Token{}, errors.New("livechat: customer token without entity_id")
	}
	st := store.Token{AccessToken: lt.AccessToken, ExpiresAt: lt.ExpiresAt, IssuedAt: time.Now()}
	t.mu.Lock()
	t.customers[lt.EntityID] = st
	t.mu.Unlock()
	if err := t.st.SaveCustomerToken(ctx, lt.EntityID, st); err != nil {
		t.log.Warn("could not cache the new customer's token", "err", err)
	}
	return lt, nil
}

// issue asks LiveChat for a customer token (a new customer when
// customerID is empty), renewing the agent token once if LiveChat refused it.
func (t *tokens) issue(ctx context.Context, customerID string) (livechat.Token, error) {
	for try := 0; ; try++ {
		agent, err := t.agentToken(ctx)
		if err != nil {
			return livechat.Token{}, err
		}
		var lt livechat.Token
		err = t.br.do(ctx, func(ctx context.Context) error {
			var err error
			lt, err = t.lc.IssueCustomerToken(ctx, agent, customerID)
			return err
		})
		if err != nil && livechat.IsAuthentication(err) && try == 0 {
			t.refuse(agent)
			continue
		}
		if err != nil {
			return livechat.Token{}, fmt.Errorf("issue customer token: %w", err)
		}
		return lt, nil
	}
}

// renew returns the store's copy when another process renewed it already;
// otherwise it takes the lock and renews. Without the lock it waits for the
// holder's result.
func (t *tokens) renew(ctx context.Context, lock string, load, fetch func(context.Context) (store.Token, error)) (store.Token, error) {
	deadline := time.Now().Add(lockWait)
	for {
		cur, err := load(ctx)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.Token{}, err
		}
		if cur.Fresh(time.Now(), refreshAhead) && !t.isRefused(cur.AccessToken) {
			return cur, nil
		}
		release, ok, err := t.st.Lock(ctx, lock, lockTTL)
		if err != nil {
			return store.Token{}, err
		}
		if ok {
			// Look again under the lock: the previous holder may just
			// have saved a new token.
			cur, err := load(ctx)
			if err == nil && cur.Fresh(time.Now(), refreshAhead) && !t.isRefused(cur.AccessToken) {
				release()
				return cur, nil
			}
			tok, err := fetch(ctx)
			release()
			return tok, err
		}
		if time.Now().After(deadline) {
			return store.Token{}, fmt.Errorf("waiting for %s: another worker holds the lock", lock)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return store.Token{}, ctx.Err()
		}
	}
}

func (t *tokens) isRefused(tok string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refused[tok]
}

func (t *tokens) refuse(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.refused) > 10000 {
		clear(t.refused)
	}
	t.refused[tok] = true
}

// invalidateCustomer drops a customer token LiveChat refused.
func (t *tokens) invalidateCustomer(customerID string) {
	t.mu.Lock()
	tok := t.customers[customerID]
	delete(t.customers, customerID)
	t.mu.Unlock()
	if tok.AccessToken != "" {
		t.refuse(tok.AccessToken)
	}
}
