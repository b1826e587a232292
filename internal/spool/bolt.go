package spool

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/branchmp/branchmp/internal/logfield"
)

// Bucket names.
var (
	bucketPending   = []byte("pending")    // Seq -> encoded Entry
	bucketDedup     = []byte("dedup")      // Key -> time appended
	bucketDedupTime = []byte("dedup_time") // time appended + Key -> nothing, for expiry
	bucketDead      = []byte("dead")       // Seq -> DeadLetter as JSON
	bucketLog       = []byte("log")        // keyCheckpoint -> highest Seq moved from the log
)

// keyCheckpoint holds the highest Seq that a checkpoint moved from the log
// files into the bbolt file. Log records up to it are there already.
var keyCheckpoint = []byte("checkpoint")

// FileName is the name of a Bolt spool's bbolt file in its directory. Log
// files sit beside it.
const FileName = "spool.db"

const (
	// maxGroup and maxGroupBytes bound the Appends that share one log
	// write.
	maxGroup      = 1024
	maxGroupBytes = 4 << 20

	// Each checkpointInterval, a checkpoint moves the entries logged
	// before the previous one. Most entries are delivered sooner, and
	// Done and DeadLetter move the entries they remove no further than
	// the dedup index, so those are never written as pending entries.
	checkpointInterval = time.Second

	// checkpointBytes of logged entries start a checkpoint of all of them
	// before the next tick, and maxBufferBytes of them hold back further
	// Appends until a checkpoint has moved them, so memory stays bounded
	// when the bbolt file is slow.
	checkpointBytes = 16 << 20
	maxBufferBytes  = 64 << 20
)

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

	// Logger gets the spool's start, recovery and background errors. nil
	// logs nothing.
	Logger *zap.Logger
}

// Bolt is a Spool kept in a directory: a log of accepted entries and a
// bbolt file. Append returns once the entry is in the log and on disk, so
// an entry that Append accepted survives a crash. Concurrent Appends share
// one log write and fdatasync. A background checkpoint moves logged
// entries into the bbolt file, which holds everything else: pending
// entries, the dedup index and the dead letters. Opening a spool first
// moves what its log holds beyond the last checkpoint.
type Bolt struct {
	db   *bolt.DB
	dir  string
	opts BoltOptions
	log  *zap.Logger

	bytes     atomic.Int64
	pending   atomic.Int64
	dead      atomic.Int64
	deadBytes atomic.Int64

	values valueCache

	// Appends go to the writer goroutine through appends. closeMu guards
	// sending on it against Close.
	appends    chan *appendRequest
	closeMu    sync.RWMutex
	closed     bool
	writerDone chan struct{}

	// The log files and Seq, guarded by logMu. The writer holds it from
	// assigning Seqs to publishing the entries in buffer.
	logMu     sync.Mutex
	current   *logFile   // the file the next records go to, or nil until one is needed
	retired   []*logFile // written before current, in order
	clean     []*logFile // all records checkpointed, ready for reuse
	logNumber int        // number of the last log file created
	logClosed bool
	seq       uint64 // last Seq assigned
	writeBuf  []byte

	// Entries in the log but not yet in the bbolt file, in Seq order, and
	// their keys, guarded by mu. drained is signalled when a checkpoint
	// removes entries from buffer.
	mu          sync.Mutex
	buffer      []buffered
	bufferBytes int64
	recent      map[string]int64 // Key -> time appended, in UnixNano
	drained     *sync.Cond
	cpErr       error // the last checkpoint's error, nil once one succeeds

	// viewMu makes a read of the bbolt file and of buffer one view: Load
	// and the dedup check hold it for reading, and a checkpoint holds it
	// for writing while it removes what it moved from buffer.
	viewMu sync.RWMutex

	// cpMu orders checkpoints and every other bbolt write that may touch
	// a logged entry. checkpointed is the highest Seq moved, and mark the
	// last Seq logged at the previous tick; both are guarded by cpMu.
	cpMu         sync.Mutex
	checkpointed uint64
	mark         uint64

	checkpointSoon chan struct{}
	stopOnce       sync.Once
	stop           chan struct{}
	done           chan struct{}
}

// buffered is an entry that is in the log but not yet in the bbolt file.
type buffered struct {
	seq   uint64
	key   string
	at    int64  // time appended, UnixNano
	value []byte // encoded entry
}

// appendRequest is an Append waiting for the writer.
type appendRequest struct {
	entry *Entry
	value []byte // encoded entry
	now   time.Time
	err   error
	done  chan error
}

