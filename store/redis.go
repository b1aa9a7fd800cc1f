package store

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/redis/go-redis/v9"
)

// Defaults of the Redis options.
const (
	DefaultPrefix           = "handoff:"
	DefaultMaxUpdateRetries = 10
	DefaultConversationTTL  = 30 * 24 * time.Hour
	DefaultTurnsTTL         = 24 * time.Hour
)

// Redis is the production Store. It works on a single Redis, behind
// Sentinel, and on Redis Cluster: every command and every script touches one
// key, so no operation ever needs two keys in one slot.
//
// # Keys
//
// All keys start with the prefix (WithPrefix, default "handoff:"). Braces
// mark Cluster hash tags: the keys of one conversation share a slot. A
// prefix should not contain braces (it would pin every key to one slot).
//
//	key                          holds                                    TTL
//	conv:{<id>}                  Conversation as JSON                     conversation TTL, refreshed on every write
//	chat:<chatID>                conversation ID (chat index)             conversation TTL, refreshed when the chat or mode changes
//	turns:{<id>}                 list of bot-side transcript entries      turns TTL, refreshed on every append
//	                             (JSON, oldest first, newest max kept)
//	token:customer:<customerID>  Token as JSON                            until Token.ExpiresAt
//	token:agent                  Token as JSON                            until Token.ExpiresAt
//	value:<name>                 a setting (e.g. the organization ID)     as given to SetValue; none for 0
//	seen:<key>                   Remember marker (random writer token)    as given to Remember
//	lock:<name>                  Lock holder's random token               as given to Lock
//	modes:<mode>                 sorted set: conversation ID scored by    none; members older than the conversation
//	                             when it entered the mode                 TTL are pruned by CountByMode
//
// # Writes are idempotent
//
// go-redis retries a command whose reply was lost (MaxRetries, default 3),
// so a write may reach Redis twice. Every write here is safe to repeat:
//
//   - the conversation is written by a compare-and-set script that reports
//     success, without writing again, when the stored bytes are already the
//     bytes it was asked to write;
//   - appended turns carry a random nonce and the append script skips an
//     entry already in the list;
//   - Remember and Lock store a random token and the claim script treats a
//     key that already holds the caller's own token as claimed by the caller;
//   - SET of tokens, values and the chat index, DEL and compare-and-delete
//     are idempotent by nature.
//
// One window remains: if another writer updates a conversation between a
// lost reply and go-redis' retry, the retry is reported as a version
// conflict and fn runs again on the newer record. Callers fence their
// updates with LastSeq/LastEventID, so a second run is a no-op for them.
//
// # The chat index
//
// The chat index key cannot share a slot with its conversation (it is found
// by chat ID, before the conversation ID is known), so on Cluster one script
// cannot write both. UpdateConversation therefore writes in this order:
//
//  1. the record, by the compare-and-set script on conv:{<id>} alone;
//  2. chat:<new chatID> → id (SET, idempotent, TTL refreshed);
//  3. chat:<old chatID> deleted only if it still names id (compare-and-delete).
//
// The record is the truth and the index is a hint: ConversationByChat
// checks that the record it points to still has that ChatID, so a stale
// index entry (a crash between steps 1 and 3) is never believed. A missing
// entry (a crash between 1 and 2, or a reader running between them) reads
// as ErrNotFound; the gateway's LiveChat webhook answers that as an unknown
// chat and LiveChat does not deliver it again (see "The reverse path" in
// ARCHITECTURE.md). When step 2 or 3 fails,
// UpdateConversation returns the written record and an error wrapping
// ErrUnavailable; the next update of that conversation, even one that
// aborts, writes the index again.
type Redis struct {
	client           redis.UniversalClient
	prefix           string
	maxUpdateRetries int
	turnsTTL         time.Duration
	convTTL          time.Duration
	now              func() time.Time
}

var _ Store = (*Redis)(nil)

// Option configures a Redis store.
type Option func(*Redis)

// WithPrefix puts every key under p (default "handoff:"), so that several
// deployments or tests can share one Redis.
func WithPrefix(p string) Option { return func(r *Redis) { r.prefix = p } }

// WithMaxUpdateRetries sets how many times UpdateConversation tries before
// it gives up with ErrConflict (default 10). Values below 1 mean 1.
func WithMaxUpdateRetries(n int) Option {
	return func(r *Redis) { r.maxUpdateRetries = max(n, 1) }
}

