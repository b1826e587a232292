package spool

import (
	"slices"
	"sync"
	"time"
)

// Memory is a Spool in process memory. Everything in it is lost when the
// process exits. The zero value is not usable; call NewMemory.
type Memory struct {
	mu       sync.Mutex
	closed   bool
	capacity int
	next     uint64
	pending  map[uint64]*Entry
	order    []uint64 // Seqs in append order; may still list removed ones
	bytes    int64
	dedup    *dedupIndex
	dead     []DeadLetter
	maxDead  int
	now      func() time.Time
}

// MemoryOptions configure a Memory spool.
type MemoryOptions struct {
	Capacity       int           // max pending entries
	MaxDeadLetters int           // dead letters kept; older ones are discarded
	DedupWindow    time.Duration // 0 disables deduplication
	DedupKeys      int           // max keys remembered for deduplication
	Now            func() time.Time
}

// NewMemory returns an empty Memory spool.
func NewMemory(opts MemoryOptions) *Memory {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Memory{
		capacity: opts.Capacity,
		pending:  make(map[uint64]*Entry),
		dedup:    newDedupIndex(opts.DedupWindow, opts.DedupKeys),
		maxDead:  opts.MaxDeadLetters,
		now:      now,
	}
}

// Append implements Spool.
func (m *Memory) Append(e *Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	now := m.now()
	if m.dedup.seen(e.Key, now) {
		return ErrDuplicate
	}
	if len(m.pending) >= m.capacity {
		return ErrFull
	}
	m.dedup.add(e.Key, now)
	m.appendLocked(e)
	return nil
}

func (m *Memory) appendLocked(e *Entry) {
	m.next++
	e.Seq = m.next
	m.pending[e.Seq] = e
	m.order = append(m.order, e.Seq)
	m.bytes += e.size()
}

// Load implements Spool.
func (m *Memory) Load(after uint64, max int) ([]*Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	i, _ := slices.BinarySearch(m.order, after+1)
	var out []*Entry
	for ; i < len(m.order) && len(out) < max; i++ {
		if e, ok := m.pending[m.order[i]]; ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// Freeze implements Spool.
func (m *Memory) Freeze(seq uint64, record []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.pending[seq]; ok {
		m.bytes += int64(len(record) - len(e.Record))
		e.Record = record
	}
	return nil
}

// Done implements Spool.
func (m *Memory) Done(seqs ...uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, seq := range seqs {
		m.removeLocked(seq)
	}
	return nil
}

func (m *Memory) removeLocked(seq uint64) {
	e, ok := m.pending[seq]
	if !ok {
		return
	}
	delete(m.pending, seq)
	m.bytes -= e.size()
	// Compact the order list once most of it is removed entries.
	if len(m.order) > 1024 && len(m.order) > 2*len(m.pending) {
		kept := m.order[:0]
		for _, s := range m.order {
			if _, ok := m.pending[s]; ok {
				kept = append(kept, s)
			}
		}
		m.order = kept
	}
}

// DeadLetter implements Spool. When more than MaxDeadLetters are kept, the
// oldest are discarded.
func (m *Memory) DeadLetter(dls ...DeadLetter) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, dl := range dls {
		m.removeLocked(dl.Entry.Seq)
		dl.Entry.Value = nil
		m.dead = append(m.dead, dl)
	}
	if over := len(m.dead) - m.maxDead; over > 0 {
		m.dead = append(m.dead[:0:0], m.dead[over:]...)
	}
	return nil
}

// DeadLetters implements Spool.
func (m *Memory) DeadLetters(max int) ([]DeadLetter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := min(max, len(m.dead))
	return slices.Clone(m.dead[:n]), nil
}

// Replay implements Spool.
func (m *Memory) Replay(seqs ...uint64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	var kept []DeadLetter
	replayed := 0
	for _, dl := range m.dead {
		if len(seqs) > 0 && !slices.Contains(seqs, dl.Entry.Seq) {
			kept = append(kept, dl)
			continue
		}
		e := dl.Entry
		m.appendLocked(&e)
		replayed++
	}
	m.dead = kept
	return replayed, nil
}

// Purge implements Spool.
func (m *Memory) Purge(seqs ...uint64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	before := len(m.dead)
	if len(seqs) == 0 {
		m.dead = nil
		return before, nil
	}
	m.dead = slices.DeleteFunc(m.dead, func(dl DeadLetter) bool {
		return slices.Contains(seqs, dl.Entry.Seq)
	})
	return before - len(m.dead), nil
}

// Stats implements Spool.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Pending: len(m.pending), Bytes: m.bytes, DeadLetters: len(m.dead)}
}

// Close implements Spool. A closed Memory spool rejects Append and Load.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// dedupIndex remembers recent keys for a time window, up to a maximum
// count; when full, the oldest key is forgotten first. It is not safe for
// concurrent use.
type dedupIndex struct {
	window time.Duration
	max    int
	at     map[string]time.Time
	fifo   []dedupKey // keys in insertion order, live from head on
	head   int
}

type dedupKey struct {
	key string
	at  time.Time
}

func newDedupIndex(window time.Duration, max int) *dedupIndex {
	return &dedupIndex{window: window, max: max, at: make(map[string]time.Time)}
}

func (d *dedupIndex) seen(key string, now time.Time) bool {
	if d.window <= 0 || key == "" {
		return false
	}
	at, ok := d.at[key]
	return ok && now.Sub(at) < d.window
}

func (d *dedupIndex) add(key string, now time.Time) {
	if d.window <= 0 || key == "" {
		return
	}
	d.at[key] = now
	d.fifo = append(d.fifo, dedupKey{key, now})
	for d.head < len(d.fifo) {
		k := d.fifo[d.head]
		if now.Sub(k.at) < d.window && len(d.fifo)-d.head <= d.max {
			break
		}
		if d.at[k.key].Equal(k.at) {
			delete(d.at, k.key)
		}
		d.fifo[d.head] = dedupKey{}
		d.head++
	}
	if d.head > 1024 && d.head > len(d.fifo)/2 {
		d.fifo = append(d.fifo[:0:0], d.fifo[d.head:]...)
		d.head = 0
	}
}
