package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/handoff-dev/handoff/internal/ordered"
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

	orgSaved atomic.Bool

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
				t.learnOrganization(ctx, lt.OrganizationID)
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
	if err := t.loadOrganization(ctx); err != nil {
		return "", err
	}
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
	// The customer-token grant names the organization: know it first.
	if err := t.loadOrganization(ctx); err != nil {
		return livechat.Token{}, err
	}
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
		t.learnOrganization(ctx, lt.OrganizationID)
		return lt, nil
	}
}

// organizationKey is the store value holding the LiveChat organization ID
// learned from a token answer, so processes that only ever read cached
// tokens still know it.
const organizationKey = "livechat:organization_id"

// loadOrganization makes sure the client knows the organization every
// Customer Chat API call names: configured, learned by this process, kept
// in the store by another one, or, failing all of those, learned from an
// agent token answer (one refresh per process, well inside LiveChat's 25
// live tokens).
func (t *tokens) loadOrganization(ctx context.Context) error {
	if t.lc.KnownOrganizationID() != "" {
		t.saveOrganization(ctx)
		return nil
	}
	org, err := t.st.Value(ctx, organizationKey)
	if err == nil {
		t.lc.SetOrganizationID(org)
		return nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	_, err, _ = t.sf.Do("organization", func() (any, error) {
		var lt livechat.Token
		err := t.br.do(ctx, func(ctx context.Context) error {
			var err error
			lt, err = t.lc.RefreshAgentToken(ctx)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("learn the organization ID: %w", err)
		}
		t.m.tokenReissues.WithLabelValues("agent").Inc()
		st := store.Token{AccessToken: lt.AccessToken, ExpiresAt: lt.ExpiresAt, IssuedAt: time.Now()}
		t.mu.Lock()
		t.agent = st
		t.mu.Unlock()
		_ = t.st.SaveAgentToken(ctx, st)
		t.learnOrganization(ctx, lt.OrganizationID)
		return nil, nil
	})
	if err != nil {
		return err
	}
	if t.lc.KnownOrganizationID() == "" {
		return ordered.Permanent("livechat_no_organization", errors.New("LiveChat named no organization: configure --livechat-organization-id"))
	}
	return nil
}

func (t *tokens) learnOrganization(ctx context.Context, org string) {
	if org == "" {
		return
	}
	t.lc.SetOrganizationID(org)
	t.saveOrganization(ctx)
}

// saveOrganization keeps the known organization in the store once, so
// processes that only read cached tokens know it too; a failed save is
// tried again on the next call.
func (t *tokens) saveOrganization(ctx context.Context) {
	org := t.lc.KnownOrganizationID()
	if org == "" || t.orgSaved.Load() {
		return
	}
	if err := t.st.SetValue(ctx, organizationKey, org, 0); err != nil {
		t.log.Warn("could not keep the LiveChat organization ID in the store", "err", err)
		return
	}
	t.orgSaved.Store(true)
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
