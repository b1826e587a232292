// Package delivery is the bridge's bounded worker pool: it resolves each
// accepted event's identity, maps it, batches records and sends them to
// Mixpanel with retries, and dead-letters what it cannot deliver.
//
// Every accepted event is first stored in a spool. From there it flows
// through goroutines connected by channels:
//
//	spool -> feeder -> workers (resolve, map) -> batcher -> senders
//
// An event leaves the spool only when Mixpanel confirmed it or it was
// dead-lettered. Every goroutine is owned by the Pool and ends in Shutdown.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/mapping"
	"github.com/branchmp/branchmp/internal/metrics"
	"github.com/branchmp/branchmp/internal/mpclient"
	"github.com/branchmp/branchmp/internal/spool"
)

// Errors returned by Accept and Ready.
var (
	ErrClosed       = errors.New("delivery: pool is shut down")
	ErrUnauthorized = errors.New("delivery: Mixpanel rejected the credentials or redirected the request: check the token, secret, project, residency and proxy")
)

// Config configures a Pool. Every field must be set: the public package
// applies the defaults.
type Config struct {
	Client          *mpclient.Client
	Resolver        identity.Resolver
	ResolverTimeout time.Duration

	// PureResolver declares that Resolver returns at once, never panics
	// and returns the same identity for the same event. The workers then
	// call it without the timeout and panic guard, which cost a goroutine
	// and a timer per event, and a durable spool does not freeze records,
	// because mapping the event again after a restart gives the same one.
	PureResolver bool
	Logger       *zap.Logger

	// Observer receives batch sizes and request and resolver durations.
	// Nil records nothing.
	Observer metrics.Observer

	// Mapping holds the event naming and privacy settings. Its ReceivedAt
	// is ignored: each event uses the time it was accepted.
	Mapping mapping.Options

	// Spool stores accepted events until they are delivered. Durable
	// reports whether it survives a restart: then Shutdown leaves
	// undelivered events in it instead of dead-lettering them.
	Spool   spool.Spool
	Durable bool

	// Decode decodes an entry's payload when the entry has no decoded
	// event, as after a restart.
	Decode func(*spool.Entry) (*branch.Event, error)

	// InflightBytes bounds the estimated memory of the events loaded from
	// the spool and not yet delivered: their bodies, decoded forms and
	// records. One event larger than it still goes through on its own.
	InflightBytes int64

	Workers       int           // resolving and sending goroutines, each
	BatchSize     int           // max events in one /import request
	BatchBytes    int           // max uncompressed JSON bytes in one request
	FlushInterval time.Duration // max wait before a partial batch is sent

	MaxAttempts int           // tries of one event or batch before dead-lettering
	MaxAge      time.Duration // time since the first try before dead-lettering
	RetryBase   time.Duration // first backoff window
	RetryMax    time.Duration // backoff cap
}

// feedChunk is how many spooled entries the feeder loads at once. It is
// also the intake channel's capacity, so at most this many loaded entries
// wait for a worker.
const feedChunk = 256

// Stats are the pool's counters since it started.
type Stats struct {
	Accepted     int64 // events stored in the spool
	Deduplicated int64 // events recognised as redeliveries and skipped
	Delivered    int64 // events Mixpanel imported
	DeadLettered int64 // events and profile updates given up on
	Retries      int64 // resends after a failed attempt
	Pending      int   // events in the spool, not yet delivered
	SpoolBytes   int64 // estimated size of the pending events
	DeadLetters  int   // dead letters kept in the spool
}

// Pool delivers spooled events to Mixpanel. It is safe for concurrent use.
type Pool struct {
	cfg Config
	log *zap.Logger

	// eventLog is sampled, for lines that every event can repeat.
	eventLog *zap.Logger

	// mu makes closing atomic with respect to Accept. Once Shutdown holds
	// it and sets closed, no Append is in progress or can start, so the
	// feeder's final drain loads every accepted event.
	mu      sync.RWMutex
	closed  bool
	closing chan struct{} // closed by Shutdown
	notify  chan struct{} // wakes the feeder; capacity 1 so a signal is never lost
	flush   chan struct{} // requests an immediate send from the batcher; capacity 1, as notify

	intake  chan *Job
	records chan *Job
	batches chan []*Job
	done    chan struct{}

	ctx      context.Context // canceled when Shutdown's deadline passes
	cancel   context.CancelFunc
	gate     gate
	inflight *semaphore.Weighted // InflightBytes, taken by the feeder, given back as jobs leave

	unauthorized atomic.Bool

	// undone holds the Seqs of delivered events whose removal from the
	// spool failed, for the next removal to include.
	undoneMu sync.Mutex
	undone   []uint64

	accepted, deduplicated, delivered, deadLettered, retries atomic.Int64
	abandoned                                                atomic.Int64

	authLogMu    sync.Mutex
	authLoggedAt time.Time
	shutdownOnce sync.Once
	finishOnce   sync.Once
	shutdownErr  error
}

