// Package natskv is a store.Store on NATS JetStream key-value buckets: the
// backend for teams that run NATS (which handoff needs anyway) and would
// rather not run Redis as well. It passes the same conformance suite
// (store/storetest) as the Redis backend.
//
// It is its own package because it is the one place that talks to JetStream
// as a database (one package per outside dependency); the Redis backend
// lives in package store.
//
// # Buckets and keys
//
// Everything but the mode counts lives in one bucket (WithBucket, default
// "handoff"; the stream KV_handoff). Keys are the Redis key names with the
// IDs encoded: NATS keys allow only [-/_=.a-zA-Z0-9], so an ID is written as
// unpadded base64url, or as "=" followed by its SHA-256 in hex when that
// would be longer than 200 characters (a subject has to fit NATS' control
// line). "=" alone is the empty string.
//
//	key                        holds                                   expires (per-message TTL)
//	conv.<id>                  Conversation as JSON                    conversation TTL after every write
//	chat.<chatID>              conversation ID (chat index)            conversation TTL after the chat or mode changes
//	turns.<id>                 JSON list of bot-side transcript        turns TTL after every append
//	                           entries, oldest first, newest max kept
//	token.customer.<id>        Token as JSON                           at Token.ExpiresAt
//	token.agent                Token as JSON                           at Token.ExpiresAt
//	value.<name>               a setting (the organization ID)         as given to SetValue; never for 0
//	seen.<key>                 Remember marker (random writer token)   as given to Remember
//	lock.<name>                Lock holder's random token              as given to Lock
//
// and one bucket per mode (<bucket>_mode_<mode>, e.g. handoff_mode_pending)
// with one empty key per conversation that entered the mode within the
// conversation TTL and has not left it since: CountByMode reads each
// bucket's number of keys from the stream's state (one request per mode,
// whatever the number of conversations) instead of scanning records.
//
// The buckets are streams with the key-value layout (subjects $KV.<bucket>.>,
// one message kept per key) plus per-message TTLs, so `nats kv get handoff
// conv.<id>` reads them. They are created (or updated) by Open.
//
// # How each operation maps to JetStream
//
//   - Compare-and-swap: a publish with Nats-Expected-Last-Subject-Sequence.
//     A key's revision is the stream sequence of its last message; 0 means
//     "must not exist". The server refuses a publish whose expectation does
//     not hold, atomically with the write. A conversation's first write
//     expects 0; every later one the revision it read.
//   - Expiry: the Nats-TTL header on the publish (the stream allows message
//     TTLs). The server counts TTLs in whole seconds, so a TTL is rounded up:
//     a key may live up to a second longer than asked, never shorter. Tokens
//     also carry their expiry, which readers check, so an expired token is
//     never served.
//   - Remember and Lock: a publish expecting revision 0 (the key is absent);
//     exactly one of any number of concurrent callers succeeds.
//   - Compare-and-delete (a lock release, an old chat index entry): delete
//     the message by its sequence. A newer write is another sequence, so it
//     is never removed by mistake; no delete marker is left behind.
//   - Forget, expired tokens, leaving a mode: purge the key's subject.
//
// # Consistency
//
// As with Redis, the record is the truth and the chat index and mode keys
// follow it (written right after the record, never in one atomic step): a
// crash in between leaves the index missing (read as ErrNotFound) or stale
// (detected: ConversationByChat checks the record), and a mode count off by
// one until that conversation's next mode change.
//
// With more than one replica, reads go to the stream leader (direct gets,
// which any replica may answer, are turned off), so a reader sees every
// write acknowledged before it.
package natskv

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff"
	"github.com/handoff-dev/handoff/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the options.
const (
	DefaultBucket           = "handoff"
	DefaultMaxUpdateRetries = 10
)

// modes are the modes CountByMode reports, one bucket each.
var modes = []handoff.Mode{handoff.ModeBot, handoff.ModePending, handoff.ModeQueued, handoff.ModeAgent, handoff.ModeClosed}

