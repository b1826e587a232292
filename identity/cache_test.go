package identity_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/branchmp/branchmp/identity"
)

// fakeClock is a clock that moves only when a test advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// directory is a Resolver backed by a map from developer identity to user
// id, which counts its calls per developer identity.
type directory struct {
	mu    sync.Mutex
	users map[string]string
	calls map[string]int
	err   error
}

func newDirectory(users map[string]string) *directory {
	return &directory{users: users, calls: map[string]int{}}
}

func (d *directory) Resolve(_ context.Context, ids identity.Identifiers) (identity.Identity, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[ids.DeveloperIdentity]++
	if d.err != nil {
		return identity.Identity{}, d.err
	}
	user, ok := d.users[ids.DeveloperIdentity]
	if !ok {
		return identity.Identity{}, identity.ErrNotFound
	}
	props := map[string]any{"plan": "pro"}
	return identity.Identity{UserID: user, Properties: props}, nil
}

func (d *directory) Calls(developerIdentity string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[developerIdentity]
}

func (d *directory) SetError(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err = err
}

func dev(id string) identity.Identifiers {
	return identity.Identifiers{DeveloperIdentity: id}
}

func mustCache(t *testing.T, next identity.Resolver, opts identity.CacheOptions) *identity.Cache {
	t.Helper()
	c, err := identity.NewCache(next, opts)
	if err != nil {
		t.Fatalf("NewCache: %v", err)
	}
	return c
}

func TestCacheHitAfterMiss(t *testing.T) {
	dir := newDirectory(map[string]string{"a": "user-a"})
	c := mustCache(t, dir, identity.CacheOptions{})
	ctx := context.Background()

	for i := range 3 {
		got, err := c.Resolve(ctx, dev("a"))
		if err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
		if got.UserID != "user-a" {
			t.Errorf("lookup %d: UserID: got %q, want user-a", i, got.UserID)
		}
		if got.Properties["plan"] != "pro" {
			t.Errorf("lookup %d: plan: got %v, want pro", i, got.Properties["plan"])
		}
	}

	if n := dir.Calls("a"); n != 1 {
		t.Errorf("calls to next: got %d, want 1", n)
	}
	want := identity.CacheStats{Hits: 2, Misses: 1, Entries: 1}
	if got := c.Stats(); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}

func TestCacheTTLExpiry(t *testing.T) {
	dir := newDirectory(map[string]string{"a": "user-a"})
	clock := newFakeClock()
	c := mustCache(t, dir, identity.CacheOptions{TTL: time.Minute, Now: clock.Now})
	ctx := context.Background()

	steps := []struct {
		advance   time.Duration
		wantCalls int
	}{
		{0, 1},
		{59 * time.Second, 1},
		{time.Second, 2}, // exactly TTL after the first call: expired
		{30 * time.Second, 2},
		{31 * time.Second, 3},
	}
	for i, step := range steps {
		clock.Advance(step.advance)
		if _, err := c.Resolve(ctx, dev("a")); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if n := dir.Calls("a"); n != step.wantCalls {
			t.Errorf("step %d: calls to next: got %d, want %d", i, n, step.wantCalls)
		}
	}
}

func TestCacheTTLExpiryRealClock(t *testing.T) {
	dir := newDirectory(map[string]string{"a": "user-a"})
	c := mustCache(t, dir, identity.CacheOptions{TTL: 20 * time.Millisecond})
	ctx := context.Background()

	deadline := time.Now().Add(5 * time.Second)
	for dir.Calls("a") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("entry did not expire within 5s: calls to next: got %d, want 2", dir.Calls("a"))
		}
		if _, err := c.Resolve(ctx, dev("a")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheNegative(t *testing.T) {
	unknownAsEmpty := identity.ResolverFunc(func(context.Context, identity.Identifiers) (identity.Identity, error) {
		return identity.Identity{Properties: map[string]any{"ignored": true}}, nil
	})
	tests := []struct {
		name string
		next identity.Resolver
	}{
		{"ErrNotFound", newDirectory(nil)},
		{"empty identity", unknownAsEmpty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			next := identity.ResolverFunc(func(ctx context.Context, ids identity.Identifiers) (identity.Identity, error) {
				calls.Add(1)
				return tt.next.Resolve(ctx, ids)
			})
			clock := newFakeClock()
			opts := identity.CacheOptions{NegativeTTL: 10 * time.Second, Now: clock.Now}
			c := mustCache(t, next, opts)

			for i := range 2 {
				got, err := c.Resolve(context.Background(), dev("nobody"))
				if !errors.Is(err, identity.ErrNotFound) {
					t.Errorf("lookup %d: err: got %v, want ErrNotFound", i, err)
				}
				if got.UserID != "" || got.Properties != nil {
					t.Errorf("lookup %d: got %+v, want empty identity", i, got)
				}
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("calls to next before NegativeTTL: got %d, want 1", n)
			}

			clock.Advance(10 * time.Second)
			_, _ = c.Resolve(context.Background(), dev("nobody"))
			if n := calls.Load(); n != 2 {
				t.Errorf("calls to next after NegativeTTL: got %d, want 2", n)
			}
			want := identity.CacheStats{NegativeHits: 1, Misses: 2, Entries: 1}
			if got := c.Stats(); got != want {
				t.Errorf("Stats: got %+v, want %+v", got, want)
			}
		})
	}
}

