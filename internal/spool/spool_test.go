package spool

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const testWindow = time.Hour

// implementations returns a constructor for each Spool implementation. A
// constructor may be called again with the same dir to reopen a spool.
func implementations(t *testing.T) map[string]func(dir string, c *clock) Spool {
	return map[string]func(string, *clock) Spool{
		"memory": func(_ string, c *clock) Spool {
			return NewMemory(MemoryOptions{Capacity: 5, MaxBytes: 1 << 20, MaxDeadLetters: 3, MaxDeadBytes: 1 << 20, DedupWindow: testWindow, DedupKeys: 100, Now: c.Now})
		},
		"bolt": func(dir string, c *clock) Spool {
			// An encoded test entry takes about 40 bytes, so both hold about 5.
			sp, err := OpenBolt(dir, BoltOptions{MaxBytes: 5 * 40, MaxDeadLetters: 3, MaxDeadBytes: 1 << 20, DedupWindow: testWindow, Now: c.Now})
			if err != nil {
				t.Fatal(err)
			}
			return sp
		},
	}
}

func entry(key string) *Entry {
	return &Entry{Key: key, Received: time.Unix(1717430400, 0), Payload: []byte(`{"name":"OPEN","id":"` + key + `"}`)}
}

func forEach(t *testing.T, test func(t *testing.T, open func() Spool, c *clock)) {
	for name, newSpool := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c := &clock{now: time.Unix(1800000000, 0)}
			test(t, func() Spool { return newSpool(dir, c) }, c)
		})
	}
}

func mustAppend(t *testing.T, sp Spool, e *Entry) {
	t.Helper()
	if err := sp.Append(e); err != nil {
		t.Fatalf("Append %s: %v", e.Key, err)
	}
}