// Store is the NATS KV backend; see the package doc.
type Store struct {
	nc               *nats.Conn
	js               jetstream.JetStream
	bucket           string
	replicas         int
	maxUpdateRetries int
	convTTL          time.Duration
	turnsTTL         time.Duration
	now              func() time.Time

	kv    jetstream.Stream
	modes map[handoff.Mode]jetstream.Stream

	// revs remembers the revision of the newest version of each record this
	// process has read or written, so UpdateConversationFrom can fence its
	// first attempt without reading the record again. A (version, revision)
	// pair is a fact about one message, so a stale entry only costs a
	// failed compare-and-swap and a read.
	revMu sync.Mutex
	revs  map[string]versionRev
}

type versionRev struct {
	version int64
	rev     uint64
}

// maxRevs bounds the revision cache; past it the cache starts afresh.
const maxRevs = 100_000

var _ store.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithBucket names the main bucket (default "handoff"); the mode buckets are
// named after it. Several deployments or tests can share one NATS this way.
func WithBucket(name string) Option { return func(s *Store) { s.bucket = name } }

// WithReplicas sets how many copies of each bucket a NATS cluster keeps
// (default 1; use 3 on a three-node cluster to survive losing a node).
func WithReplicas(n int) Option { return func(s *Store) { s.replicas = max(n, 1) } }

// WithMaxUpdateRetries sets how many times UpdateConversation tries before
// it gives up with ErrConflict (default 10). Values below 1 mean 1.
func WithMaxUpdateRetries(n int) Option {
	return func(s *Store) { s.maxUpdateRetries = max(n, 1) }
}

// WithConversationTTL sets how long a conversation record and its chat index
// entry are kept after the last update (default store.DefaultConversationTTL).
func WithConversationTTL(d time.Duration) Option { return func(s *Store) { s.convTTL = d } }

// WithTurnsTTL sets how long the bot-side transcript is kept after its last
// append (default store.DefaultTurnsTTL).
func WithTurnsTTL(d time.Duration) Option { return func(s *Store) { s.turnsTTL = d } }

