package spool

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names.
var (
	bucketPending   = []byte("pending")    // Seq -> encoded Entry
	bucketDedup     = []byte("dedup")      // Key -> time appended
	bucketDedupTime = []byte("dedup_time") // time appended + Key -> nothing, for expiry
	bucketDead      = []byte("dead")       // Seq -> DeadLetter as JSON
)

// FileName is the name of a Bolt spool's file in its directory.
const FileName = "spool.db"

// commitDelay is the longest a write waits for others to share its commit.
const commitDelay = time.Millisecond

// BoltOptions configure a Bolt spool.
type BoltOptions struct {
	MaxBytes       int64         // Append returns ErrFull beyond this many pending bytes
	MaxDeadLetters int           // dead letters kept; older ones are deleted
	MaxDeadBytes   int64         // bytes of dead letters kept; older ones are deleted
	DedupWindow    time.Duration // 0 disables deduplication
	Now            func() time.Time

	// MaxValueBytes bounds the memory of decoded events kept between
	// Append and Load, estimated as DecodedOverhead bytes per payload
	// byte. Load hands a kept event to the delivery side, which then does
	// not decode the payload again. 0 keeps none.
	MaxValueBytes int64
}

// Bolt is a Spool in a bbolt file. Every change is committed with fsync
// before the call returns, so an entry that Append accepted survives a
// crash. Concurrent Appends share one commit (bbolt's Batch), which keeps
// the cost of fsync per webhook low under load.
type Bolt struct {
	db   *bolt.DB
	opts BoltOptions

	bytes     atomic.Int64
	pending   atomic.Int64
	dead      atomic.Int64
	deadBytes atomic.Int64

	values valueCache

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// valueCache keeps the Values of entries that this process appended, keyed
// by Seq, until Load hands them out.
type valueCache struct {
	mu    sync.Mutex
	items map[uint64]cachedValue
	bytes int64
	max   int64
}

type cachedValue struct {
	value any
	cost  int64
}

// put keeps value unless that would exceed the byte bound, and reports
// whether it did. Under a backlog the cache fills and later entries are
// decoded again when loaded.
func (c *valueCache) put(seq uint64, value any, payload int) bool {
	cost := DecodedOverhead * int64(payload)
	if value == nil || c.max <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bytes+cost > c.max {
		return false
	}
	if c.items == nil {
		c.items = make(map[uint64]cachedValue)
	}
	c.items[seq] = cachedValue{value, cost}
	c.bytes += cost
	return true
}

// take removes and returns the value kept for seq, or nil.
func (c *valueCache) take(seq uint64) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.items[seq]
	if !ok {
		return nil
	}
	delete(c.items, seq)
	c.bytes -= v.cost
	return v.value
}

// drop removes the values kept for seqs, if any. The feeder takes each value
// on Load, so this only guards against an entry removed without a Load.
func (c *valueCache) drop(seqs []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.items) == 0 {
		return
	}
	for _, seq := range seqs {
		if v, ok := c.items[seq]; ok {
			delete(c.items, seq)
			c.bytes -= v.cost
		}
	}
}

func (c *valueCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items, c.bytes = nil, 0
}

// OpenBolt opens or creates the spool in dir. It fails when another
// process has the spool open.
func OpenBolt(dir string, opts BoltOptions) (*Bolt, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// A commit then skips writing the free page list, which grows with
		// the file; bbolt rebuilds it by a scan at open instead.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("spool: %s is locked by another process: one process at a time may use a spool directory", path)
	}
	if err != nil {
		// The error from bbolt names the path already.
		return nil, fmt.Errorf("spool: %w", err)
	}
	// bbolt waits this long for more writes to join a commit. Its default
	// of 10ms would be most of an acknowledgement's latency, while one
	// commit takes two fsyncs (about 0.3ms each on an ext4 virtual disk
	// here). Under load, writes that arrive during a commit join the next
	// one anyway.
	db.MaxBatchDelay = commitDelay
	b := &Bolt{db: db, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	b.values.max = opts.MaxValueBytes
	if err := b.init(); err != nil {
		db.Close()
		return nil, err
	}
	go b.expireLoop()
	return b, nil
}