func TestCacheNegativeTTLOff(t *testing.T) {
	dir := newDirectory(nil)
	c := mustCache(t, dir, identity.CacheOptions{NegativeTTL: -1})

	for range 3 {
		if _, err := c.Resolve(context.Background(), dev("nobody")); !errors.Is(err, identity.ErrNotFound) {
			t.Fatalf("err: got %v, want ErrNotFound", err)
		}
	}
	if n := dir.Calls("nobody"); n != 3 {
		t.Errorf("calls to next: got %d, want 3", n)
	}
	if n := c.Stats().Entries; n != 0 {
		t.Errorf("Entries: got %d, want 0", n)
	}
}

func TestCacheErrorsNotCached(t *testing.T) {
	dir := newDirectory(map[string]string{"a": "user-a"})
	boom := errors.New("database down")
	dir.SetError(boom)
	c := mustCache(t, dir, identity.CacheOptions{})
	ctx := context.Background()

	for i := range 2 {
		if _, err := c.Resolve(ctx, dev("a")); !errors.Is(err, boom) {
			t.Errorf("lookup %d: err: got %v, want %v", i, err, boom)
		}
	}
	dir.SetError(nil)
	got, err := c.Resolve(ctx, dev("a"))
	if err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if got.UserID != "user-a" {
		t.Errorf("UserID: got %q, want user-a", got.UserID)
	}

	if n := dir.Calls("a"); n != 3 {
		t.Errorf("calls to next: got %d, want 3", n)
	}
	want := identity.CacheStats{Misses: 3, Errors: 2, Entries: 1}
	if got := c.Stats(); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	dir := newDirectory(map[string]string{"a": "user-a", "b": "user-b", "c": "user-c"})
	c := mustCache(t, dir, identity.CacheOptions{Size: 2})
	ctx := context.Background()

	// a and b fill the cache; reading a makes b the least recently used,
	// so c evicts b.
	for _, key := range []string{"a", "b", "a", "c", "a", "b"} {
		if _, err := c.Resolve(ctx, dev(key)); err != nil {
			t.Fatalf("lookup %s: %v", key, err)
		}
	}

	wantCalls := map[string]int{"a": 1, "b": 2, "c": 1}
	for key, want := range wantCalls {
		if n := dir.Calls(key); n != want {
			t.Errorf("calls to next for %s: got %d, want %d", key, n, want)
		}
	}
	want := identity.CacheStats{Hits: 2, Misses: 4, Evictions: 2, Entries: 2}
	if got := c.Stats(); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}