// Open creates or updates the buckets on the JetStream nc reaches and
// returns a Store on them. The Store owns nc: Close closes it.
func Open(ctx context.Context, nc *nats.Conn, opts ...Option) (*Store, error) {
	s := &Store{
		nc:               nc,
		bucket:           DefaultBucket,
		replicas:         1,
		maxUpdateRetries: DefaultMaxUpdateRetries,
		convTTL:          store.DefaultConversationTTL,
		turnsTTL:         store.DefaultTurnsTTL,
		now:              time.Now,
		modes:            map[handoff.Mode]jetstream.Stream{},
		revs:             map[string]versionRev{},
	}
	for _, o := range opts {
		o(s)
	}
	if s.convTTL <= 0 {
		s.convTTL = store.DefaultConversationTTL
	}
	if s.turnsTTL <= 0 {
		s.turnsTTL = store.DefaultTurnsTTL
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("store: nats kv: %w", err)
	}
	s.js = js
	if s.kv, err = s.ensure(ctx, s.bucket, "handoff state: conversations, chat index, turns, tokens, settings, idempotency records, locks"); err != nil {
		return nil, err
	}
	for _, m := range modes {
		name := s.bucket + "_mode_" + string(m)
		if s.modes[m], err = s.ensure(ctx, name, "handoff: one key per conversation in mode "+string(m)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ensure creates or updates the stream behind a bucket: the layout of a
// key-value bucket with history 1, plus per-message TTLs and deletes by
// sequence (which the KV API does not offer).
func (s *Store) ensure(ctx context.Context, bucket, description string) (jetstream.Stream, error) {
	cfg := jetstream.StreamConfig{
		Name:              "KV_" + bucket,
		Description:       description,
		Subjects:          []string{"$KV." + bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          s.replicas,
		Discard:           jetstream.DiscardNew,
		Duplicates:        2 * time.Minute,
		AllowRollup:       true,
		AllowMsgTTL:       true,
		// A direct get may be answered by a replica that lags; with one
		// replica there is none.
		AllowDirect: s.replicas == 1,
	}
	st, err := s.js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fail(fmt.Sprintf("create bucket %q", bucket), err)
	}
	return st, nil
}

// encode turns an ID into a valid key token; see the package doc.
func encode(id string) string {
	if id == "" {
		return "="
	}
	enc := base64.RawURLEncoding.EncodeToString([]byte(id))
	if len(enc) <= 200 {
		return enc
	}
	sum := sha256.Sum256([]byte(id))
	return "=" + hex.EncodeToString(sum[:])
}

func (s *Store) subject(key string) string { return "$KV." + s.bucket + "." + key }
func (s *Store) modeSubject(m handoff.Mode, id string) string {
	return "$KV." + s.bucket + "_mode_" + string(m) + "." + encode(id)
}

func convKey(id string) string                { return "conv." + encode(id) }
func chatKey(chatID string) string            { return "chat." + encode(chatID) }
func turnsKey(id string) string               { return "turns." + encode(id) }
func customerTokenKey(customer string) string { return "token.customer." + encode(customer) }
func valueKey(name string) string             { return "value." + encode(name) }
func seenKey(key string) string               { return "seen." + encode(key) }
func lockKey(name string) string              { return "lock." + encode(name) }

const agentTokenKey = "token.agent"

// fail wraps err with the operation; errors that mean NATS cannot be reached
// or JetStream is not answering (rather than that it refused the request)
// also wrap store.ErrUnavailable.
func fail(op string, err error) error {
	if unavailable(err) {
		return fmt.Errorf("store: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		// The caller gave up; that says nothing about NATS.
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// JetStream answered; only "not now" answers mean unavailable.
		return apiErr.Code == 503
	}
	// Timeouts, no responders, a closed or reconnecting connection.
	return true
}

// wrongRevision reports a compare-and-swap that lost: the key's last
// revision was not the one expected.
func wrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// ttlHeader is a TTL as the server takes it: whole seconds, at least one,
// rounded up.
func ttlHeader(d time.Duration) string {
	secs := (d + time.Second - 1) / time.Second
	return strconv.FormatInt(max(int64(secs), 1), 10)
}

// put writes data under subj. expect >= 0 makes it a compare-and-swap on the
// key's last revision (0: the key must not exist); ttl > 0 makes the message
// expire. It returns the new revision.
func (s *Store) put(ctx context.Context, subj string, data []byte, expect int64, ttl time.Duration) (uint64, error) {
	m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
	if expect >= 0 {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatInt(expect, 10))
	}
	if ttl > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, ttlHeader(ttl))
	}
	ack, err := s.js.PublishMsg(ctx, m)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// get returns the last value of subj and its revision; found is false when
// the key holds nothing (rev is then 0, or a delete marker's revision).
func (s *Store) get(ctx context.Context, st jetstream.Stream, subj string) (data []byte, rev uint64, found bool, err error) {
	m, err := st.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	if m.Header.Get("KV-Operation") != "" || m.Header.Get(jetstream.MarkerReasonHeader) != "" {
		// A delete or purge marker (written by the nats CLI, say): absent,
		// but its revision is what a compare-and-swap must expect.
		return nil, m.Sequence, false, nil
	}
	if m.Data == nil {
		m.Data = []byte{}
	}
	return m.Data, m.Sequence, true, nil
}

// deleteRev removes revision rev of a key; a revision already replaced or
// expired is gone anyway.
func (s *Store) deleteRev(ctx context.Context, st jetstream.Stream, rev uint64) error {
	err := st.DeleteMsg(ctx, rev)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		return nil
	}
	return err
}

// purge removes every message of one key.
func (s *Store) purge(ctx context.Context, st jetstream.Stream, subj string) error {
	return st.Purge(ctx, jetstream.WithPurgeSubject(subj))
}

func (s *Store) rememberRev(id string, version int64, rev uint64) {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	if len(s.revs) >= maxRevs {
		clear(s.revs)
	}
	s.revs[id] = versionRev{version, rev}
}

func (s *Store) cachedRev(id string, version int64) (uint64, bool) {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	vr, ok := s.revs[id]
	return vr.rev, ok && vr.version == version
}

// load reads a conversation, the default bot record for one never seen; raw
// is nil then.
func (s *Store) load(ctx context.Context, id string) (c handoff.Conversation, raw []byte, rev uint64, err error) {
	raw, rev, found, err := s.get(ctx, s.kv, s.subject(convKey(id)))
	if err != nil {
		return handoff.Conversation{}, nil, 0, err
	}
	if !found {
		raw = nil
	}
	c, err = decodeConv(id, raw)
	if err != nil {
		return handoff.Conversation{}, nil, 0, err
	}
	if found {
		s.rememberRev(id, c.Version, rev)
	}
	return c, raw, rev, nil
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

// Conversation implements store.Store.
func (s *Store) Conversation(ctx context.Context, id string) (handoff.Conversation, error) {
	c, _, _, err := s.load(ctx, id)
	if err != nil {
		return handoff.Conversation{}, fail(fmt.Sprintf("conversation %q", id), err)
	}
	return c, nil
}

// UpdateConversation implements store.Store.
func (s *Store) UpdateConversation(ctx context.Context, id string, fn func(*handoff.Conversation) error) (handoff.Conversation, error) {
	return s.update(ctx, id, nil, fn)
}

// UpdateConversationFrom implements store.Store. The first attempt is
// fenced by the revision this process last saw for cur's version; without
// one it reads the record.
func (s *Store) UpdateConversationFrom(ctx context.Context, cur handoff.Conversation, fn func(*handoff.Conversation) error) (handoff.Conversation, error) {
	return s.update(ctx, cur.ID, &cur, fn)
}

// errStale stands for the compare-and-swap failure a write from a record
// known to be stale would meet.
var errStale = errors.New("stale record")

func (s *Store) update(ctx context.Context, id string, first *handoff.Conversation, fn func(*handoff.Conversation) error) (handoff.Conversation, error) {
	op := fmt.Sprintf("update conversation %q", id)
	for attempt := 0; ; attempt++ {
		var (
			cur   handoff.Conversation
			raw   []byte
			rev   uint64
			err   error
			stale bool // cur is known to be older than the stored record
		)
		switch {
		case attempt == 0 && first != nil && first.Version == 0:
			cur = *first // rev 0: the record must not exist yet
		case attempt == 0 && first != nil:
			cur = *first
			r, ok := s.cachedRev(id, cur.Version)
			if !ok {
				// Not seen by this process: learn the revision, and whether
				// cur is still the stored version.
				var stored handoff.Conversation
				if stored, _, r, err = s.load(ctx, id); err != nil {
					return handoff.Conversation{}, fail(op, err)
				}
				stale = stored.Version != cur.Version
			}
			rev = r
			raw, err = json.Marshal(cur)
		default:
			cur, raw, rev, err = s.load(ctx, id)
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
			if errors.Is(err, store.ErrAbort) {
				// No write, but repair the index in case an earlier update
				// wrote the record and failed to write the index.
				if cur.ChatID != "" {
					_, _ = s.put(ctx, s.subject(chatKey(cur.ChatID)), []byte(id), -1, s.convTTL)
				}
				return cur, nil
			}
			return handoff.Conversation{}, fmt.Errorf("store: %s: %w", op, err)
		}
		// The store owns these fields, whatever fn did to them.
		next.ID = id
		next.Version = cur.Version + 1
		next.Updated = s.now().UTC().Round(0)
		data, err := json.Marshal(next)
		if err != nil {
			return handoff.Conversation{}, fmt.Errorf("store: %s: encode: %w", op, err)
		}
		// rev is 0 for a record never seen: it must not exist yet (a
		// delete marker fails that, and the read on the retry gives its
		// revision).
		var newRev uint64
		if stale {
			err = errStale
		} else {
			newRev, err = s.put(ctx, s.subject(convKey(id)), data, int64(rev), s.convTTL)
		}
		if err == nil {
			s.rememberRev(id, next.Version, newRev)
			if err := s.syncIndex(ctx, id, cur, next); err != nil {
				return next, fail(fmt.Sprintf("%s: record written at version %d but chat index not updated", op, next.Version), err)
			}
			return next, nil
		}
		if !wrongRevision(err) && err != errStale {
			return handoff.Conversation{}, fail(op, err)
		}
		if attempt+1 >= s.maxUpdateRetries {
			return handoff.Conversation{}, fmt.Errorf("store: %s: version %d changed %d times: %w", op, cur.Version, attempt+1, store.ErrConflict)
		}
		if err := store.WaitAfterConflict(ctx, attempt); err != nil {
			return handoff.Conversation{}, fmt.Errorf("store: %s: waiting to retry after a conflict: %w", op, err)
		}
	}
}

// syncIndex points the chat index at id for the record's chat, drops the old
// chat's entry if it still names id, and moves id between mode buckets. Like
// Redis it writes only when the chat or the mode changed, so per-message
// updates (the hot path) cost no extra round trip.
func (s *Store) syncIndex(ctx context.Context, id string, cur, next handoff.Conversation) error {
	oldChat, newChat := cur.ChatID, next.ChatID
	if newChat == oldChat && cur.Mode == next.Mode && cur.Version > 0 {
		return nil
	}
	if newChat != "" {
		if _, err := s.put(ctx, s.subject(chatKey(newChat)), []byte(id), -1, s.convTTL); err != nil {
			return err
		}
	}
	if oldChat != "" && oldChat != newChat {
		raw, rev, found, err := s.get(ctx, s.kv, s.subject(chatKey(oldChat)))
		if err != nil {
			return err
		}
		if found && string(raw) == id {
			if err := s.deleteRev(ctx, s.kv, rev); err != nil {
				return err
			}
		}
	}
	return s.trackMode(ctx, id, cur, next)
}

// trackMode moves id from its old mode's bucket to its new one. The key
// expires a conversation TTL after the conversation entered the mode, so
// conversations that expired while idle drop out of the counts.
func (s *Store) trackMode(ctx context.Context, id string, cur, next handoff.Conversation) error {
	if cur.Mode == next.Mode && cur.Version > 0 {
		return nil
	}
	if _, ok := s.modes[next.Mode]; ok {
		// The value is the ID, so ConversationsInMode can list IDs too long
		// to be their own key.
		if _, err := s.put(ctx, s.modeSubject(next.Mode, id), []byte(id), -1, s.convTTL); err != nil {
			return err
		}
	}
	if cur.Version > 0 && cur.Mode != next.Mode {
		if st, ok := s.modes[cur.Mode]; ok {
			if err := s.purge(ctx, st, s.modeSubject(cur.Mode, id)); err != nil {
				return err
			}
		}
	}
	return nil
}

// CountByMode implements store.Store: per mode, the number of conversations
// that entered it within the conversation TTL and have not left it since
// (the number of keys in the mode's bucket, read from the stream's state).
func (s *Store) CountByMode(ctx context.Context) (map[handoff.Mode]int64, error) {
	out := make(map[handoff.Mode]int64, len(modes))
	for _, m := range modes {
		info, err := s.modes[m].Info(ctx)
		if err != nil {
			return nil, fail("count conversations by mode", err)
		}
		out[m] = int64(info.State.NumSubjects)
	}
	return out, nil
}

// ConversationsInMode implements store.Store: the subjects of the mode's
// bucket are the encoded IDs; a hashed one (an ID too long for a key) is
// read back from its value.
func (s *Store) ConversationsInMode(ctx context.Context, m handoff.Mode) ([]string, error) {
	st, ok := s.modes[m]
	if !ok {
		return nil, nil
	}
	op := "list conversations in mode " + string(m)
	prefix := "$KV." + s.bucket + "_mode_" + string(m) + "."
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fail(op, err)
	}
	out := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		enc := strings.TrimPrefix(subj, prefix)
		if !strings.HasPrefix(enc, "=") {
			if b, err := base64.RawURLEncoding.DecodeString(enc); err == nil {
				out = append(out, string(b))
			}
			continue
		}
		msg, err := st.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fail(op, err)
		}
		if len(msg.Data) > 0 {
			out = append(out, string(msg.Data))
		}
	}
	return out, nil
}