// WithTurnsTTL sets how long the bot-side transcript of a conversation is
// kept after its last AppendTurn (default 24 hours).
func WithTurnsTTL(d time.Duration) Option { return func(r *Redis) { r.turnsTTL = d } }

// WithConversationTTL sets how long a conversation record and its chat index
// entry are kept after the last update (default 30 days): idle
// conversations expire and come back as new bot conversations.
func WithConversationTTL(d time.Duration) Option { return func(r *Redis) { r.convTTL = d } }

// NewRedis returns a Store on client, which it owns: Close closes it. The
// client should have DisableIdentity set and maintenance notifications off
// (as ParseRedisURL does) to keep open-source Redis' log quiet.
func NewRedis(client redis.UniversalClient, opts ...Option) *Redis {
	r := &Redis{
		client:           client,
		prefix:           DefaultPrefix,
		maxUpdateRetries: DefaultMaxUpdateRetries,
		turnsTTL:         DefaultTurnsTTL,
		convTTL:          DefaultConversationTTL,
		now:              time.Now,
	}
	for _, o := range opts {
		o(r)
	}
	if r.turnsTTL <= 0 {
		r.turnsTTL = DefaultTurnsTTL
	}
	if r.convTTL <= 0 {
		r.convTTL = DefaultConversationTTL
	}
	return r
}

// OpenRedis connects to the Redis that rawURL names (see ParseRedisURL for
// the forms accepted) and returns a Store on it. It does not dial: the
// client connects on first use, so the service can start before Redis; call
// Ping to check.
func OpenRedis(rawURL string, opts ...Option) (*Redis, error) {
	o, err := ParseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	return NewRedis(o.NewClient(), opts...), nil
}

// Key names, relative to the prefix. See the Keys section of Redis.
func (r *Redis) convKey(id string) string     { return r.prefix + "conv:{" + id + "}" }
func (r *Redis) turnsKey(id string) string    { return r.prefix + "turns:{" + id + "}" }
func (r *Redis) chatKey(chatID string) string { return r.prefix + "chat:" + chatID }
func (r *Redis) customerTokenKey(customerID string) string {
	return r.prefix + "token:customer:" + customerID
}
func (r *Redis) agentTokenKey() string       { return r.prefix + "token:agent" }
func (r *Redis) valueKey(name string) string { return r.prefix + "value:" + name }
func (r *Redis) seenKey(key string) string   { return r.prefix + "seen:" + key }
func (r *Redis) lockKey(name string) string  { return r.prefix + "lock:" + name }

// casScript writes a conversation record only if the stored version is
// ARGV[1] (an absent record is version 0). If the key already holds exactly
// ARGV[2], this is go-redis retrying our own write after a lost reply: report
// success without writing again.
//
// KEYS[1] conv key; ARGV[1] expected version; ARGV[2] new JSON; ARGV[3] TTL ms.
// Returns 1 when written (or already written), 0 on a version conflict.
var casScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then
  return 1
end
local v = 0
if cur then
  v = tonumber(cjson.decode(cur)['version']) or 0