// init creates the buckets and counts what an earlier run left.
func (b *Bolt) init() error {
	return b.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketPending, bucketDedup, bucketDedupTime, bucketDead} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("spool: create bucket %s: %w", name, err)
			}
		}
		var bytes, pending int64
		tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			bytes += int64(len(v))
			pending++
			return nil
		})
		var deadBytes, dead int64
		tx.Bucket(bucketDead).ForEach(func(k, v []byte) error {
			deadBytes += int64(len(v))
			dead++
			return nil
		})
		b.bytes.Store(bytes)
		b.pending.Store(pending)
		b.dead.Store(dead)
		b.deadBytes.Store(deadBytes)
		return nil
	})
}

// Append implements Spool.
func (b *Bolt) Append(e *Entry) error {
	now := b.opts.Now()
	value := encodeEntry(e)
	if b.bytes.Load()+int64(len(value)) > b.opts.MaxBytes {
		// A redelivery of an entry already stored still gets
		// ErrDuplicate, so the webhook gets 200 rather than 503.
		if b.isDuplicate(e.Key, now) {
			return ErrDuplicate
		}
		return ErrFull
	}
	// Duplicates are found inside the write batch below. A read
	// transaction before it would cost every webhook to spare the few
	// redeliveries a place in a batch.

	var duplicate bool
	var cachedSeq uint64 // the Seq under which e.Value was kept, or 0
	err := b.db.Batch(func(tx *bolt.Tx) error {
		// Batch may run this function again, so it sets every result.
		duplicate = false
		if cachedSeq != 0 {
			b.values.take(cachedSeq)
			cachedSeq = 0
		}
		dedup := tx.Bucket(bucketDedup)
		if b.opts.DedupWindow > 0 && e.Key != "" {
			if v := dedup.Get([]byte(e.Key)); v != nil && now.Sub(decodeTime(v)) < b.opts.DedupWindow {
				duplicate = true
				return nil
			}
		}
		pending := tx.Bucket(bucketPending)
		seq, err := pending.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		if err := pending.Put(seqKey(seq), value); err != nil {
			return err
		}
		// Kept before the commit: once it is visible, the feeder may load
		// the entry at once.
		if b.values.put(seq, e.Value, len(e.Payload)) {
			cachedSeq = seq
		}
		if b.opts.DedupWindow > 0 && e.Key != "" {
			return putDedup(tx, e.Key, now)
		}
		return nil
	})
	if err != nil || duplicate {
		if cachedSeq != 0 {
			b.values.take(cachedSeq)
		}
	}
	if err != nil {
		return b.writeError("append", err)
	}
	if duplicate {
		return ErrDuplicate
	}
	b.bytes.Add(int64(len(value)))
	b.pending.Add(1)
	return nil
}

// isDuplicate checks the dedup index in a read transaction, which needs no
// fsync, so duplicates never join a write batch.
func (b *Bolt) isDuplicate(key string, now time.Time) bool {
	if b.opts.DedupWindow <= 0 || key == "" {
		return false
	}
	var dup bool
	b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDedup).Get([]byte(key))
		dup = v != nil && now.Sub(decodeTime(v)) < b.opts.DedupWindow
		return nil
	})
	return dup
}

func putDedup(tx *bolt.Tx, key string, now time.Time) error {
	if err := tx.Bucket(bucketDedup).Put([]byte(key), encodeTime(now)); err != nil {
		return err
	}
	return tx.Bucket(bucketDedupTime).Put(append(encodeTime(now), key...), nil)
}

func (b *Bolt) writeError(op string, err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return fmt.Errorf("spool: %s: %w", op, err)
}

// Load implements Spool.
func (b *Bolt) Load(after uint64, max int) ([]*Entry, error) {
	var out []*Entry
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPending).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			e, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			e.Seq = binary.BigEndian.Uint64(k)
			e.Value = b.values.take(e.Seq)
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, b.writeError("load", err)
	}
	return out, nil
}

// writeChunk bounds the entries one Freeze or Done transaction writes. A
// full batch of 2000 records in one commit held the write lock for tens of
// milliseconds, and every webhook's Append waited behind it.
const writeChunk = 256