// ConversationByChat implements store.Store. The index is only a hint: the
// record it names must still carry chatID.
func (s *Store) ConversationByChat(ctx context.Context, chatID string) (string, error) {
	op := fmt.Sprintf("conversation by chat %q", chatID)
	raw, _, found, err := s.get(ctx, s.kv, s.subject(chatKey(chatID)))
	if err != nil {
		return "", fail(op, err)
	}
	if !found {
		return "", fmt.Errorf("store: %s: %w", op, store.ErrNotFound)
	}
	id := string(raw)
	c, _, _, err := s.load(ctx, id)
	if err != nil {
		return "", fail(op, err)
	}
	if c.ChatID != chatID {
		return "", fmt.Errorf("store: %s: index names %q, which has moved on: %w", op, id, store.ErrNotFound)
	}
	return id, nil
}

// AppendTurn implements store.Store: a compare-and-swap of the whole list,
// retried when another append won.
func (s *Store) AppendTurn(ctx context.Context, id string, e handoff.TranscriptEntry, max int) error {
	op := fmt.Sprintf("append turn to %q", id)
	if max < 1 {
		return fmt.Errorf("store: %s: max %d < 1", op, max)
	}
	subj := s.subject(turnsKey(id))
	for attempt := 0; ; attempt++ {
		raw, rev, found, err := s.get(ctx, s.kv, subj)
		if err != nil {
			return fail(op, err)
		}
		var turns []handoff.TranscriptEntry
		if found {
			if err := json.Unmarshal(raw, &turns); err != nil {
				return fmt.Errorf("store: %s: decode: %w", op, err)
			}
		}
		turns = append(turns, e)
		if len(turns) > max {
			turns = turns[len(turns)-max:]
		}
		data, err := json.Marshal(turns)
		if err != nil {
			return fmt.Errorf("store: %s: encode: %w", op, err)
		}
		_, err = s.put(ctx, subj, data, int64(rev), s.turnsTTL)
		if err == nil {
			return nil
		}
		if !wrongRevision(err) {
			return fail(op, err)
		}
		if attempt+1 >= s.maxUpdateRetries {
			return fmt.Errorf("store: %s: changed %d times: %w", op, attempt+1, store.ErrConflict)
		}
		if err := store.WaitAfterConflict(ctx, attempt); err != nil {
			return fmt.Errorf("store: %s: waiting to retry after a conflict: %w", op, err)
		}
	}
}