var appendRequests = sync.Pool{New: func() any {
	return &appendRequest{done: make(chan error, 1)}
}}

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
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	// A compaction that a crash interrupted left its copy behind.
	if err := os.Remove(path + compactSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("spool: %w", err)
	}
	err := checkFile(path)
	var db *bolt.DB
	if err == nil {
		db, err = openFile(path)
	}
	if err == nil {
		db, err = compact(db, path, logger)
	}
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("spool: %s is locked by another process: one process at a time may use a spool directory", path)
	}
	if errors.Is(err, errDamaged) {
		return nil, fmt.Errorf("spool: %s is %w. Move it out of %s to start with a new, empty file; its pending events and dead letters then stay in the moved file", path, err, dir)
	}
	if err != nil {
		// The error from bbolt names the path already.
		return nil, fmt.Errorf("spool: %w", err)
	}
	b := &Bolt{
		db: db, dir: dir, opts: opts, log: logger,
		appends:        make(chan *appendRequest, maxGroup),
		writerDone:     make(chan struct{}),
		recent:         make(map[string]int64),
		checkpointSoon: make(chan struct{}, 1),
		stop:           make(chan struct{}),
		done:           make(chan struct{}),
	}
	b.drained = sync.NewCond(&b.mu)
	b.values.max = opts.MaxValueBytes
	if err := b.init(); err != nil {
		db.Close()
		return nil, err
	}
	go b.writeLoop()
	go b.maintain()
	st := b.Stats()
	logger.Info("spool opened", zap.String("dir", dir),
		zap.Int(logfield.Pending, st.Pending), zap.Int(logfield.DeadLetters, st.DeadLetters))
	return b, nil
}

// openFile opens the bbolt file for writing. A damaged page that checkFile
// missed makes bbolt panic while it scans for free pages, and that becomes
// an error too.
func openFile(path string) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", errDamaged, r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// A commit then skips writing the free page list, which grows with
		// the file; bbolt rebuilds it by a scan at open instead.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
}

// compactSuffix ends the name of the copy that compact writes.
const compactSuffix = ".compact"

// compactMinFree is the free space in the bbolt file from which opening the
// spool rewrites the file without it, when it is also half the file. A
// variable, so tests can lower it.
var compactMinFree int64 = 64 << 20

// compact rewrites the bbolt file without its free pages when they take
// compactMinFree bytes and half the file, as after a long outage: bbolt
// reuses free pages but never shrinks its file. It returns the open file,
// the new one or, when compacting fails, the old one.
func compact(db *bolt.DB, path string, log *zap.Logger) (*bolt.DB, error) {
	info, err := os.Stat(path)
	if err != nil {
		return db, nil
	}
	free := int64(db.Stats().FreePageN) * int64(db.Info().PageSize)
	if free < compactMinFree || free < info.Size()/2 {
		return db, nil
	}

	start := time.Now()
	tmp := path + compactSuffix
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err == nil {
		err = errors.Join(bolt.Compact(dst, db, 16<<20), dst.Close())
	}
	if err != nil {
		os.Remove(tmp)
		log.Warn("spool failed to compact its file, so it goes on with the file as it is", zap.Error(err))
		return db, nil
	}

	if err := db.Close(); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		log.Warn("spool failed to replace its file with the compacted copy, so it goes on with the file as it is", zap.Error(err))
		return openFile(path)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, err
	}

	var after int64
	if info, err := os.Stat(path); err == nil {
		after = info.Size()
	}
	log.Info("spool compacted its file", zap.Int64("bytes_before", info.Size()), zap.Int64("bytes_after", after),
		zap.Duration("duration", time.Since(start)))
	return openFile(path)
}

// init creates the buckets, moves into the bbolt file what the log files
// hold beyond the last checkpoint, deletes the log files, and counts what
// an earlier run left.
func (b *Bolt) init() error {
	err := b.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketPending, bucketDedup, bucketDedupTime, bucketDead, bucketLog} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("spool: create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := b.recover(); err != nil {
		return err
	}
	return b.db.View(func(tx *bolt.Tx) error {
		pending := tx.Bucket(bucketPending)
		var bytes, count int64
		pending.ForEach(func(k, v []byte) error {
			bytes += int64(len(v))
			count++
			return nil
		})
		var deadBytes, dead int64
		tx.Bucket(bucketDead).ForEach(func(k, v []byte) error {
			deadBytes += int64(len(v))
			dead++
			return nil
		})
		b.bytes.Store(bytes)
		b.pending.Store(count)
		b.dead.Store(dead)
		b.deadBytes.Store(deadBytes)

		// Seqs continue above every Seq the spool has stored.
		b.checkpointed = checkpointSeq(tx)
		b.seq = max(pending.Sequence(), b.checkpointed)
		if k, _ := pending.Cursor().Last(); k != nil {
			b.seq = max(b.seq, binary.BigEndian.Uint64(k))
		}
		return nil
	})
}

func checkpointSeq(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketLog).Get(keyCheckpoint); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// damagedPrefix starts the name that a damaged log file is renamed to
// after recovery, so a person can inspect it and the next open skips it.
const damagedPrefix = "damaged-"