func TestAppendLoadDone(t *testing.T) {
	forEach(t, func(t *testing.T, open func() Spool, c *clock) {
		sp := open()
		defer sp.Close()
		a, b, d := entry("a"), entry("b"), entry("d")
		for _, e := range []*Entry{a, b, d} {
			mustAppend(t, sp, e)
		}
		if !(a.Seq < b.Seq && b.Seq < d.Seq) {
			t.Fatalf("seqs not increasing: %d %d %d", a.Seq, b.Seq, d.Seq)
		}

		got, err := sp.Load(a.Seq, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Key != "b" || got[1].Key != "d" {
			t.Fatalf("Load after a: got %v, want b and d", keys(got))
		}
		if string(got[0].Payload) != string(b.Payload) || !got[0].Received.Equal(b.Received) {
			t.Errorf("Load: entry b changed: %+v", got[0])
		}
		if got, _ := sp.Load(0, 1); len(got) != 1 || got[0].Key != "a" {
			t.Errorf("Load max 1: got %v, want a", keys(got))
		}

		if err := sp.Done(a.Seq, d.Seq); err != nil {
			t.Fatal(err)
		}
		got, _ = sp.Load(0, 10)
		if len(got) != 1 || got[0].Key != "b" {
			t.Errorf("after Done: got %v, want b", keys(got))
		}
		if st := sp.Stats(); st.Pending != 1 || st.Bytes <= 0 {
			t.Errorf("Stats: got %+v, want 1 pending with bytes", st)
		}
	})
}

func TestDedupWindow(t *testing.T) {
	forEach(t, func(t *testing.T, open func() Spool, c *clock) {
		sp := open()
		defer sp.Close()
		mustAppend(t, sp, entry("a"))
		if err := sp.Append(entry("a")); !errors.Is(err, ErrDuplicate) {
			t.Errorf("second append within window: got %v, want ErrDuplicate", err)
		}
		c.Advance(testWindow + time.Second)
		if err := sp.Append(entry("a")); err != nil {
			t.Errorf("append after window: got %v, want nil", err)
		}
		if err := sp.Append(&Entry{Payload: []byte("{}")}); err != nil {
			t.Errorf("append without key: got %v, want nil", err)
		}
		if err := sp.Append(&Entry{Payload: []byte("{}")}); err != nil {
			t.Errorf("second append without key: got %v, want nil", err)
		}
	})
}

func TestAppendFull(t *testing.T) {
	forEach(t, func(t *testing.T, open func() Spool, c *clock) {
		sp := open()
		defer sp.Close()
		var err error
		n := 0
		for ; n < 100; n++ {
			if err = sp.Append(entry(string(rune('a' + n)))); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrFull) {
			t.Fatalf("got %v after %d appends, want ErrFull", err, n)
		}
		if n < 3 || n > 10 {
			t.Errorf("full after %d appends, want about 5", n)
		}
		// A redelivery while full is still recognised, so its sender
		// gets success rather than a refusal.
		if err := sp.Append(entry("a")); !errors.Is(err, ErrDuplicate) {
			t.Errorf("redelivery while full: got %v, want ErrDuplicate", err)
		}
		first, _ := sp.Load(0, 1)
		sp.Done(first[0].Seq)
		if err := sp.Append(entry("zz")); err != nil {
			t.Errorf("append after Done: got %v, want room", err)
		}
	})
}

func TestFreezeAndDeadLetters(t *testing.T) {
	forEach(t, func(t *testing.T, open func() Spool, c *clock) {
		sp := open()
		defer sp.Close()
		var entries []*Entry
		for _, k := range []string{"a", "b", "c", "d"} {
			e := entry(k)
			mustAppend(t, sp, e)
			entries = append(entries, e)
		}
		record := []byte(`{"Event":{"event":"x","properties":{"time":1}}}`)
		if err := sp.Freeze(map[uint64][]byte{entries[0].Seq: record}); err != nil {
			t.Fatal(err)
		}
		got, _ := sp.Load(0, 1)
		if string(got[0].Record) != string(record) {
			t.Errorf("frozen record: got %s, want %s", got[0].Record, record)
		}

		for _, e := range entries {
			loaded, _ := sp.Load(e.Seq-1, 1)
			err := sp.DeadLetter(DeadLetter{Entry: *loaded[0], Stage: "import", Reason: "bad", Status: 400, Attempts: 2})
			if err != nil {
				t.Fatal(err)
			}
		}
		if st := sp.Stats(); st.Pending != 0 {
			t.Errorf("pending after dead-lettering all: got %d, want 0", st.Pending)
		}
		dead, err := sp.DeadLetters(10)
		if err != nil {
			t.Fatal(err)
		}
		// MaxDeadLetters is 3, so the oldest one is gone.
		if len(dead) != 3 || dead[0].Entry.Key != "b" {
			t.Fatalf("dead letters: got %v, want b, c, d", deadLetterKeys(dead))
		}
		if dead[0].Stage != "import" || dead[0].Status != 400 || dead[0].Attempts != 2 || dead[0].Reason != "bad" {
			t.Errorf("dead letter fields: got %+v", dead[0])
		}

		n, err := sp.Replay(dead[0].ID)
		if err != nil || n != 1 {
			t.Fatalf("Replay one: got %d, %v, want 1", n, err)
		}
		pending, _ := sp.Load(0, 10)
		if len(pending) != 1 || pending[0].Key != "b" || pending[0].Seq <= dead[2].Entry.Seq {
			t.Errorf("replayed entry: got %v, want b with a new seq", keys(pending))
		}

		n, err = sp.Purge()
		if err != nil || n != 2 {
			t.Errorf("Purge all: got %d, %v, want 2", n, err)
		}
		if st := sp.Stats(); st.DeadLetters != 0 {
			t.Errorf("dead letters after Purge: got %d, want 0", st.DeadLetters)
		}
	})
}

func TestReplayKeepsRecord(t *testing.T) {
	forEach(t, func(t *testing.T, open func() Spool, c *clock) {
		sp := open()
		defer sp.Close()
		e := entry("a")
		mustAppend(t, sp, e)
		e.Record = []byte(`{"DistinctID":"user-1"}`)
		sp.DeadLetter(DeadLetter{Entry: *e, Stage: "import"})
		sp.Replay()
		got, _ := sp.Load(0, 10)
		if len(got) != 1 || string(got[0].Record) != `{"DistinctID":"user-1"}` {
			t.Errorf("replayed record: got %v", got)
		}
		// Replaying bypasses the dedup check: the key was seen a moment ago.
		if got[0].Key != "a" {
			t.Errorf("replayed key: got %q, want a", got[0].Key)
		}
	})
}

func TestBoltSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	c := &clock{now: time.Unix(1800000000, 0)}
	open := implementations(t)["bolt"]

	sp := open(dir, c)
	a, b := entry("a"), entry("b")
	mustAppend(t, sp, a)
	mustAppend(t, sp, b)
	sp.Freeze(map[uint64][]byte{a.Seq: []byte(`{"x":1}`)})
	sp.DeadLetter(DeadLetter{Entry: *b, Stage: "import", Reason: "bad"})
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}

	sp = open(dir, c)
	defer sp.Close()
	got, _ := sp.Load(0, 10)
	if len(got) != 1 || got[0].Key != "a" || string(got[0].Record) != `{"x":1}` {
		t.Errorf("pending after reopen: got %v", got)
	}
	if st := sp.Stats(); st.Pending != 1 || st.DeadLetters != 1 || st.Bytes <= 0 {
		t.Errorf("Stats after reopen: got %+v", st)
	}
	if err := sp.Append(entry("a")); !errors.Is(err, ErrDuplicate) {
		t.Errorf("dedup after reopen: got %v, want ErrDuplicate", err)
	}
	c2 := entry("c")
	mustAppend(t, sp, c2)
	if c2.Seq <= a.Seq {
		t.Errorf("seq after reopen: got %d, want above %d", c2.Seq, a.Seq)
	}
}