// Turns implements store.Store.
func (s *Store) Turns(ctx context.Context, id string) ([]handoff.TranscriptEntry, error) {
	op := fmt.Sprintf("turns of %q", id)
	raw, _, found, err := s.get(ctx, s.kv, s.subject(turnsKey(id)))
	if err != nil {
		return nil, fail(op, err)
	}
	turns := []handoff.TranscriptEntry{}
	if found {
		if err := json.Unmarshal(raw, &turns); err != nil {
			return nil, fmt.Errorf("store: %s: decode: %w", op, err)
		}
	}
	return turns, nil
}

func (s *Store) token(ctx context.Context, op, key string) (store.Token, error) {
	raw, _, found, err := s.get(ctx, s.kv, s.subject(key))
	if err != nil {
		return store.Token{}, fail(op, err)
	}
	if !found {
		return store.Token{}, fmt.Errorf("store: %s: %w", op, store.ErrNotFound)
	}
	var t store.Token
	if err := json.Unmarshal(raw, &t); err != nil {
		return store.Token{}, fmt.Errorf("store: %s: decode: %w", op, err)
	}
	if !s.now().Before(t.ExpiresAt) {
		// Expired, and the server has not removed it yet (TTLs are whole
		// seconds).
		return store.Token{}, fmt.Errorf("store: %s: %w", op, store.ErrNotFound)
	}
	return t, nil
}