// recover moves the log records above the checkpoint into the bbolt file,
// then deletes the log files, except that damaged ones are renamed. Their
// entries were accepted, so an error here fails the open rather than
// losing them.
func (b *Bolt) recover() error {
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return fmt.Errorf("spool: read directory: %w", err)
	}
	var paths []string
	for _, de := range entries {
		if n, ok := logNumber(de.Name()); ok && de.Type().IsRegular() {
			paths = append(paths, filepath.Join(b.dir, de.Name()))
			b.logNumber = max(b.logNumber, n)
		}
	}
	if len(paths) == 0 {
		return nil
	}

	records, damaged, err := b.readLogs(paths)
	if err != nil {
		return err
	}
	if err := b.moveRecords(records); err != nil {
		return err
	}

	for _, path := range paths {
		if kept, ok := damaged[path]; ok {
			if err := os.Rename(path, filepath.Join(b.dir, kept)); err != nil {
				return fmt.Errorf("spool: keep damaged log: %w", err)
			}
			continue
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("spool: delete log: %w", err)
		}
	}
	if err := syncDir(b.dir); err != nil {
		return fmt.Errorf("spool: sync directory: %w", err)
	}
	return nil
}

// readLogs returns the records above the checkpoint in the log files at
// paths, in Seq order, and the name each damaged file is to be kept under,
// by path. It logs each damaged file.
func (b *Bolt) readLogs(paths []string) ([]logRecord, map[string]string, error) {
	var after uint64
	b.db.View(func(tx *bolt.Tx) error {
		after = checkpointSeq(tx)
		return nil
	})

	var records []logRecord
	damaged := make(map[string]string)
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("spool: read log: %w", err)
		}
		read, reading := readLog(data, after)
		records = append(records, read...)
		if !reading.lost() {
			continue
		}
		// Named with the time, so a later damaged file with the same
		// name does not replace it.
		kept := damagedPrefix + time.Now().UTC().Format("20060102T150405") + "-" + filepath.Base(path)
		damaged[path] = kept
		b.log.Warn("spool log file is damaged: its unreadable records are lost, the others were recovered, and the file is kept",
			zap.String("file", kept), zap.Bool("bad_header", reading.badHeader),
			zap.Int("damaged_regions", reading.damaged), zap.Int("missing_records", reading.missing),
			zap.Bool("bad_end", reading.badEnd), zap.Int(logfield.Count, len(read)))
	}
	slices.SortFunc(records, func(x, y logRecord) int { return cmp.Compare(x.seq, y.seq) })
	return records, damaged, nil
}