func TestCacheSharesConcurrentMiss(t *testing.T) {
	const lookups = 20
	release := make(chan struct{})
	var calls atomic.Int32
	next := identity.ResolverFunc(func(ctx context.Context, _ identity.Identifiers) (identity.Identity, error) {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
			return identity.Identity{}, ctx.Err()
		}
		return identity.Identity{UserID: "user-a"}, nil
	})
	c := mustCache(t, next, identity.CacheOptions{})

	var wg sync.WaitGroup
	errs := make(chan error, lookups)
	for range lookups {
		wg.Go(func() {
			got, err := c.Resolve(context.Background(), dev("a"))
			if err == nil && got.UserID != "user-a" {
				err = fmt.Errorf("UserID: got %q, want user-a", got.UserID)
			}
			errs <- err
		})
	}

	// Hold the first call until every lookup has missed the cache.
	waitFor(t, "all lookups to miss", func() bool { return c.Stats().Misses == lookups })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}

	// Every miss either made a call or shared one. A lookup that missed
	// the cache but reached singleflight only after the first call ended
	// makes a call of its own, so only sharing itself is certain.
	stats := c.Stats()
	callsMade := uint64(calls.Load())
	if stats.Shared+callsMade != lookups {
		t.Errorf("Shared + calls: got %d + %d, want %d in all", stats.Shared, callsMade, lookups)
	}
	if stats.Shared == 0 {
		t.Errorf("Shared: got 0, want most of %d lookups", lookups)
	}
}