// saveToken keeps t until it expires; an expired token replaces (removes)
// any cached one, and a token without expiry is refused.
func (s *Store) saveToken(ctx context.Context, op, key string, t store.Token) error {
	if t.ExpiresAt.IsZero() {
		return fmt.Errorf("store: %s: token has no expiry", op)
	}
	ttl := t.ExpiresAt.Sub(s.now())
	var err error
	if ttl <= 0 {
		err = s.purge(ctx, s.kv, s.subject(key))
	} else {
		var data []byte
		if data, err = json.Marshal(t); err != nil {
			return fmt.Errorf("store: %s: encode: %w", op, err)
		}
		_, err = s.put(ctx, s.subject(key), data, -1, ttl)
	}
	if err != nil {
		return fail(op, err)
	}
	return nil
}

// CustomerToken implements store.Store.
func (s *Store) CustomerToken(ctx context.Context, customerID string) (store.Token, error) {
	return s.token(ctx, fmt.Sprintf("customer token %q", customerID), customerTokenKey(customerID))
}

// SaveCustomerToken implements store.Store.
func (s *Store) SaveCustomerToken(ctx context.Context, customerID string, t store.Token) error {
	return s.saveToken(ctx, fmt.Sprintf("save customer token %q", customerID), customerTokenKey(customerID), t)
}

