package identity

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// Defaults of CacheOptions.
const (
	DefaultCacheSize        = 10000
	DefaultCacheTTL         = 10 * time.Minute
	DefaultCacheNegativeTTL = time.Minute
)

// CacheOptions configures NewCache. The zero value of each field selects
// its default.
type CacheOptions struct {
	// Size is the maximum number of cached lookups, known and unknown users
	// together. The least recently used entry is evicted to make room.
	// Zero means DefaultCacheSize.
	Size int

	// TTL is how long a known user is cached. Zero means DefaultCacheTTL.
	TTL time.Duration

	// NegativeTTL is how long an unknown user is cached. Zero means
	// DefaultCacheNegativeTTL, and a negative value turns caching of
	// unknown users off.
	NegativeTTL time.Duration

	// Key returns the cache key of a lookup. Lookups with equal keys share
	// one cache entry. An empty key bypasses the cache for that lookup. Nil
	// means CacheKey, which uses every identifier.
	Key func(Identifiers) string

	// Now returns the current time. Nil means time.Now. Tests set it to
	// move the clock without sleeping.
	Now func() time.Time
}

// CacheStats are counters of a Cache since it was created.
type CacheStats struct {
	// Hits counts lookups served from a cached known user.
	Hits uint64
	// NegativeHits counts lookups served from a cached unknown user.
	NegativeHits uint64
	// Misses counts lookups not served from the cache, including those
	// that bypassed it. Hits + NegativeHits + Misses is every lookup.
	Misses uint64
	// Shared counts misses that waited for another lookup's call to the
	// next resolver for the same key instead of making their own.
	Shared uint64
	// Errors counts calls to the next resolver that returned a transient
	// error. Such results are never cached.
	Errors uint64
	// Evictions counts entries removed to stay within Size. Expired
	// entries are replaced in place and are not counted.
	Evictions uint64
	// Entries is the number of entries now cached, including expired
	// entries that were not yet replaced or evicted.
	Entries int
}

// Cache is a Resolver that remembers the results of another Resolver for a
// while: known users for TTL and unknown users for NegativeTTL. Transient
// errors are never cached. Concurrent lookups of the same key that miss the
// cache make one call to the next resolver and share its result. A panic in
// the next resolver is returned as a transient error.
//
// A Cache is safe for concurrent use. Create it with NewCache; the zero
// value is not usable. A Cache has no background goroutine, so it needs no
// Close: each call to the next resolver runs on a goroutine of its own
// that ends when the call returns, even if every caller waiting for it
// has given up.
type Cache struct {
	next        Resolver
	ttl         time.Duration
	negativeTTL time.Duration
	key         func(Identifiers) string
	now         func() time.Time

	// entries is a plain LRU with the expiry time in each entry. The
	// expirable LRU of golang-lru v2.0.7 would start a cleanup goroutine
	// per cache that never stops, and it has one TTL for all entries.
	entries *lru.Cache[string, cacheEntry]
	calls   singleflight.Group

	hits         atomic.Uint64
	negativeHits atomic.Uint64
	misses       atomic.Uint64
	shared       atomic.Uint64
	errors       atomic.Uint64
	evictions    atomic.Uint64
}

// cacheEntry is one cached result. An empty UserID is an unknown user.
type cacheEntry struct {
	identity Identity
	expires  time.Time
}

// NewCache returns a Cache in front of next. It returns an error when next
// is nil or when opts.Size or opts.TTL is negative.
func NewCache(next Resolver, opts CacheOptions) (*Cache, error) {
	if next == nil {
		return nil, errors.New("identity: NewCache: next resolver is nil")
	}
	if opts.Size < 0 {
		return nil, fmt.Errorf("identity: CacheOptions.Size is %d, must not be negative", opts.Size)
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("identity: CacheOptions.TTL is %v, must not be negative", opts.TTL)
	}

	opts = opts.withDefaults()
	entries, err := lru.New[string, cacheEntry](opts.Size)
	if err != nil {
		return nil, fmt.Errorf("identity: create cache: %w", err)
	}
	return &Cache{
		next:        next,
		ttl:         opts.TTL,
		negativeTTL: opts.NegativeTTL,
		key:         opts.Key,
		now:         opts.Now,
		entries:     entries,
	}, nil
}