// Freeze implements Spool. It commits in chunks of writeChunk records.
func (b *Bolt) Freeze(records map[uint64][]byte) error {
	chunk := make(map[uint64][]byte, min(len(records), writeChunk))
	for seq, record := range records {
		chunk[seq] = record
		if len(chunk) == writeChunk {
			if err := b.freezeChunk(chunk); err != nil {
				return err
			}
			clear(chunk)
		}
	}
	if len(chunk) == 0 {
		return nil
	}
	return b.freezeChunk(chunk)
}

func (b *Bolt) freezeChunk(records map[uint64][]byte) error {
	var delta int64
	err := b.db.Batch(func(tx *bolt.Tx) error {
		delta = 0
		pending := tx.Bucket(bucketPending)
		for seq, record := range records {
			v := pending.Get(seqKey(seq))
			if v == nil {
				continue
			}
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			e.Record = record
			value := encodeEntry(e)
			delta += int64(len(value) - len(v))
			if err := pending.Put(seqKey(seq), value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return b.writeError("freeze", err)
	}
	b.bytes.Add(delta)
	return nil
}

// Done implements Spool. It commits in chunks of writeChunk entries.
func (b *Bolt) Done(seqs ...uint64) error {
	b.values.drop(seqs)
	for len(seqs) > writeChunk {
		if err := b.doneChunk(seqs[:writeChunk]); err != nil {
			return err
		}
		seqs = seqs[writeChunk:]
	}
	return b.doneChunk(seqs)
}

func (b *Bolt) doneChunk(seqs []uint64) error {
	var bytes, count int64
	err := b.db.Batch(func(tx *bolt.Tx) error {
		bytes, count = 0, 0
		pending := tx.Bucket(bucketPending)
		for _, seq := range seqs {
			if v := pending.Get(seqKey(seq)); v != nil {
				bytes += int64(len(v))
				count++
				if err := pending.Delete(seqKey(seq)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return b.writeError("done", err)
	}
	b.bytes.Add(-bytes)
	b.pending.Add(-count)
	return nil
}

// DeadLetter implements Spool. When more than MaxDeadLetters or
// MaxDeadBytes are kept, the oldest are deleted.
func (b *Bolt) DeadLetter(dls ...DeadLetter) error {
	seqs := make([]uint64, len(dls))
	for i := range dls {
		seqs[i] = dls[i].Entry.Seq
	}
	b.values.drop(seqs)
	var bytes, count, deadDelta, deadBytesDelta int64
	err := b.db.Batch(func(tx *bolt.Tx) error {
		bytes, count, deadDelta, deadBytesDelta = 0, 0, 0, 0
		pending, dead := tx.Bucket(bucketPending), tx.Bucket(bucketDead)
		for i := range dls {
			dl := &dls[i]
			key := seqKey(dl.Entry.Seq)
			if v := pending.Get(key); v != nil {
				bytes += int64(len(v))
				count++
				if err := pending.Delete(key); err != nil {
					return err
				}
			}
			id, err := dead.NextSequence()
			if err != nil {
				return err
			}
			dl.ID = id
			value, err := json.Marshal(toStoredDeadLetter(*dl))
			if err != nil {
				return err
			}
			if err := dead.Put(seqKey(id), value); err != nil {
				return err
			}
			deadDelta++
			deadBytesDelta += int64(len(value))
		}

		// Delete the oldest dead letters beyond the limits.
		c := dead.Cursor()
		for k, v := c.First(); k != nil; k, v = c.First() {
			n, size := b.dead.Load()+deadDelta, b.deadBytes.Load()+deadBytesDelta
			if n <= int64(b.opts.MaxDeadLetters) && size <= b.opts.MaxDeadBytes {
				break
			}
			deadDelta--
			deadBytesDelta -= int64(len(v))
			if err := dead.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return b.writeError("dead-letter", err)
	}
	b.bytes.Add(-bytes)
	b.pending.Add(-count)
	b.dead.Add(deadDelta)
	b.deadBytes.Add(deadBytesDelta)
	return nil
}

// DeadLetters implements Spool.
func (b *Bolt) DeadLetters(max int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDead).Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			var s storedDeadLetter
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("dead letter %d: %w", binary.BigEndian.Uint64(k), err)
			}
			dl := s.deadLetter()
			dl.ID = binary.BigEndian.Uint64(k)
			out = append(out, dl)
		}
		return nil
	})
	if err != nil {
		return nil, b.writeError("list dead letters", err)
	}
	return out, nil
}

// deadKeys returns the keys of the dead letters with the given IDs, or of
// all of them when ids is empty.
func deadKeys(dead *bolt.Bucket, ids []uint64) [][]byte {
	var keys [][]byte
	dead.ForEach(func(k, _ []byte) error {
		if len(ids) == 0 || slices.Contains(ids, binary.BigEndian.Uint64(k)) {
			keys = append(keys, slices.Clone(k))
		}
		return nil
	})
	return keys
}

// Replay implements Spool.
func (b *Bolt) Replay(ids ...uint64) (int, error) {
	var replayed, bytes, deadBytes int64
	err := b.db.Update(func(tx *bolt.Tx) error {
		pending, dead := tx.Bucket(bucketPending), tx.Bucket(bucketDead)
		for _, k := range deadKeys(dead, ids) {
			stored := dead.Get(k)
			var s storedDeadLetter
			if err := json.Unmarshal(stored, &s); err != nil {
				return fmt.Errorf("dead letter %d: %w", binary.BigEndian.Uint64(k), err)
			}
			e := s.deadLetter().Entry
			seq, err := pending.NextSequence()
			if err != nil {
				return err
			}
			value := encodeEntry(&e)
			if err := pending.Put(seqKey(seq), value); err != nil {
				return err
			}
			deadBytes += int64(len(stored))
			if err := dead.Delete(k); err != nil {
				return err
			}
			replayed++
			bytes += int64(len(value))
		}
		return nil
	})
	if err != nil {
		return 0, b.writeError("replay", err)
	}
	b.bytes.Add(bytes)
	b.pending.Add(replayed)
	b.dead.Add(-replayed)
	b.deadBytes.Add(-deadBytes)
	return int(replayed), nil
}

// Purge implements Spool.
func (b *Bolt) Purge(ids ...uint64) (int, error) {
	var purged, deadBytes int64
	err := b.db.Update(func(tx *bolt.Tx) error {
		dead := tx.Bucket(bucketDead)
		for _, k := range deadKeys(dead, ids) {
			deadBytes += int64(len(dead.Get(k)))
			if err := dead.Delete(k); err != nil {
				return err
			}
			purged++
		}
		return nil
	})
	if err != nil {
		return 0, b.writeError("purge", err)
	}
	b.dead.Add(-purged)
	b.deadBytes.Add(-deadBytes)
	return int(purged), nil
}

// Stats implements Spool.
func (b *Bolt) Stats() Stats {
	return Stats{
		Pending:     int(b.pending.Load()),
		Bytes:       b.bytes.Load(),
		DeadLetters: int(b.dead.Load()),
		DeadBytes:   b.deadBytes.Load(),
	}
}

// bucketProbe holds the key that Probe writes.
var bucketProbe = []byte("probe")

// Probe implements Spool: it commits a small write, so a full or read-only
// disk shows up before a webhook is refused.
func (b *Bolt) Probe() error {
	err := b.db.Update(func(tx *bolt.Tx) error {
		bucket, err := tx.CreateBucketIfNotExists(bucketProbe)
		if err != nil {
			return err
		}
		return bucket.Put(bucketProbe, encodeTime(b.opts.Now()))
	})
	if err != nil {
		return b.writeError("probe", err)
	}
	return nil
}

// Close implements Spool. It is safe to call more than once.
func (b *Bolt) Close() error {
	b.stopOnce.Do(func() { close(b.stop) })
	<-b.done
	b.values.clear()
	err := b.db.Close()
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return nil
	}
	return err
}

// expireLoop deletes dedup keys older than the window once a minute, or
// more often for a short window.
func (b *Bolt) expireLoop() {
	defer close(b.done)
	if b.opts.DedupWindow <= 0 {
		<-b.stop
		return
	}
	interval := min(time.Minute, max(b.opts.DedupWindow/10, 10*time.Millisecond))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.expireDedup()
		}
	}
}

// expireChunk bounds the keys one expiry transaction deletes, so a large
// backlog never holds the write lock for long.
const expireChunk = 10000

func (b *Bolt) expireDedup() {
	cutoff := encodeTime(b.opts.Now().Add(-b.opts.DedupWindow))
	for more := true; more; {
		more = false
		b.db.Update(func(tx *bolt.Tx) error {
			dedup, byTime := tx.Bucket(bucketDedup), tx.Bucket(bucketDedupTime)
			c := byTime.Cursor()
			n := 0
			for k, _ := c.First(); k != nil && string(k[:8]) < string(cutoff); k, _ = c.First() {
				key := k[8:]
				if v := dedup.Get(key); v != nil && string(v) == string(k[:8]) {
					dedup.Delete(key)
				}
				byTime.Delete(k)
				if n++; n >= expireChunk {
					more = true
					break
				}
			}
			return nil
		})
	}
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// encodeTime encodes t so that byte order is time order.
func encodeTime(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))
}