// AgentToken implements store.Store.
func (s *Store) AgentToken(ctx context.Context) (store.Token, error) {
	return s.token(ctx, "agent token", agentTokenKey)
}

// SaveAgentToken implements store.Store.
func (s *Store) SaveAgentToken(ctx context.Context, t store.Token) error {
	return s.saveToken(ctx, "save agent token", agentTokenKey, t)
}

// Value implements store.Store.
func (s *Store) Value(ctx context.Context, name string) (string, error) {
	op := fmt.Sprintf("value %q", name)
	raw, _, found, err := s.get(ctx, s.kv, s.subject(valueKey(name)))
	if err != nil {
		return "", fail(op, err)
	}
	if !found {
		return "", fmt.Errorf("store: %s: %w", op, store.ErrNotFound)
	}
	return string(raw), nil
}

// SetValue implements store.Store. A ttl of 0 (or less) keeps the value
// forever.
func (s *Store) SetValue(ctx context.Context, name, value string, ttl time.Duration) error {
	if _, err := s.put(ctx, s.subject(valueKey(name)), []byte(value), -1, max(ttl, 0)); err != nil {
		return fail(fmt.Sprintf("set value %q", name), err)
	}
	return nil
}

// claim writes a fresh random token under key for ttl unless the key
// exists; the server decides, so exactly one concurrent caller wins.
func (s *Store) claim(ctx context.Context, key string, ttl time.Duration) (token string, ok bool, err error) {
	token = rand.Text()
	_, err = s.put(ctx, s.subject(key), []byte(token), 0, ttl)
	if wrongRevision(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return token, true, nil
}

// Remember implements store.Store.
func (s *Store) Remember(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	op := fmt.Sprintf("remember %q", key)
	if ttl <= 0 {
		return false, fmt.Errorf("store: %s: ttl %v must be positive", op, ttl)
	}
	_, first, err := s.claim(ctx, seenKey(key), ttl)
	if err != nil {
		return false, fail(op, err)
	}
	return first, nil
}

// Forget implements store.Store.
func (s *Store) Forget(ctx context.Context, key string) error {
	if err := s.purge(ctx, s.kv, s.subject(seenKey(key))); err != nil {
		return fail(fmt.Sprintf("forget %q", key), err)
	}
	return nil
}

// releaseTimeout bounds a lock release, which runs on its own context: the
// caller's may already be done when it releases.
const releaseTimeout = 5 * time.Second

// Lock implements store.Store. The release function may be called any
// number of times; it deletes the lock only while it still holds this
// caller's token, by revision, so a release after the lock expired and was
// taken by someone else leaves the new holder alone. A failed release is
// ignored: the lock expires.
func (s *Store) Lock(ctx context.Context, name string, ttl time.Duration) (func(), bool, error) {
	op := fmt.Sprintf("lock %q", name)
	if ttl <= 0 {
		return nil, false, fmt.Errorf("store: %s: ttl %v must be positive", op, ttl)
	}
	key := lockKey(name)
	token, ok, err := s.claim(ctx, key, ttl)
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
			raw, rev, found, err := s.get(ctx, s.kv, s.subject(key))
			if err == nil && found && string(raw) == token {
				_ = s.deleteRev(ctx, s.kv, rev)
			}
		})
	}
	return release, true, nil
}

// Ping implements store.Store: JetStream answers for the main bucket.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.js.Stream(ctx, s.kv.CachedInfo().Config.Name); err != nil {
		return fail("ping", err)
	}
	return nil
}

// Close implements store.Store; it closes the connection.
func (s *Store) Close() error {
	s.nc.Close()
	return nil
}