// moveRecords writes records into the bbolt file as pending entries. A
// record that passed its checks but cannot be decoded was written by a
// version of this package with another entry format, and becomes a dead
// letter.
func (b *Bolt) moveRecords(records []logRecord) error {
	if len(records) == 0 {
		return nil
	}
	now := b.opts.Now()
	err := b.db.Update(func(tx *bolt.Tx) error {
		var moved []buffered
		for _, r := range records {
			e, err := decodeEntry(r.value, false)
			if err == nil {
				moved = append(moved, buffered{seq: r.seq, key: e.Key, at: e.Received.UnixNano(), value: r.value})
				continue
			}
			b.log.Error("spool log record is unreadable, so it was moved to the dead letters as it is",
				zap.Uint64(logfield.Seq, r.seq), zap.Error(err))
			dl := unreadableEntry(r.seq, r.value, fmt.Sprintf("log record %d: %v", r.seq, err), now)
			if err := putDeadLetter(tx, &dl); err != nil {
				return err
			}
		}
		_, _, err := b.checkpointTx(tx, moved, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("spool: move log records into %s: %w", FileName, err)
	}
	b.log.Info("spool recovered entries from its log", zap.Int(logfield.Count, len(records)))
	return nil
}

// checkpointTx writes moved, in Seq order, into the bbolt file as pending
// entries, except those whose Seq is in skip, which are being removed:
// only their keys go into the dedup index. It returns the bytes and count
// of the skipped entries.
func (b *Bolt) checkpointTx(tx *bolt.Tx, moved []buffered, skip map[uint64]bool) (skippedBytes, skipped int64, err error) {
	if len(moved) == 0 {
		return 0, 0, nil
	}
	pending := tx.Bucket(bucketPending)
	for _, m := range moved {
		if skip[m.seq] {
			skippedBytes += int64(len(m.value))
			skipped++
		} else if err := pending.Put(seqKey(m.seq), m.value); err != nil {
			return 0, 0, err
		}
		if b.opts.DedupWindow > 0 && m.key != "" {
			if err := putDedup(tx, m.key, time.Unix(0, m.at)); err != nil {
				return 0, 0, err
			}
		}
	}
	last := moved[len(moved)-1].seq
	if last > pending.Sequence() {
		if err := pending.SetSequence(last); err != nil {
			return 0, 0, err
		}
	}
	return skippedBytes, skipped, tx.Bucket(bucketLog).Put(keyCheckpoint, seqKey(last))
}

// Append implements Spool.
func (b *Bolt) Append(e *Entry) error {
	r := appendRequests.Get().(*appendRequest)
	r.entry, r.value, r.now, r.err = e, encodeEntry(e), b.opts.Now(), nil
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		r.entry, r.value = nil, nil
		appendRequests.Put(r)
		return ErrClosed
	}
	b.appends <- r
	b.closeMu.RUnlock()
	err := <-r.done
	r.entry, r.value = nil, nil
	appendRequests.Put(r)
	return err
}

// writeLoop is the writer goroutine: it takes the Appends waiting, writes
// them to the log in one write, and returns their results. Appends that arrive
// during a write wait for the next, so the group grows with the load and
// a lone Append waits for no other.
func (b *Bolt) writeLoop() {
	defer close(b.writerDone)
	var group []*appendRequest
	for r := range b.appends {
		group = append(group[:0], r)
		size := len(r.value)
	gather:
		for len(group) < maxGroup && size < maxGroupBytes {
			select {
			case r, ok := <-b.appends:
				if !ok {
					break gather
				}
				group = append(group, r)
				size += len(r.value)
			default:
				break gather
			}
		}
		if err := b.waitForCheckpoint(); err != nil {
			for _, r := range group {
				r.err = b.writeError("append", err)
			}
		} else {
			b.commitGroup(group)
		}
		for _, r := range group {
			r.done <- r.err
		}
		clear(group)
	}
}

// waitForCheckpoint holds the writer while more than maxBufferBytes of
// logged entries wait for a checkpoint. It returns the checkpoint's error
// when one fails meanwhile.
func (b *Bolt) waitForCheckpoint() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.bufferBytes > maxBufferBytes {
		if b.cpErr != nil {
			return b.cpErr
		}
		select {
		case b.checkpointSoon <- struct{}{}:
		default:
		}
		b.drained.Wait()
	}
	return nil
}

// commitGroup rejects the duplicates in group and what does not fit,
// writes the rest to the log, and makes them visible to Load. It sets
// each request's err.
func (b *Bolt) commitGroup(group []*appendRequest) {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	if err := b.reject(group); err != nil {
		for _, r := range group {
			r.err = err
		}
		return
	}
	size, n := 0, 0
	for _, r := range group {
		if r.err == nil {
			size += logHeader + len(r.value)
			n++
		}
	}
	if n == 0 {
		return
	}
	// The file comes first: its salt goes into the records' checks.
	lf, err := b.logFor(size)
	if err == nil {
		buf := b.writeBuf[:0]
		if lf.off == 0 {
			buf = appendFileHeader(buf, lf.checker.salt)
		}
		for _, r := range group {
			if r.err == nil {
				b.seq++
				r.entry.Seq = b.seq
				buf = lf.checker.appendRecord(buf, b.seq, r.value)
			}
		}
		lf.last = b.seq
		if err = lf.write(buf); err == nil {
			lf.records += n
		}
		if cap(buf) <= maxGroupBytes {
			b.writeBuf = buf
		}
	}
	if err != nil {
		err = b.writeError("append", err)
		for _, r := range group {
			if r.err == nil {
				r.err = err
			}
		}
		return
	}

	var added, count int64
	for _, r := range group {
		if r.err == nil {
			// Kept before the entry is visible: the feeder may load it
			// at once.
			b.values.put(r.entry.Seq, r.entry.Value, len(r.entry.Payload))
			added += int64(len(r.value))
			count++
		}
	}
	b.mu.Lock()
	for _, r := range group {
		if r.err == nil {
			at := r.now.UnixNano()
			b.buffer = append(b.buffer, buffered{seq: r.entry.Seq, key: r.entry.Key, at: at, value: r.value})
			if r.entry.Key != "" && b.opts.DedupWindow > 0 {
				b.recent[r.entry.Key] = at
			}
		}
	}
	b.bufferBytes += added
	soon := b.bufferBytes >= checkpointBytes
	b.mu.Unlock()
	b.bytes.Add(added)
	b.pending.Add(count)
	if soon {
		select {
		case b.checkpointSoon <- struct{}{}:
		default:
		}
	}
}