func decodeTime(v []byte) time.Time {
	if len(v) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v)))
}

// entryVersion is the first byte of an encoded entry.
const entryVersion = 1

// encodeEntry encodes an entry as: version, received time, flags, then the
// key, payload and record, each prefixed with its length as a uvarint.
func encodeEntry(e *Entry) []byte {
	buf := make([]byte, 0, 1+8+1+3*binary.MaxVarintLen64+len(e.Key)+len(e.Payload)+len(e.Record))
	buf = append(buf, entryVersion)
	buf = append(buf, encodeTime(e.Received)...)
	var flags byte
	if e.Query {
		flags |= 1
	}
	buf = append(buf, flags)
	for _, field := range [][]byte{[]byte(e.Key), e.Payload, e.Record} {
		buf = binary.AppendUvarint(buf, uint64(len(field)))
		buf = append(buf, field...)
	}
	return buf
}

var errCorruptEntry = errors.New("spool: corrupt entry")

func decodeEntry(v []byte) (*Entry, error) {
	if len(v) < 10 || v[0] != entryVersion {
		return nil, errCorruptEntry
	}
	e := &Entry{Received: decodeTime(v[1:9]), Query: v[9]&1 != 0}
	rest := v[10:]
	var fields [3][]byte
	for i := range fields {
		n, size := binary.Uvarint(rest)
		if size <= 0 || uint64(len(rest)-size) < n {
			return nil, errCorruptEntry
		}
		fields[i] = slices.Clone(rest[size : size+int(n)])
		rest = rest[size+int(n):]
	}
	e.Key = string(fields[0])
	e.Payload = fields[1]
	if len(fields[2]) > 0 {
		e.Record = fields[2]
	}
	return e, nil
}