func (o CacheOptions) withDefaults() CacheOptions {
	if o.Size == 0 {
		o.Size = DefaultCacheSize
	}
	if o.TTL == 0 {
		o.TTL = DefaultCacheTTL
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = DefaultCacheNegativeTTL
	}
	if o.Key == nil {
		o.Key = CacheKey
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// CacheKey returns the default cache key: a SHA-256 digest over every field
// of ids, each prefixed with its length, so two Identifiers get the same key
// only when all their fields are equal. The digest keeps each key at 32
// bytes however long the identifiers in a webhook are.
func CacheKey(ids Identifiers) string {
	fields := [...]string{
		ids.DeveloperIdentity,
		ids.IDFV, ids.IDFA, ids.AAID, ids.AndroidID, ids.BrowserID,
		ids.BranchID, ids.BranchDeviceID,
		ids.OS,
	}
	h := sha256.New()
	var size [8]byte
	for _, f := range fields {
		binary.BigEndian.PutUint64(size[:], uint64(len(f)))
		h.Write(size[:])
		h.Write([]byte(f))
	}
	return string(h.Sum(nil))
}

// Resolve returns the cached result for ids, or calls the next resolver and
// caches its result. An unknown user is returned as ErrNotFound, whether it
// came from the cache or from the next resolver. Each call gets its own
// copy of the Properties map, but the values in it are shared.
func (c *Cache) Resolve(ctx context.Context, ids Identifiers) (Identity, error) {
	key := c.key(ids)
	if key == "" {
		c.misses.Add(1)
		return answer(c.call(ctx, ids))
	}

	if e, ok := c.entries.Get(key); ok && c.now().Before(e.expires) {
		return c.hit(e.identity)
	}
	c.misses.Add(1)

	// leader is written by the goroutine that runs the call, before it
	// sends the result that this goroutine receives, so reading it after
	// the receive is race-free.
	leader := false
	pending := c.calls.DoChan(key, func() (any, error) {
		leader = true
		id, err := c.fill(ctx, key, ids)
		if err != nil && ctx.Err() != nil {
			err = abandonedCall{err}
		}
		return id, err
	})

	var result singleflight.Result
	select {
	case result = <-pending:
	case <-ctx.Done():
		return Identity{}, fmt.Errorf("identity: wait for cached lookup: %w", ctx.Err())
	}
	if !leader {
		c.shared.Add(1)
	}
	return c.sharedAnswer(ctx, ids, result, leader)
}

// sharedAnswer returns a caller's answer from the result of a shared call.
// The call runs with the context of the caller that started it. When that
// context ended while the caller waiting here still has time, the waiting
// caller asks the next resolver itself, so one caller's deadline does not
// fail the others.
func (c *Cache) sharedAnswer(
	ctx context.Context, ids Identifiers, result singleflight.Result, leader bool,
) (Identity, error) {
	var abandoned abandonedCall
	if !errors.As(result.Err, &abandoned) {
		if result.Err != nil {
			return Identity{}, result.Err
		}
		return answer(result.Val.(Identity), nil)
	}
	if !leader && ctx.Err() == nil {
		return answer(c.call(ctx, ids))
	}
	return Identity{}, abandoned.err
}

// Stats returns the cache's counters. It is safe to call at any time, for
// example from a metrics exporter.
func (c *Cache) Stats() CacheStats {
	return CacheStats{
		Hits:         c.hits.Load(),
		NegativeHits: c.negativeHits.Load(),
		Misses:       c.misses.Load(),
		Shared:       c.shared.Load(),
		Errors:       c.errors.Load(),
		Evictions:    c.evictions.Load(),
		Entries:      c.entries.Len(),
	}
}

func (c *Cache) hit(id Identity) (Identity, error) {
	if id.UserID == "" {
		c.negativeHits.Add(1)
	} else {
		c.hits.Add(1)
	}
	return answer(id, nil)
}

// fill calls the next resolver and caches a known or unknown user. It runs
// once per key at a time, inside the singleflight group.
func (c *Cache) fill(ctx context.Context, key string, ids Identifiers) (Identity, error) {
	id, err := c.call(ctx, ids)
	if errors.Is(err, ErrNotFound) {
		id, err = Identity{}, nil
	}
	if err != nil {
		return Identity{}, err
	}

	ttl := c.ttl
	if id.UserID == "" {
		id.Properties = nil
		ttl = c.negativeTTL
	}
	if ttl > 0 {
		id.Properties = maps.Clone(id.Properties)
		entry := cacheEntry{identity: id, expires: c.now().Add(ttl)}
		if c.entries.Add(key, entry) {
			c.evictions.Add(1)
		}
	}
	return id, nil
}

// call calls the next resolver and counts its transient errors. A panic in
// the next resolver becomes an error, because singleflight turns a panic
// inside DoChan into a crash of the whole process.
func (c *Cache) call(ctx context.Context, ids Identifiers) (id Identity, err error) {
	defer func() {
		if r := recover(); r != nil {
			id, err = Identity{}, fmt.Errorf("identity: resolver panicked: %v", r)
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			c.errors.Add(1)
		}
	}()
	return c.next.Resolve(ctx, ids)
}

// answer returns the result of a lookup to one caller: an unknown user as
// ErrNotFound, and a known user with its own copy of the Properties map.
func answer(id Identity, err error) (Identity, error) {
	if err != nil {
		return Identity{}, err
	}
	if id.UserID == "" {
		return Identity{}, ErrNotFound
	}
	id.Properties = maps.Clone(id.Properties)
	return id, nil
}

// abandonedCall is the error of a shared call whose starting caller's
// context ended.
type abandonedCall struct{ err error }

func (a abandonedCall) Error() string { return a.err.Error() }
func (a abandonedCall) Unwrap() error { return a.err }