// reject sets ErrDuplicate on the requests in group whose key was appended
// within the dedup window (found in the bbolt file, the log or earlier in
// group), and ErrFull on those beyond MaxBytes. A duplicate gets
// ErrDuplicate even when the spool is full, so a redelivery gets 200
// rather than 503.
func (b *Bolt) reject(group []*appendRequest) error {
	window := b.opts.DedupWindow
	var tx *bolt.Tx
	if window > 0 {
		b.viewMu.RLock()
		defer b.viewMu.RUnlock()
		var err error
		if tx, err = b.db.Begin(false); err != nil {
			return b.writeError("append", err)
		}
		defer tx.Rollback()
	}
	var accepted map[string]bool // keys accepted earlier in group
	var added int64
	for _, r := range group {
		key := r.entry.Key
		if tx != nil && key != "" && (accepted[key] || b.seen(tx, key, r.now)) {
			r.err = ErrDuplicate
			continue
		}
		if len(r.value) > MaxEntryBytes {
			r.err = ErrTooLarge
			continue
		}
		if b.bytes.Load()+added+int64(len(r.value)) > b.opts.MaxBytes {
			r.err = ErrFull
			continue
		}
		added += int64(len(r.value))
		if tx != nil && key != "" && len(group) > 1 {
			if accepted == nil {
				accepted = make(map[string]bool, len(group))
			}
			accepted[key] = true
		}
	}
	return nil
}

// seen reports whether key was appended within the dedup window before
// now. The caller holds viewMu for reading.
func (b *Bolt) seen(tx *bolt.Tx, key string, now time.Time) bool {
	window := b.opts.DedupWindow
	b.mu.Lock()
	at, ok := b.recent[key]
	b.mu.Unlock()
	if ok && now.Sub(time.Unix(0, at)) < window {
		return true
	}
	v := tx.Bucket(bucketDedup).Get([]byte(key))
	return v != nil && now.Sub(decodeTime(v)) < window
}

// logFor returns the log file that a write of size bytes goes to. It
// starts another file when there is none, the last write to the current
// one failed, or the write would not fit in it. A full file is sealed
// first. The caller holds logMu.
func (b *Bolt) logFor(size int) (*logFile, error) {
	if lf := b.current; lf != nil {
		full := lf.off > 0 && lf.off+int64(size) > logPrealloc
		if full && !lf.failed {
			if err := lf.write(lf.checker.appendSeal(nil, lf.records)); err != nil {
				b.log.Warn("spool failed to seal a full log file; its records stay readable", zap.Error(err))
			}
		}
		if full || lf.failed {
			b.retired = append(b.retired, lf)
			b.current = nil
		}
	}
	if b.current == nil {
		lf, err := b.nextLog()
		if err != nil {
			return nil, err
		}
		b.current = lf
	}
	return b.current, nil
}

// nextLog returns a clean log file to write from its start, reusing one
// when it can. The caller holds logMu.
func (b *Bolt) nextLog() (*logFile, error) {
	if b.logClosed {
		return nil, ErrClosed
	}
	salt, err := newSalt()
	if err != nil {
		return nil, fmt.Errorf("log salt: %w", err)
	}
	if n := len(b.clean); n > 0 {
		lf := b.clean[n-1]
		b.clean = b.clean[:n-1]
		lf.off, lf.records, lf.checker = 0, 0, newRecordChecker(salt)
		return lf, nil
	}
	// Something else may have taken a name, such as a directory a person
	// made: the next number is tried then.
	for range 100 {
		lf, err := createLog(b.dir, b.logNumber+1)
		if errors.Is(err, fs.ErrExist) {
			b.logNumber++
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create log: %w", err)
		}
		b.logNumber++
		lf.checker = newRecordChecker(salt)
		return lf, nil
	}
	return nil, fmt.Errorf("create log: the next 100 log file names in %s are taken", b.dir)
}

func putDedup(tx *bolt.Tx, key string, at time.Time) error {
	if err := tx.Bucket(bucketDedup).Put([]byte(key), encodeTime(at)); err != nil {
		return err
	}
	return tx.Bucket(bucketDedupTime).Put(append(encodeTime(at), key...), nil)
}

func (b *Bolt) writeError(op string, err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) || errors.Is(err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("spool: %s: %w", op, err)
}