func TestCacheConcurrentLookups(t *testing.T) {
	const (
		keys       = 32
		goroutines = 16
		perWorker  = 500
	)
	users := map[string]string{}
	for i := range keys {
		if i%4 != 0 { // every fourth key is an unknown user
			users[fmt.Sprint("dev-", i)] = fmt.Sprint("user-", i)
		}
	}
	dir := newDirectory(users)
	clock := newFakeClock()
	opts := identity.CacheOptions{
		Size: keys / 2, TTL: time.Second, NegativeTTL: time.Second, Now: clock.Now,
	}
	c := mustCache(t, dir, opts)

	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perWorker {
				if g == 0 && i%50 == 0 {
					clock.Advance(300 * time.Millisecond)
				}
				key := fmt.Sprint("dev-", (g+i)%keys)
				got, err := c.Resolve(context.Background(), dev(key))
				if err := checkLookup(key, users[key], got, err); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	stats := c.Stats()
	total := stats.Hits + stats.NegativeHits + stats.Misses
	if total != goroutines*perWorker {
		t.Errorf("Hits + NegativeHits + Misses: got %d, want %d", total, goroutines*perWorker)
	}
	if stats.Entries > keys/2 {
		t.Errorf("Entries: got %d, want at most Size %d", stats.Entries, keys/2)
	}
	if stats.Evictions == 0 {
		t.Error("Evictions: got 0, want some with 32 keys in 16 entries")
	}
}

func checkLookup(key, wantUser string, got identity.Identity, err error) error {
	if wantUser == "" {
		if !errors.Is(err, identity.ErrNotFound) {
			return fmt.Errorf("%s: err: got %v, want ErrNotFound", key, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if got.UserID != wantUser {
		return fmt.Errorf("%s: UserID: got %q, want %q", key, got.UserID, wantUser)
	}
	return nil
}

func TestCacheWaiterOutlivesStarter(t *testing.T) {
	started := make(chan struct{}, 1)
	var calls atomic.Int32
	next := identity.ResolverFunc(func(ctx context.Context, _ identity.Identifiers) (identity.Identity, error) {
		if calls.Add(1) == 1 {
			started <- struct{}{}
			<-ctx.Done()
			return identity.Identity{}, ctx.Err()
		}
		return identity.Identity{UserID: "user-a"}, nil
	})
	c := mustCache(t, next, identity.CacheOptions{})

	starterCtx, cancel := context.WithCancel(context.Background())
	starterErr := make(chan error, 1)
	go func() {
		_, err := c.Resolve(starterCtx, dev("a"))
		starterErr <- err
	}()
	<-started

	waiterDone := make(chan struct{})
	var got identity.Identity
	var err error
	go func() {
		defer close(waiterDone)
		got, err = c.Resolve(context.Background(), dev("a"))
	}()
	waitFor(t, "the waiter to miss", func() bool { return c.Stats().Misses == 2 })
	cancel()

	if err := <-starterErr; !errors.Is(err, context.Canceled) {
		t.Errorf("starter: err: got %v, want context.Canceled", err)
	}
	<-waiterDone
	if err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if got.UserID != "user-a" {
		t.Errorf("waiter: UserID: got %q, want user-a", got.UserID)
	}
}

func TestCacheWaiterContextEnds(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	next := identity.ResolverFunc(func(context.Context, identity.Identifiers) (identity.Identity, error) {
		<-release
		return identity.Identity{UserID: "user-a"}, nil
	})
	c := mustCache(t, next, identity.CacheOptions{})

	go func() { _, _ = c.Resolve(context.Background(), dev("a")) }()
	waitFor(t, "the first lookup to miss", func() bool { return c.Stats().Misses == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.Resolve(ctx, dev("a"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err: got %v, want context.DeadlineExceeded", err)
	}
}

func TestCacheRecoversPanic(t *testing.T) {
	next := identity.ResolverFunc(func(context.Context, identity.Identifiers) (identity.Identity, error) {
		panic("resolver bug")
	})
	c := mustCache(t, next, identity.CacheOptions{})

	_, err := c.Resolve(context.Background(), dev("a"))
	if err == nil || errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("err: got %v, want a transient error", err)
	}
	if n := c.Stats().Errors; n != 1 {
		t.Errorf("Errors: got %d, want 1", n)
	}
}

func TestCacheCustomKey(t *testing.T) {
	dir := newDirectory(map[string]string{"a": "user-a"})
	byDeveloperIdentity := func(ids identity.Identifiers) string { return ids.DeveloperIdentity }
	c := mustCache(t, dir, identity.CacheOptions{Key: byDeveloperIdentity})
	ctx := context.Background()

	// Other identifiers do not change the key.
	_, _ = c.Resolve(ctx, identity.Identifiers{DeveloperIdentity: "a", IDFV: "v1"})
	_, _ = c.Resolve(ctx, identity.Identifiers{DeveloperIdentity: "a", IDFV: "v2"})
	if n := dir.Calls("a"); n != 1 {
		t.Errorf("calls for a: got %d, want 1", n)
	}

	// An empty key bypasses the cache.
	for range 2 {
		_, _ = c.Resolve(ctx, identity.Identifiers{IDFV: "v1"})
	}
	if n := dir.Calls(""); n != 2 {
		t.Errorf("calls for an empty key: got %d, want 2", n)
	}
	want := identity.CacheStats{Hits: 1, Misses: 3, Entries: 1}
	if got := c.Stats(); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}

func TestCacheCopiesProperties(t *testing.T) {
	dir := newDirectory(map[string]string{"a": "user-a"})
	c := mustCache(t, dir, identity.CacheOptions{})

	first, err := c.Resolve(context.Background(), dev("a"))
	if err != nil {
		t.Fatal(err)
	}
	first.Properties["plan"] = "changed by caller"

	second, err := c.Resolve(context.Background(), dev("a"))
	if err != nil {
		t.Fatal(err)
	}
	if second.Properties["plan"] != "pro" {
		t.Errorf("plan: got %v, want pro", second.Properties["plan"])
	}
}

func TestCacheKeyDistinguishesFields(t *testing.T) {
	tests := []struct {
		name string
		a, b identity.Identifiers
	}{
		{"field order", identity.Identifiers{IDFV: "x"}, identity.Identifiers{IDFA: "x"}},
		{"boundary", identity.Identifiers{IDFV: "ab", IDFA: "c"}, identity.Identifiers{IDFV: "a", IDFA: "bc"}},
		{"os", identity.Identifiers{IDFV: "x", OS: "IOS"}, identity.Identifiers{IDFV: "x", OS: "ANDROID"}},
		{"empty vs set", identity.Identifiers{}, identity.Identifiers{BranchDeviceID: "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if identity.CacheKey(tt.a) == identity.CacheKey(tt.b) {
				t.Errorf("CacheKey(%+v) == CacheKey(%+v), want different keys", tt.a, tt.b)
			}
		})
	}

	ids := identity.Identifiers{DeveloperIdentity: "u", IDFV: "v", OS: "IOS"}
	if identity.CacheKey(ids) != identity.CacheKey(ids) {
		t.Error("CacheKey of equal identifiers differs, want a stable key")
	}
}

func TestNewCacheRejectsInvalidOptions(t *testing.T) {
	next := identity.DeveloperIdentity()
	tests := []struct {
		name string
		next identity.Resolver
		opts identity.CacheOptions
	}{
		{"nil next", nil, identity.CacheOptions{}},
		{"negative Size", next, identity.CacheOptions{Size: -1}},
		{"negative TTL", next, identity.CacheOptions{TTL: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := identity.NewCache(tt.next, tt.opts); err == nil {
				t.Error("err: got nil, want an error")
			}
		})
	}
}

// waitFor polls cond until it holds, and fails the test after 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5s waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