end
if v ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// delIfScript deletes KEYS[1] only while it holds ARGV[1]: releasing a lock
// someone else has taken since, or dropping a chat index entry another
// conversation now owns, must not happen.
var delIfScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// claimScript is SET NX PX that stays true when repeated: a key that already
// holds the caller's own token was claimed by the caller (a retried command
// whose first reply was lost).
//
// KEYS[1] key; ARGV[1] token; ARGV[2] TTL ms. Returns 1 if claimed.
var claimScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
`)

// appendScript appends an entry (which carries a unique nonce) unless it is
// already in the list, keeps the newest ARGV[2] entries and refreshes the TTL.
//
// KEYS[1] turns key; ARGV[1] entry; ARGV[2] max; ARGV[3] TTL ms.
var appendScript = redis.NewScript(`
if redis.call('LPOS', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// fail wraps err with the operation; errors that mean Redis cannot be
// reached (rather than that it refused the command) also wrap ErrUnavailable.
func fail(op string, err error) error {
	if unavailable(err) {
		return fmt.Errorf("store: %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		// The caller gave up; that says nothing about Redis.
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		// Redis answered; only these answers mean "not now".
		return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) ||
			redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
			redis.IsMasterDownError(err) || redis.IsMaxClientsError(err)
	}
	// Dial and I/O errors, timeouts, an exhausted pool, a closed client.
	return true
}

func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

// Conversation implements Store.
func (r *Redis) Conversation(ctx context.Context, id string) (handoff.Conversation, error) {
	c, _, err := r.load(ctx, id)
	if err != nil {
		return handoff.Conversation{}, fail(fmt.Sprintf("conversation %q", id), err)
	}
	return c, nil
}

// load reads a conversation, returning the default bot record for one never
// seen, and the raw JSON (nil then).
func (r *Redis) load(ctx context.Context, id string) (handoff.Conversation, []byte, error) {
	raw, err := r.client.Get(ctx, r.convKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return handoff.Conversation{ID: id, Mode: handoff.ModeBot}, nil, nil
	}
	if err != nil {
		return handoff.Conversation{}, nil, err
	}
	c, err := decodeConv(id, raw)
	return c, raw, err
}

func decodeConv(id string, raw []byte) (handoff.Conversation, error) {
	if raw == nil {
		return handoff.Conversation{ID: id, Mode: handoff.ModeBot}, nil
	}
	var c handoff.Conversation
	if err := json.Unmarshal(raw, &c); err != nil {
		return handoff.Conversation{}, fmt.Errorf("decode record: %w", err)
	}
	return c, nil
}

// UpdateConversation implements Store. See the type's doc for how the chat
// index is kept.
func (r *Redis) UpdateConversation(ctx context.Context, id string, fn func(*handoff.Conversation) error) (handoff.Conversation, error) {
	return r.update(ctx, id, nil, fn)
}

// UpdateConversationFrom implements Store: the first attempt starts from
// cur instead of reading the record, saving a round trip for a caller that
// has just read it.
func (r *Redis) UpdateConversationFrom(ctx context.Context, cur handoff.Conversation, fn func(*handoff.Conversation) error) (handoff.Conversation, error) {
	return r.update(ctx, cur.ID, &cur, fn)
}

func (r *Redis) update(ctx context.Context, id string, first *handoff.Conversation, fn func(*handoff.Conversation) error) (handoff.Conversation, error) {
	op := fmt.Sprintf("update conversation %q", id)
	for attempt := 0; ; attempt++ {
		var (
			cur handoff.Conversation
			raw []byte
			err error
		)
		if attempt == 0 && first != nil {
			cur = *first
			if cur.Version > 0 {
				raw, err = json.Marshal(cur)
			}
		} else {
			cur, raw, err = r.load(ctx, id)
		}
		if err != nil {
			return handoff.Conversation{}, fail(op, err)
		}
		// Decode again rather than copy: fn gets its own Pending slice and
		// Group pointer, so nothing it does can reach cur.
		next, err := decodeConv(id, raw)
		if err != nil {
			return handoff.Conversation{}, fail(op, err)
		}
		if err := fn(&next); err != nil {
			if errors.Is(err, ErrAbort) {
				// No write, but repair the index in case an earlier update
				// wrote the record and failed to write the index; a
				// caller retrying after that error lands here.
				if cur.ChatID != "" {
					_ = r.client.Set(ctx, r.chatKey(cur.ChatID), id, r.convTTL).Err()
				}
				return cur, nil
			}
			return handoff.Conversation{}, fmt.Errorf("store: %s: %w", op, err)
		}
		// The store owns these fields, whatever fn did to them.
		next.ID = id
		next.Version = cur.Version + 1
		next.Updated = r.now().UTC().Round(0)
		data, err := json.Marshal(next)
		if err != nil {
			return handoff.Conversation{}, fmt.Errorf("store: %s: encode: %w", op, err)
		}
		written, err := casScript.Run(ctx, r.client, []string{r.convKey(id)}, cur.Version, data, ms(r.convTTL)).Int()
		if err != nil {
			return handoff.Conversation{}, fail(op, err)
		}
		if written == 1 {
			if err := r.syncIndex(ctx, id, cur, next); err != nil {
				return next, fail(fmt.Sprintf("%s: record written at version %d but chat index not updated", op, next.Version), err)
			}
			return next, nil
		}
		if attempt+1 >= r.maxUpdateRetries {
			return handoff.Conversation{}, fmt.Errorf("store: %s: version %d changed %d times: %w", op, cur.Version, attempt+1, ErrConflict)
		}
		if err := WaitAfterConflict(ctx, attempt); err != nil {
			// The caller's deadline ran out between attempts; Redis was
			// answering, so this is not ErrUnavailable.
			return handoff.Conversation{}, fmt.Errorf("store: %s: waiting to retry after a conflict: %w", op, err)
		}
	}
}

// syncIndex points the chat index at id for the record's chat and drops
// the old chat's entry if it still names id. It writes only when the chat or
// the mode changed: every handoff, cancel and close refreshes the index's
// TTL, and per-message writes (the hot path) cost no extra round trip.
func (r *Redis) syncIndex(ctx context.Context, id string, cur, next handoff.Conversation) error {
	oldChat, newChat := cur.ChatID, next.ChatID
	if newChat == oldChat && cur.Mode == next.Mode && cur.Version > 0 {
		return nil
	}
	if newChat != "" {
		if err := r.client.Set(ctx, r.chatKey(newChat), id, r.convTTL).Err(); err != nil {
			return err
		}
	}
	if oldChat != "" && oldChat != newChat {
		if err := delIfScript.Run(ctx, r.client, []string{r.chatKey(oldChat)}, id).Err(); err != nil {
			return err
		}
	}
	return r.trackMode(ctx, id, cur, next)
}

// modesKey is a sorted set per mode: conversation ID scored by the time it
// entered that mode. CountByMode counts members younger than the
// conversation TTL, so records that expired while idle drop out.
func (r *Redis) modesKey(m handoff.Mode) string { return r.prefix + "modes:" + string(m) }

// trackMode moves id from its old mode's set to its new one. Like the chat
// index it follows the record; a crash in between leaves a stale member
// until the conversation's next mode change.
func (r *Redis) trackMode(ctx context.Context, id string, cur, next handoff.Conversation) error {
	if cur.Mode == next.Mode && cur.Version > 0 {
		return nil
	}
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		if cur.Version > 0 && cur.Mode != "" {
			p.ZRem(ctx, r.modesKey(cur.Mode), id)
		}
		p.ZAdd(ctx, r.modesKey(next.Mode), redis.Z{Score: float64(r.now().Unix()), Member: id})
		return nil
	})
	return err
}