func TestBoltExpiresDedupKeys(t *testing.T) {
	c := &clock{now: time.Unix(1800000000, 0)}
	sp, err := OpenBolt(t.TempDir(), BoltOptions{MaxBytes: 1 << 20, MaxDeadLetters: 10, MaxDeadBytes: 1 << 20, DedupWindow: testWindow, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for _, k := range []string{"a", "b"} {
		mustAppend(t, sp, entry(k))
	}
	c.Advance(testWindow + time.Minute)
	mustAppend(t, sp, entry("c"))
	if err := sp.checkpoint(sp.lastLogged()); err != nil {
		t.Fatal(err)
	}
	sp.expireDedup()

	var keys int
	sp.db.View(func(tx *bolt.Tx) error {
		keys = tx.Bucket(bucketDedup).Stats().KeyN
		return nil
	})
	if keys != 1 {
		t.Errorf("dedup keys after expiry: got %d, want 1", keys)
	}
}

func TestBoltSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenBolt(dir, BoltOptions{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if other, err := OpenBolt(dir, BoltOptions{MaxBytes: 1 << 20}); err == nil {
		other.Close()
		t.Error("second OpenBolt on the same dir: got nil error, want a lock timeout")
	}
}

func TestDecodeEntryRejectsCorruption(t *testing.T) {
	good := encodeEntry(&Entry{Key: "k", Received: time.Unix(1, 0), Query: true, Payload: []byte("a=b"), Record: []byte("{}")})
	e, err := decodeEntry(good, true)
	if err != nil || e.Key != "k" || !e.Query || string(e.Payload) != "a=b" || string(e.Record) != "{}" {
		t.Fatalf("round trip: got %+v, %v", e, err)
	}
	for _, bad := range [][]byte{nil, {9}, good[:12], append([]byte{2}, good[1:]...)} {
		if _, err := decodeEntry(bad, true); err == nil {
			t.Errorf("decodeEntry(%x): got nil error", bad)
		}
	}
}

func keys(entries []*Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Key)
	}
	return out
}

func deadLetterKeys(dls []DeadLetter) []string {
	var out []string
	for _, dl := range dls {
		out = append(out, dl.Entry.Key)
	}
	return out
}

func TestDeadLettersOfOneEntryKeptApart(t *testing.T) {
	forEach(t, func(t *testing.T, open func() Spool, c *clock) {
		sp := open()
		defer sp.Close()
		e := entry("a")
		mustAppend(t, sp, e)
		if err := sp.DeadLetter(DeadLetter{Entry: *e, Stage: "engage set_once"}); err != nil {
			t.Fatal(err)
		}
		if err := sp.DeadLetter(DeadLetter{Entry: *e, Stage: "engage set"}); err != nil {
			t.Fatal(err)
		}
		dead, _ := sp.DeadLetters(10)
		if len(dead) != 2 || dead[0].Stage != "engage set_once" || dead[1].Stage != "engage set" {
			t.Fatalf("dead letters: got %+v, want both stages", dead)
		}
		if dead[0].ID == dead[1].ID {
			t.Errorf("dead letters share ID %d", dead[0].ID)
		}
		if n, _ := sp.Purge(dead[0].ID); n != 1 {
			t.Errorf("Purge by ID: got %d, want 1", n)
		}
	})
}

func TestDeadLettersBoundedByBytes(t *testing.T) {
	c := &clock{now: time.Unix(1800000000, 0)}
	big := func(key string) *Entry {
		return &Entry{Key: key, Payload: make([]byte, 4000)}
	}
	spools := map[string]Spool{
		"memory": NewMemory(MemoryOptions{Capacity: 100, MaxBytes: 1 << 20, MaxDeadLetters: 100, MaxDeadBytes: 10_000, DedupWindow: testWindow, DedupKeys: 100, Now: c.Now}),
	}
	bolt, err := OpenBolt(t.TempDir(), BoltOptions{MaxBytes: 1 << 20, MaxDeadLetters: 100, MaxDeadBytes: 20_000, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	spools["bolt"] = bolt
	for name, sp := range spools {
		t.Run(name, func(t *testing.T) {
			defer sp.Close()
			for i := range 10 {
				e := big(string(rune('a' + i)))
				mustAppend(t, sp, e)
				sp.DeadLetter(DeadLetter{Entry: *e, Stage: "import"})
			}
			st := sp.Stats()
			if st.DeadLetters == 0 || st.DeadLetters >= 10 {
				t.Errorf("dead letters kept: got %d, want some but not all 10", st.DeadLetters)
			}
			dead, _ := sp.DeadLetters(100)
			if len(dead) != st.DeadLetters || dead[len(dead)-1].Entry.Key != "j" {
				t.Errorf("kept: got %v, want the newest ones", deadLetterKeys(dead))
			}
		})
	}
}

func TestMemoryBoundedByBytes(t *testing.T) {
	sp := NewMemory(MemoryOptions{Capacity: 1000, MaxBytes: 100_000, MaxDeadLetters: 10, MaxDeadBytes: 1 << 20})
	body := make([]byte, 1000)
	n := 0
	for ; n < 1000; n++ {
		// A decoded event counts many times its body.
		if err := sp.Append(&Entry{Payload: body, Value: struct{}{}}); err != nil {
			if !errors.Is(err, ErrFull) {
				t.Fatalf("Append: %v", err)
			}
			break
		}
	}
	if n == 0 || n > 5 {
		t.Errorf("entries accepted: got %d, want a few within 100 kB", n)
	}
}

func TestBoltKeepsValuesUntilLoad(t *testing.T) {
	dir := t.TempDir()
	payload := []byte(`{"name":"x"}`)
	perValue := DecodedOverhead * int64(len(payload))
	b, err := OpenBolt(dir, BoltOptions{MaxBytes: 1 << 20, MaxValueBytes: 2 * perValue})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := b.Append(&Entry{Key: string(rune('a' + i)), Payload: payload, Value: i}); err != nil {
			t.Fatal(err)
		}
	}

	entries, err := b.Load(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("Load: got %d entries, want 3", len(entries))
	}
	// The bound holds two values, so the third entry is decoded again.
	for i, want := range []any{0, 1, nil} {
		if entries[i].Value != want {
			t.Errorf("entry %d: Value %v, want %v", i, entries[i].Value, want)
		}
	}

	again, err := b.Load(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range again {
		if e.Value != nil {
			t.Errorf("second Load, entry %d: Value %v, want nil", i, e.Value)
		}
	}
	if got := b.values.bytes; got != 0 {
		t.Errorf("cached bytes after Load: got %d, want 0", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBoltReopenedHasNoValues(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBolt(dir, BoltOptions{MaxBytes: 1 << 20, MaxValueBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(&Entry{Key: "k", Payload: []byte("{}"), Value: "decoded"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenBolt(dir, BoltOptions{MaxBytes: 1 << 20, MaxValueBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	entries, err := b.Load(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("Load after reopen: got %d entries, want 1", len(entries))
	}
	if entries[0].Value != nil {
		t.Errorf("Load after reopen: Value %v, want nil", entries[0].Value)
	}
}

// TestBoltValuesWithConcurrentLoad appends from several goroutines while
// another loads, as the feeder does under load: every value must be handed
// out once and none may stay behind.
func TestBoltValuesWithConcurrentLoad(t *testing.T) {
	b, err := OpenBolt(t.TempDir(), BoltOptions{MaxBytes: 64 << 20, MaxValueBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const writers, perWriter = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				key := fmt.Sprintf("%d-%d", w, i)
				if err := b.Append(&Entry{Key: key, Payload: []byte(key), Value: key}); err != nil {
					t.Error(err)
				}
			}
		})
	}

	var cursor uint64
	loaded, withValue := 0, 0
	deadline := time.Now().Add(10 * time.Second)
	for loaded < writers*perWriter && time.Now().Before(deadline) {
		entries, err := b.Load(cursor, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			cursor = e.Seq
			loaded++
			if e.Value == string(e.Key) {
				withValue++
			}
		}
	}
	wg.Wait()
	if loaded != writers*perWriter {
		t.Fatalf("loaded %d entries, want %d", loaded, writers*perWriter)
	}
	if withValue != loaded {
		t.Errorf("entries loaded with their value: got %d, want %d", withValue, loaded)
	}
	if got := b.values.bytes; got != 0 {
		t.Errorf("cached bytes after every Load: got %d, want 0", got)
	}
}