// update runs fn in one bbolt transaction that first moves the logged
// entries with Seqs up to upTo into the bbolt file, so fn finds them, and
// skips those in skip, which fn is to remove. It returns the bytes and
// count of the skipped entries. fn may be nil. With holdLog, logMu stays
// held until the transaction has ended, so fn may assign Seqs and no
// Append becomes visible meanwhile.
func (b *Bolt) update(upTo uint64, skip map[uint64]bool, holdLog bool, fn func(tx *bolt.Tx) error) (skippedBytes, skipped int64, err error) {
	b.cpMu.Lock()
	defer b.cpMu.Unlock()
	if holdLog {
		b.logMu.Lock()
	}
	b.mu.Lock()
	n := sort.Search(len(b.buffer), func(i int) bool { return b.buffer[i].seq > upTo })
	moved := b.buffer[:n:n]
	b.mu.Unlock()
	if n == 0 && fn == nil {
		if holdLog {
			b.logMu.Unlock()
		}
		return 0, 0, nil
	}

	err = b.db.Update(func(tx *bolt.Tx) error {
		var err error
		if skippedBytes, skipped, err = b.checkpointTx(tx, moved, skip); err != nil {
			return err
		}
		if fn != nil {
			return fn(tx)
		}
		return nil
	})
	if holdLog {
		b.logMu.Unlock()
	}
	if err != nil {
		if len(moved) > 0 {
			b.mu.Lock()
			b.cpErr = err
			b.drained.Broadcast()
			b.mu.Unlock()
		}
		return 0, 0, err
	}
	if len(moved) == 0 {
		return 0, 0, nil
	}
	b.checkpointed = moved[n-1].seq

	b.viewMu.Lock()
	b.mu.Lock()
	var bytes int64
	for _, m := range moved {
		bytes += int64(len(m.value))
		if at, ok := b.recent[m.key]; ok && at == m.at {
			delete(b.recent, m.key)
		}
	}
	rest := copy(b.buffer, b.buffer[n:])
	clear(b.buffer[rest:])
	b.buffer = b.buffer[:rest]
	b.bufferBytes -= bytes
	b.cpErr = nil
	b.drained.Broadcast()
	b.mu.Unlock()
	b.viewMu.Unlock()

	// Log files whose records are all moved may be reused.
	b.logMu.Lock()
	for len(b.retired) > 0 && b.retired[0].last <= b.checkpointed {
		lf := b.retired[0]
		b.retired = b.retired[1:]
		if lf.failed || len(b.clean) >= maxCleanLogs {
			if err := lf.remove(); err != nil {
				b.log.Warn("spool failed to delete a log file", zap.Error(err))
			}
			continue
		}
		b.clean = append(b.clean, lf)
	}
	b.logMu.Unlock()
	return skippedBytes, skipped, nil
}

// checkpoint moves the logged entries up to upTo into the bbolt file.
func (b *Bolt) checkpoint(upTo uint64) error {
	_, _, err := b.update(upTo, nil, false, nil)
	return err
}

// lastLogged returns the highest Seq in buffer, or 0.
func (b *Bolt) lastLogged() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buffer) == 0 {
		return 0
	}
	return b.buffer[len(b.buffer)-1].seq
}

// tick checkpoints the entries logged before the previous tick, or all
// of them when they take checkpointBytes.
func (b *Bolt) tick() error {
	b.mu.Lock()
	full := b.bufferBytes >= checkpointBytes
	b.mu.Unlock()
	last := b.lastLogged()
	b.cpMu.Lock()
	upTo := b.mark
	b.mark = last
	b.cpMu.Unlock()
	if full {
		upTo = last
	}
	if upTo == 0 {
		return nil
	}
	return b.checkpoint(upTo)
}

// maxSeq returns the highest of seqs, or 0.
func maxSeq(seqs []uint64) uint64 {
	var m uint64
	for _, s := range seqs {
		m = max(m, s)
	}
	return m
}

// seqSet returns seqs as a set.
func seqSet(seqs []uint64) map[uint64]bool {
	set := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		set[s] = true
	}
	return set
}

// Load implements Spool. An entry in the bbolt file that cannot be decoded
// is moved to the dead letters as it is, so it does not stop delivery.
func (b *Bolt) Load(after uint64, max int) ([]*Entry, error) {
	out, unreadable, err := b.load(after, max)
	if len(unreadable) > 0 {
		b.setAside(unreadable)
	}
	return out, err
}

// unreadableEntry returns the dead letter of an entry that cannot be
// decoded, with its stored bytes as the payload.
func unreadableEntry(seq uint64, stored []byte, reason string, now time.Time) DeadLetter {
	return DeadLetter{
		Entry: Entry{Seq: seq, Received: now, Payload: stored},
		Stage: "spool", Reason: reason, First: now, Last: now,
	}
}

// setAside dead-letters entries that cannot be decoded, with their bytes
// as the payload, and logs each.
func (b *Bolt) setAside(unreadable []DeadLetter) {
	for _, dl := range unreadable {
		b.log.Error("spool entry is unreadable, so it was moved to the dead letters as it is",
			zap.Uint64(logfield.Seq, dl.Entry.Seq), zap.String(logfield.Reason, dl.Reason))
	}
	if err := b.DeadLetter(unreadable...); err != nil {
		b.log.Error("spool failed to move unreadable entries to the dead letters; the next load tries again",
			zap.Error(err), zap.Int(logfield.Count, len(unreadable)))
	}
}