// CountByMode implements Store.
func (r *Redis) CountByMode(ctx context.Context) (map[handoff.Mode]int64, error) {
	modes := []handoff.Mode{handoff.ModeBot, handoff.ModePending, handoff.ModeQueued, handoff.ModeAgent, handoff.ModeClosed}
	oldest := strconv.FormatInt(r.now().Add(-r.convTTL).Unix(), 10)
	cmds := make([]*redis.IntCmd, len(modes))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range modes {
			p.ZRemRangeByScore(ctx, r.modesKey(m), "-inf", "("+oldest)
			cmds[i] = p.ZCard(ctx, r.modesKey(m))
		}
		return nil
	})
	if err != nil {
		return nil, fail("count conversations by mode", err)
	}
	out := make(map[handoff.Mode]int64, len(modes))
	for i, m := range modes {
		out[m] = cmds[i].Val()
	}
	return out, nil
}

// ConversationsInMode implements Store.
func (r *Redis) ConversationsInMode(ctx context.Context, m handoff.Mode) ([]string, error) {
	oldest := strconv.FormatInt(r.now().Add(-r.convTTL).Unix(), 10)
	ids, err := r.client.ZRangeByScore(ctx, r.modesKey(m), &redis.ZRangeBy{Min: oldest, Max: "+inf"}).Result()
	if err != nil {
		return nil, fail("list conversations in mode "+string(m), err)
	}
	return ids, nil
}

