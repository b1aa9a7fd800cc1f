package livechatsim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"
)

// nShards spreads the maps over enough locks that concurrent requests for
// different customers almost never wait on each other.
const nShards = 64

// shards is a string-keyed map split over independently locked parts.
type shards[V any] struct {
	s [nShards]shard[V]
}

type shard[V any] struct {
	mu sync.RWMutex
	m  map[string]V
}

func shardOf(k string) uint32 {
	// FNV-1a, inline so a lookup allocates nothing.
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return h % nShards
}

func (s *shards[V]) get(k string) (V, bool) {
	sh := &s.s[shardOf(k)]
	sh.mu.RLock()
	v, ok := sh.m[k]
	sh.mu.RUnlock()
	return v, ok
}

func (s *shards[V]) put(k string, v V) {
	sh := &s.s[shardOf(k)]
	sh.mu.Lock()
	sh.m[k] = v
	sh.mu.Unlock()
}

// putNew stores v unless k exists, reporting whether it stored.
func (s *shards[V]) putNew(k string, v V) bool {
	sh := &s.s[shardOf(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[k]; ok {
		return false
	}
	sh.m[k] = v
	return true
}

func (s *shards[V]) del(k string) {
	sh := &s.s[shardOf(k)]
	sh.mu.Lock()
	delete(sh.m, k)
	sh.mu.Unlock()
}

// values returns a snapshot of every value.
func (s *shards[V]) values() []V {
	var out []V
	for i := range s.s {
		sh := &s.s[i]
		sh.mu.RLock()
		for _, v := range sh.m {
			out = append(out, v)
		}
		sh.mu.RUnlock()
	}
	return out
}

func (s *shards[V]) reset() {
	for i := range s.s {
		sh := &s.s[i]
		sh.mu.Lock()
		sh.m = map[string]V{}
		sh.mu.Unlock()
	}
}

// idGen makes IDs that look like LiveChat's. Unseeded it uses the
// lock-free global generator; seeded it serialises on one source so a
// golden test gets the same IDs every run.
type idGen struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newIDGen(seed uint64) *idGen {
	if seed == 0 {
		return &idGen{}
	}
	return &idGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g *idGen) u64() uint64 {
	if g.r == nil {
		return rand.Uint64()
	}
	g.mu.Lock()
	v := g.r.Uint64()
	g.mu.Unlock()
	return v
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// chatID returns a 10-character upper-case ID like "PJ0MRSHTDG"; thread
// IDs have the same shape.
func (g *idGen) chatID() string {
	var b [10]byte
	v := g.u64()
	for i := range b {
		b[i] = idAlphabet[v%uint64(len(idAlphabet))]
		v /= uint64(len(idAlphabet))
	}
	return string(b[:])
}

// uuid returns a version-4-shaped UUID, the form of customer IDs.
func (g *idGen) uuid() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], g.u64())
	binary.BigEndian.PutUint64(b[8:], g.u64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// hex32 returns 32 hex digits, the form of webhook IDs.
func (g *idGen) hex32() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], g.u64())
	binary.BigEndian.PutUint64(b[8:], g.u64())
	return hex.EncodeToString(b[:])
}

// token returns "<region>:<random>", the form of LiveChat access tokens.
func (g *idGen) token(region string) string {
	var b [18]byte
	binary.BigEndian.PutUint64(b[:8], g.u64())
	binary.BigEndian.PutUint64(b[8:16], g.u64())
	v := g.u64()
	b[16], b[17] = byte(v), byte(v>>8)
	return region + ":" + base64.RawURLEncoding.EncodeToString(b[:])
}

type tokenKind uint8

const (
	kindAgent tokenKind = iota + 1
	kindCustomer
)

type tokenInfo struct {
	kind   tokenKind
	entity string // customer ID for customer tokens, agent ID for agent tokens
	// clientID is the app the token was issued to: with a bearer token
	// LiveChat knows the owner of webhook registrations from it.
	clientID string
	expires  time.Time
}

type customer struct {
	mu            sync.Mutex
	id            string
	name, email   string
	avatar        string
	sessionFields []map[string]string
	chatID        string
	createdAt     time.Time
	// seenUpTo is what mark_events_as_seen last recorded.
	seenUpTo time.Time
}

type chat struct {
	mu         sync.Mutex
	id         string
	customerID string // never changes after creation
	seq        uint64 // creation order
	createdAt  time.Time
	props      map[string]map[string]any
	groupIDs   []int
	threads    []*thread
}

func (c *chat) last() *thread {
	if len(c.threads) == 0 {
		return nil
	}
	return c.threads[len(c.threads)-1]
}

func (c *chat) active() bool {
	t := c.last()
	return t != nil && t.active
}

type thread struct {
	id        string
	active    bool
	createdAt time.Time
	props     map[string]map[string]any
	events    []*event
	agents    []string // agent IDs in the thread, in the order they joined
	queuedAt  time.Time
}

// hasAgent reports whether id takes part in the thread.
func (t *thread) hasAgent(id string) bool {
	for _, a := range t.agents {
		if a == id {
			return true
		}
	}
	return false
}

// join adds agent id to the thread once.
func (t *thread) join(id string) {
	if !t.hasAgent(id) {
		t.agents = append(t.agents, id)
	}
}

// event is a stored event with every field LiveChat keeps for its type:
// a file's metadata, a rich message's template and elements, a filled
// form's fields.
type event struct {
	ID                string
	CustomID          string
	Type              string
	Text              string
	AuthorID          string
	Recipients        string
	CreatedAt         time.Time
	Properties        map[string]any
	URL               string
	SystemMessageType string
	file              fileMeta
	TemplateID        string
	Elements          []any
	Fields            []any
}

// fileMeta is what LiveChat keeps about an uploaded file.
type fileMeta struct {
	Name         string `json:"name,omitempty"`
	ContentType  string `json:"content_type,omitempty"`
	Size         int64  `json:"size,omitempty"`
	Width        int    `json:"width,omitempty"`
	Height       int    `json:"height,omitempty"`
	ThumbnailURL string `json:"thumbnail_url,omitempty"`
	Thumbnail2x  string `json:"thumbnail2x_url,omitempty"`
}

// timeFormat is how LiveChat writes timestamps: microseconds, UTC.
const timeFormat = "2006-01-02T15:04:05.000000Z"

func fmtTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// fmtOptTime is fmtTime, or "" for the zero time.
func fmtOptTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return fmtTime(t)
}