func (b *Bolt) load(after uint64, max int) (out []*Entry, unreadable []DeadLetter, err error) {
	b.viewMu.RLock()
	defer b.viewMu.RUnlock()
	now := b.opts.Now()
	err = b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPending).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			e, err := decodeEntry(v, true)
			if err != nil {
				reason := fmt.Sprintf("entry %d in %s: %v", seq, FileName, err)
				unreadable = append(unreadable, unreadableEntry(seq, slices.Clone(v), reason, now))
				continue
			}
			e.Seq = seq
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, nil, b.writeError("load", err)
	}

	// Entries still only in the log. Their Seqs are above those in the
	// bbolt file, except while a checkpoint has them in both, and except
	// for those Replay assigned.
	b.mu.Lock()
	i := sort.Search(len(b.buffer), func(i int) bool { return b.buffer[i].seq > after })
	logged := slices.Clone(b.buffer[i:min(len(b.buffer), i+max)])
	b.mu.Unlock()
	if len(logged) > 0 {
		fromFile := out
		out = make([]*Entry, 0, min(max, len(fromFile)+len(logged)))
		for len(out) < max && (len(fromFile) > 0 || len(logged) > 0) {
			if len(logged) == 0 || len(fromFile) > 0 && fromFile[0].Seq <= logged[0].seq {
				if len(logged) > 0 && fromFile[0].Seq == logged[0].seq {
					logged = logged[1:]
				}
				out = append(out, fromFile[0])
				fromFile = fromFile[1:]
				continue
			}
			// Logged values are never written to again, so the entry may
			// share their memory.
			e, err := decodeEntry(logged[0].value, false)
			if err != nil {
				// encodeEntry wrote the value in this process.
				return nil, unreadable, fmt.Errorf("spool: load: entry %d: %w", logged[0].seq, err)
			}
			e.Seq = logged[0].seq
			out = append(out, e)
			logged = logged[1:]
		}
	}
	for _, e := range out {
		e.Value = b.values.take(e.Seq)
	}
	return out, unreadable, nil
}