// ConversationByChat implements Store. The index is only a hint: the record
// it names must still carry chatID (see the type's doc).
func (r *Redis) ConversationByChat(ctx context.Context, chatID string) (string, error) {
	op := fmt.Sprintf("conversation by chat %q", chatID)
	id, err := r.client.Get(ctx, r.chatKey(chatID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	if err != nil {
		return "", fail(op, err)
	}
	c, _, err := r.load(ctx, id)
	if err != nil {
		return "", fail(op, err)
	}
	if c.ChatID != chatID {
		return "", fmt.Errorf("store: %s: index names %q, which has moved on: %w", op, id, ErrNotFound)
	}
	return id, nil
}

// storedTurn is a transcript entry as kept in the turns list. The nonce
// makes every append unique, so the append script can recognise a retry of
// itself.
type storedTurn struct {
	Nonce string `json:"n"`
	handoff.TranscriptEntry
}

// AppendTurn implements Store.
func (r *Redis) AppendTurn(ctx context.Context, id string, e handoff.TranscriptEntry, max int) error {
	op := fmt.Sprintf("append turn to %q", id)
	if max < 1 {
		return fmt.Errorf("store: %s: max %d < 1", op, max)
	}
	data, err := json.Marshal(storedTurn{Nonce: rand.Text(), TranscriptEntry: e})
	if err != nil {
		return fmt.Errorf("store: %s: encode: %w", op, err)
	}
	if err := appendScript.Run(ctx, r.client, []string{r.turnsKey(id)}, data, max, ms(r.turnsTTL)).Err(); err != nil {
		return fail(op, err)
	}
	return nil
}

// Turns implements Store.
func (r *Redis) Turns(ctx context.Context, id string) ([]handoff.TranscriptEntry, error) {
	op := fmt.Sprintf("turns of %q", id)
	raws, err := r.client.LRange(ctx, r.turnsKey(id), 0, -1).Result()
	if err != nil {
		return nil, fail(op, err)
	}
	out := make([]handoff.TranscriptEntry, 0, len(raws))
	for _, raw := range raws {
		var t storedTurn
		if err := json.Unmarshal([]byte(raw), &t); err != nil {
			return nil, fmt.Errorf("store: %s: decode: %w", op, err)
		}
		out = append(out, t.TranscriptEntry)
	}
	return out, nil
}

func (r *Redis) token(ctx context.Context, op, key string) (Token, error) {
	raw, err := r.client.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return Token{}, fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	if err != nil {
		return Token{}, fail(op, err)
	}
	var t Token
	if err := json.Unmarshal(raw, &t); err != nil {
		return Token{}, fmt.Errorf("store: %s: decode: %w", op, err)
	}
	return t, nil
}

// saveToken keeps t until it expires; an expired token replaces (deletes)
// any cached one, and a token without expiry is refused rather than kept
// forever.
func (r *Redis) saveToken(ctx context.Context, op, key string, t Token) error {
	if t.ExpiresAt.IsZero() {
		return fmt.Errorf("store: %s: token has no expiry", op)
	}
	ttl := t.ExpiresAt.Sub(r.now())
	var err error
	if ttl <= 0 {
		err = r.client.Del(ctx, key).Err()
	} else {
		var data []byte
		if data, err = json.Marshal(t); err != nil {
			return fmt.Errorf("store: %s: encode: %w", op, err)
		}
		err = r.client.Set(ctx, key, data, ttl).Err()
	}
	if err != nil {
		return fail(op, err)
	}
	return nil
}

// CustomerToken implements Store.
func (r *Redis) CustomerToken(ctx context.Context, customerID string) (Token, error) {
	return r.token(ctx, fmt.Sprintf("customer token %q", customerID), r.customerTokenKey(customerID))
}

// SaveCustomerToken implements Store.
func (r *Redis) SaveCustomerToken(ctx context.Context, customerID string, t Token) error {
	return r.saveToken(ctx, fmt.Sprintf("save customer token %q", customerID), r.customerTokenKey(customerID), t)
}

// AgentToken implements Store.
func (r *Redis) AgentToken(ctx context.Context) (Token, error) {
	return r.token(ctx, "agent token", r.agentTokenKey())
}

// SaveAgentToken implements Store.
func (r *Redis) SaveAgentToken(ctx context.Context, t Token) error {
	return r.saveToken(ctx, "save agent token", r.agentTokenKey(), t)
}

// Value implements Store.
func (r *Redis) Value(ctx context.Context, name string) (string, error) {
	op := fmt.Sprintf("value %q", name)
	v, err := r.client.Get(ctx, r.valueKey(name)).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("store: %s: %w", op, ErrNotFound)
	}
	if err != nil {
		return "", fail(op, err)
	}
	return v, nil
}

// SetValue implements Store. A ttl of 0 (or less) keeps the value forever.
func (r *Redis) SetValue(ctx context.Context, name, value string, ttl time.Duration) error {
	// go-redis reads a negative TTL as KEEPTTL; "forever" must clear any TTL.
	ttl = max(ttl, 0)
	if err := r.client.Set(ctx, r.valueKey(name), value, ttl).Err(); err != nil {
		return fail(fmt.Sprintf("set value %q", name), err)
	}
	return nil
}

// claim sets key to a fresh random token for ttl unless it exists; see
// claimScript for why a plain SET NX is not enough.
func (r *Redis) claim(ctx context.Context, key string, ttl time.Duration) (token string, ok bool, err error) {
	token = rand.Text()
	n, err := claimScript.Run(ctx, r.client, []string{key}, token, ms(ttl)).Int()
	if err != nil {
		return "", false, err
	}
	return token, n == 1, nil
}

// Remember implements Store.
func (r *Redis) Remember(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	op := fmt.Sprintf("remember %q", key)
	if ttl <= 0 {
		return false, fmt.Errorf("store: %s: ttl %v must be positive", op, ttl)
	}
	_, first, err := r.claim(ctx, r.seenKey(key), ttl)
	if err != nil {
		return false, fail(op, err)
	}
	return first, nil
}

// Forget implements Store.
func (r *Redis) Forget(ctx context.Context, key string) error {
	if err := r.client.Del(ctx, r.seenKey(key)).Err(); err != nil {
		return fail(fmt.Sprintf("forget %q", key), err)
	}
	return nil
}

// releaseTimeout bounds a lock release, which runs on its own context: the
// caller's may already be done when it releases.
const releaseTimeout = 5 * time.Second

// Lock implements Store. The release function may be called any number of
// times; it removes the lock only while it still holds this caller's token,
// so a release after the lock expired and was taken by someone else leaves
// the new holder alone. A failed release is ignored: the lock expires.
func (r *Redis) Lock(ctx context.Context, name string, ttl time.Duration) (func(), bool, error) {
	op := fmt.Sprintf("lock %q", name)
	if ttl <= 0 {
		return nil, false, fmt.Errorf("store: %s: ttl %v must be positive", op, ttl)
	}
	key := r.lockKey(name)
	token, ok, err := r.claim(ctx, key, ttl)
	if err != nil {
		return nil, false, fail(op, err)
	}
	if !ok {
		return nil, false, nil
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer cancel()
			_ = delIfScript.Run(ctx, r.client, []string{key}, token).Err()
		})
	}
	return release, true, nil
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fail("ping", err)
	}
	return nil
}