// storedDeadLetter is a dead letter as JSON, readable with any bbolt
// browser.
type storedDeadLetter struct {
	Seq      uint64          `json:"seq"`
	Key      string          `json:"key"`
	Received time.Time       `json:"received"`
	Query    bool            `json:"query"`
	Payload  []byte          `json:"payload"`
	Record   json.RawMessage `json:"record,omitempty"`
	Stage    string          `json:"stage"`
	Reason   string          `json:"reason"`
	Status   int             `json:"status"`
	Body     string          `json:"body"`
	Attempts int             `json:"attempts"`
	First    time.Time       `json:"first"`
	Last     time.Time       `json:"last"`
}

func toStoredDeadLetter(dl DeadLetter) storedDeadLetter {
	e := dl.Entry
	return storedDeadLetter{
		Seq: e.Seq, Key: e.Key, Received: e.Received, Query: e.Query,
		Payload: e.Payload, Record: e.Record,
		Stage: dl.Stage, Reason: dl.Reason, Status: dl.Status, Body: dl.Body,
		Attempts: dl.Attempts, First: dl.First, Last: dl.Last,
	}
}

func (s storedDeadLetter) deadLetter() DeadLetter {
	var record []byte
	if len(s.Record) > 0 {
		record = []byte(s.Record)
	}
	return DeadLetter{
		Entry: Entry{
			Seq: s.Seq, Key: s.Key, Received: s.Received, Query: s.Query,
			Payload: s.Payload, Record: record,
		},
		Stage: s.Stage, Reason: s.Reason, Status: s.Status, Body: s.Body,
		Attempts: s.Attempts, First: s.First, Last: s.Last,
	}
}