// Freeze implements Spool.
func (b *Bolt) Freeze(records map[uint64][]byte) error {
	var delta int64
	var upTo uint64
	for seq := range records {
		upTo = max(upTo, seq)
	}
	_, _, err := b.update(upTo, nil, false, func(tx *bolt.Tx) error {
		delta = 0
		pending := tx.Bucket(bucketPending)
		for seq, record := range records {
			v := pending.Get(seqKey(seq))
			if v == nil {
				continue
			}
			e, err := decodeEntry(v, true)
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

// Done implements Spool.
func (b *Bolt) Done(seqs ...uint64) error {
	b.values.drop(seqs)
	var bytes, count int64
	skippedBytes, skipped, err := b.update(maxSeq(seqs), seqSet(seqs), false, func(tx *bolt.Tx) error {
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
	b.bytes.Add(-bytes - skippedBytes)
	b.pending.Add(-count - skipped)
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
	skippedBytes, skipped, err := b.update(maxSeq(seqs), seqSet(seqs), false, func(tx *bolt.Tx) error {
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
			size, err := putDeadLetterIn(dead, dl)
			if err != nil {
				return err
			}
			deadDelta++
			deadBytesDelta += int64(size)
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
	b.bytes.Add(-bytes - skippedBytes)
	b.pending.Add(-count - skipped)
	b.dead.Add(deadDelta)
	b.deadBytes.Add(deadBytesDelta)
	return nil
}

// putDeadLetter stores dl in the dead letters and sets its ID. The
// counters are the caller's to update.
func putDeadLetter(tx *bolt.Tx, dl *DeadLetter) error {
	_, err := putDeadLetterIn(tx.Bucket(bucketDead), dl)
	return err
}

// putDeadLetterIn stores dl in dead, sets its ID and returns its size.
func putDeadLetterIn(dead *bolt.Bucket, dl *DeadLetter) (int, error) {
	id, err := dead.NextSequence()
	if err != nil {
		return 0, err
	}
	dl.ID = id
	value, err := json.Marshal(toStoredDeadLetter(*dl))
	if err != nil {
		return 0, err
	}
	return len(value), dead.Put(seqKey(id), value)
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

// Replay implements Spool. The replayed entries get Seqs above every
// logged entry, assigned while no Append can become visible, so Load
// returns Seqs in increasing order across calls.
func (b *Bolt) Replay(ids ...uint64) (int, error) {
	var replayed, bytes, deadBytes int64
	_, _, err := b.update(0, nil, true, func(tx *bolt.Tx) error {
		replayed, bytes, deadBytes = 0, 0, 0
		seq := b.seq
		pending, dead := tx.Bucket(bucketPending), tx.Bucket(bucketDead)
		for _, k := range deadKeys(dead, ids) {
			stored := dead.Get(k)
			var s storedDeadLetter
			if err := json.Unmarshal(stored, &s); err != nil {
				return fmt.Errorf("dead letter %d: %w", binary.BigEndian.Uint64(k), err)
			}
			e := s.deadLetter().Entry
			seq++
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
		if seq > pending.Sequence() {
			if err := pending.SetSequence(seq); err != nil {
				return err
			}
		}
		// Seqs are spent even when the transaction fails.
		b.seq = seq
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
	_, _, err := b.update(0, nil, false, func(tx *bolt.Tx) error {
		purged, deadBytes = 0, 0
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

// Probe implements Spool, so that a full or read-only disk shows up before
// webhooks are rejected. It commits a small write to the bbolt file, makes
// sure the log has a file that its last write did not fail on, creating one
// when needed, and returns the last checkpoint's error if it failed.
//
// NOTE: a spool at MaxBytes probes fine, so readiness stays true while
// webhooks get 503 for a full spool.
func (b *Bolt) Probe() error {
	_, _, err := b.update(0, nil, false, func(tx *bolt.Tx) error {
		bucket, err := tx.CreateBucketIfNotExists(bucketProbe)
		if err != nil {
			return err
		}
		return bucket.Put(bucketProbe, encodeTime(b.opts.Now()))
	})
	if err != nil {
		return b.writeError("probe", err)
	}

	b.logMu.Lock()
	if b.current != nil && b.current.failed {
		b.retired = append(b.retired, b.current)
		b.current = nil
	}
	if b.current == nil {
		b.current, err = b.nextLog()
	}
	b.logMu.Unlock()
	if err != nil {
		return b.writeError("probe log", err)
	}

	b.mu.Lock()
	err = b.cpErr
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("spool: checkpoint: %w", err)
	}
	return nil
}

// Close implements Spool: it waits for the Appends under way, moves the
// logged entries into the bbolt file and closes it. It is safe to call
// more than once.
func (b *Bolt) Close() error {
	var err error
	b.stopOnce.Do(func() {
		b.stopGoroutines()
		err = b.checkpoint(b.lastLogged())
		b.logMu.Lock()
		b.logClosed = true
		files := append(append(b.retired, b.clean...), b.current)
		b.retired, b.clean, b.current = nil, nil, nil
		b.logMu.Unlock()
		for _, lf := range files {
			if lf == nil {
				continue
			}
			if err == nil {
				// Everything is in the bbolt file, so the log files go.
				err = lf.remove()
			} else {
				lf.f.Close()
			}
		}
		b.values.clear()
		if closeErr := b.db.Close(); !errors.Is(closeErr, bolt.ErrDatabaseNotOpen) {
			err = errors.Join(err, closeErr)
		}
		if err != nil {
			b.log.Error("spool closed with an error", zap.Error(err))
			return
		}
		b.log.Info("spool closed", zap.Int(logfield.Pending, int(b.pending.Load())))
	})
	return err
}

// stopGoroutines rejects further Appends, waits for the writer to finish
// those under way, then stops the maintenance goroutine.
func (b *Bolt) stopGoroutines() {
	b.closeMu.Lock()
	b.closed = true
	close(b.appends)
	b.closeMu.Unlock()
	<-b.writerDone
	close(b.stop)
	<-b.done
}

// maintain checkpoints every checkpointInterval, or sooner on a signal
// from the writer, and deletes expired dedup keys.
func (b *Bolt) maintain() {
	defer close(b.done)
	cp := time.NewTicker(checkpointInterval)
	defer cp.Stop()
	var expire <-chan time.Time
	if b.opts.DedupWindow > 0 {
		t := time.NewTicker(min(time.Minute, max(b.opts.DedupWindow/10, 10*time.Millisecond)))
		defer t.Stop()
		expire = t.C
	}
	for {
		select {
		case <-b.stop:
			return
		case <-cp.C:
		case <-b.checkpointSoon:
		case <-expire:
			b.expireDedup()
			continue
		}
		if err := b.tick(); err != nil {
			b.log.Error("spool checkpoint failed, so the entries stay in the log until one succeeds", zap.Error(err))
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
		err := b.db.Update(func(tx *bolt.Tx) error {
			dedup, byTime := tx.Bucket(bucketDedup), tx.Bucket(bucketDedupTime)
			c := byTime.Cursor()
			n := 0
			for k, _ := c.First(); k != nil && string(k[:8]) < string(cutoff); k, _ = c.First() {
				key := k[8:]
				if v := dedup.Get(key); v != nil && string(v) == string(k[:8]) {
					if err := dedup.Delete(key); err != nil {
						return err
					}
				}
				if err := byTime.Delete(k); err != nil {
					return err
				}
				if n++; n >= expireChunk {
					more = true
					break
				}
			}
			return nil
		})
		if err != nil {
			b.log.Warn("spool failed to delete expired dedup keys; it tries again at the next expiry", zap.Error(err))
			return
		}
	}
}