// Start starts the pool's goroutines. Events already in the spool, left by
// an earlier run, are delivered first.
func Start(cfg Config) *Pool {
	if cfg.Observer == nil {
		cfg.Observer = metrics.Nop{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		cfg:      cfg,
		log:      cfg.Logger,
		eventLog: logfield.Sampled(cfg.Logger),
		closing:  make(chan struct{}),
		notify:   make(chan struct{}, 1),
		flush:    make(chan struct{}, 1),
		intake:   make(chan *Job, feedChunk),
		records:  make(chan *Job),
		batches:  make(chan []*Job),
		done:     make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		inflight: semaphore.NewWeighted(max(cfg.InflightBytes, 1)),
	}

	var workers, senders sync.WaitGroup
	for range cfg.Workers {
		workers.Go(p.work)
		senders.Go(p.send)
	}
	go p.feed()
	go p.batch()
	go func() {
		workers.Wait()
		close(p.records)
		senders.Wait()
		close(p.done)
	}()

	st := cfg.Spool.Stats()
	p.log.Info("delivery started",
		zap.Int(logfield.Workers, cfg.Workers),
		zap.Int(logfield.Pending, st.Pending),
		zap.Int(logfield.DeadLetters, st.DeadLetters))
	return p
}

// Accept stores e in the spool and wakes the feeder. It never waits for a
// worker. It returns spool.ErrDuplicate for a redelivery within the dedup
// window, spool.ErrFull when the spool is at its limit, ErrClosed after
// Shutdown, or the spool's write error.
func (p *Pool) Accept(e *spool.Entry) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	err := p.cfg.Spool.Append(e)
	switch {
	case errors.Is(err, spool.ErrDuplicate):
		p.deduplicated.Add(1)
		return err
	case errors.Is(err, spool.ErrFull):
		// Events waiting for a partial batch hold room in the spool; send
		// them now instead of after the flush interval.
		select {
		case p.flush <- struct{}{}:
		default:
		}
		return err
	case err != nil:
		return err
	}
	p.accepted.Add(1)
	p.wake()
	return nil
}

func (p *Pool) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Replay moves dead letters back into the spool with their frozen Mixpanel
// records, so a replay sends the same dedup tuple, and wakes the feeder. No
// seqs means every dead letter. It returns how many it replayed.
func (p *Pool) Replay(seqs ...uint64) (int, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return 0, ErrClosed
	}
	n, err := p.cfg.Spool.Replay(seqs...)
	if n > 0 {
		p.log.Info("dead letters replayed", zap.Int(logfield.Count, n))
		p.wake()
	}
	return n, err
}

// Ready returns ErrUnauthorized while Mixpanel rejects the credentials,
// ErrClosed after Shutdown, and nil otherwise.
func (p *Pool) Ready() error {
	p.mu.RLock()
	closed := p.closed
	p.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if p.unauthorized.Load() {
		return ErrUnauthorized
	}
	return nil
}

// Shutdown stops intake and waits until the spool is empty, each event
// delivered or dead-lettered. When ctx ends first, it cancels in-flight
// requests and retries and waits for the workers to stop. The events not
// yet delivered then stay in a durable spool for the next start, or are
// dead-lettered in a memory spool, and the returned error gives their
// count. Shutdown is safe to call more than once; later calls wait for the
// first to finish and return its result.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.shutdownOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		close(p.closing)
		p.mu.Unlock()
		p.log.Info("delivery stopping", zap.Int(logfield.Pending, p.cfg.Spool.Stats().Pending))
	})

	select {
	case <-p.done:
	case <-ctx.Done():
		p.cancel()
		<-p.done
	}
	p.cancel()
	p.finishOnce.Do(func() { p.shutdownErr = p.finish(ctx.Err()) })
	return p.shutdownErr
}

// finish accounts for the events the stopped pool did not deliver.
func (p *Pool) finish(ctxErr error) error {
	if ctxErr == nil {
		ctxErr = errors.New("events left after the workers stopped")
	}
	if p.cfg.Durable {
		left := p.cfg.Spool.Stats().Pending
		if left == 0 {
			p.log.Info("delivery stopped")
			return nil
		}
		p.log.Warn("delivery stopped with events left in the spool for the next start",
			zap.Int(logfield.Count, left))
		return fmt.Errorf("delivery: shutdown: %d events left in the spool: %w", left, ctxErr)
	}

	// A memory spool dies with the process: dead-letter what is left, so
	// DeadLetters shows it until then.
	var cursor uint64
	for {
		entries, err := p.cfg.Spool.Load(cursor, 1024)
		if err != nil || len(entries) == 0 {
			break
		}
		batch := make([]*Job, len(entries))
		for i, e := range entries {
			batch[i] = &Job{entry: e}
		}
		cursor = entries[len(entries)-1].Seq
		p.abandon(batch)
	}
	lost := p.abandoned.Load()
	if lost == 0 {
		p.log.Info("delivery stopped")
		return nil
	}
	p.log.Error("delivery stopped before every event was sent; they are dead-lettered in memory",
		zap.Int64(logfield.Count, lost))
	return fmt.Errorf("delivery: shutdown: %d events not delivered: %w", lost, ctxErr)
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats {
	st := p.cfg.Spool.Stats()
	return Stats{
		Accepted:     p.accepted.Load(),
		Deduplicated: p.deduplicated.Load(),
		Delivered:    p.delivered.Load(),
		DeadLettered: p.deadLettered.Load(),
		Retries:      p.retries.Load(),
		Pending:      st.Pending,
		SpoolBytes:   st.Bytes,
		DeadLetters:  st.DeadLetters,
	}
}

// sleep waits for d and reports whether the pool is still running.
func (p *Pool) sleep(d time.Duration) bool {
	if d <= 0 {
		return p.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.ctx.Done():
		return false
	}
}