// Close implements Store; it closes the client.
func (r *Redis) Close() error {
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// slogPrintf adapts go-redis' printf logger to slog, so its connection
// messages come out in the service's format (JSON in production) instead of
// as bare lines on stderr. go-redis writes a line per failed dial: during a
// failover that is hundreds a second, so each kind of line (its format) is
// logged at most once per logEvery, with the number of lines left out since
// the last one.
type slogPrintf struct {
	log *slog.Logger
	mu  sync.Mutex
	by  map[string]*logRun
}

type logRun struct {
	last       time.Time
	suppressed int
}

// logEvery is how often one kind of go-redis line may be logged.
const logEvery = 10 * time.Second

func (s *slogPrintf) Printf(ctx context.Context, format string, v ...any) {
	now := time.Now()
	s.mu.Lock()
	run := s.by[format]
	if run == nil {
		if len(s.by) > 100 {
			// go-redis has a few dozen formats; never grow without bound.
			clear(s.by)
		}
		run = &logRun{}
		s.by[format] = run
	}
	if !run.last.IsZero() && now.Sub(run.last) < logEvery {
		run.suppressed++
		s.mu.Unlock()
		return
	}
	suppressed := run.suppressed
	run.last, run.suppressed = now, 0
	s.mu.Unlock()

	// go-redis starts its lines with "redis: " already.
	msg := "redis: " + strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	if suppressed > 0 {
		s.log.WarnContext(ctx, msg, "similar_lines_suppressed", suppressed)
		return
	}
	s.log.WarnContext(ctx, msg)
}

// SetLogger sends go-redis' own log lines (failed dials, pool errors) to
// log. go-redis keeps one logger per process, so call it once at start.
func SetLogger(log *slog.Logger) {
	redis.SetLogger(&slogPrintf{log: log, by: map[string]*logRun{}})
}
