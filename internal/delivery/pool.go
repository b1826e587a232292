// Package delivery is the bridge's bounded worker pool: it resolves each
// accepted event's identity, maps it, batches records and sends them to
// Mixpanel with retries, and dead-letters what it cannot deliver.
//
// Events flow through three stages connected by channels:
//
//	intake (bounded queue) -> workers (resolve, map) -> batcher -> senders
//
// Every goroutine is owned by the Pool and ends in Shutdown.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/mapping"
	"github.com/branchmp/branchmp/internal/mpclient"
)

// Errors returned by TryEnqueue.
var (
	ErrQueueFull = errors.New("delivery: queue is full")
	ErrClosed    = errors.New("delivery: pool is shut down")
)

// Config configures a Pool. Every field must be set: the public package
// applies the defaults.
type Config struct {
	Client          *mpclient.Client
	Resolver        identity.Resolver
	ResolverTimeout time.Duration
	EventName       mapping.EventNamer
	Logger          *zap.Logger

	Workers       int           // resolving and sending goroutines, each
	QueueCapacity int           // accepted events waiting for a worker
	BatchSize     int           // max events in one /import request
	BatchBytes    int           // max uncompressed JSON bytes in one request
	FlushInterval time.Duration // max wait before a partial batch is sent

	MaxAttempts    int           // sends of one batch before dead-lettering
	MaxAge         time.Duration // time since the first send before dead-lettering
	RetryBase      time.Duration // first backoff window
	RetryMax       time.Duration // backoff cap
	MaxDeadLetters int           // dead letters kept in memory
}

// resolverAttempts is how often a worker calls a failing resolver before it
// dead-letters the event.
const resolverAttempts = 3

// Stats are the pool's counters since it started.
type Stats struct {
	Accepted     int64 // events enqueued
	Delivered    int64 // events Mixpanel imported
	DeadLettered int64 // events and profile updates given up on
	Retries      int64 // resends after a failed attempt
	QueueFull    int64 // events rejected because the queue was full
	Queued       int   // events waiting in the intake queue now
}

// Pool delivers jobs to Mixpanel. It is safe for concurrent use.
type Pool struct {
	cfg Config
	log *zap.Logger

	// mu guards closed and the close of intake, so TryEnqueue never sends
	// on a closed channel. TryEnqueue holds it shared, Shutdown exclusive.
	mu     sync.RWMutex
	closed bool
	intake chan *Job

	// records carries mapped jobs to the batcher, batches carries full
	// batches to the senders. Both are unbuffered: the intake queue is
	// the only place where events wait, so its capacity bounds memory.
	records chan *Job
	batches chan []*Job
	done    chan struct{}

	ctx    context.Context // canceled when Shutdown's deadline passes
	cancel context.CancelFunc
	gate   gate

	accepted, delivered, deadLettered, retries, queueFull atomic.Int64
	abandoned                                             atomic.Int64

	dlMu        sync.Mutex
	deadLetters []DeadLetter

	authLogMu    sync.Mutex
	authLoggedAt time.Time
}

// Start starts the pool's goroutines.
func Start(cfg Config) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		cfg:     cfg,
		log:     cfg.Logger,
		intake:  make(chan *Job, cfg.QueueCapacity),
		records: make(chan *Job),
		batches: make(chan []*Job),
		done:    make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
	}

	var workers, senders sync.WaitGroup
	for range cfg.Workers {
		workers.Go(p.work)
		senders.Go(p.send)
	}
	go p.batch()
	go func() {
		workers.Wait()
		close(p.records)
		senders.Wait()
		close(p.done)
	}()

	p.log.Info("delivery started",
		zap.Int(logfield.Workers, cfg.Workers), zap.Int(logfield.Queue, cfg.QueueCapacity))
	return p
}

// TryEnqueue queues j without blocking. It returns ErrQueueFull when the
// queue is full and ErrClosed after Shutdown.
func (p *Pool) TryEnqueue(j *Job) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.intake <- j:
		p.accepted.Add(1)
		return nil
	default:
		p.queueFull.Add(1)
		return ErrQueueFull
	}
}

// Shutdown stops intake and waits until every queued and in-flight event
// is delivered or dead-lettered. When ctx ends first, it cancels in-flight
// requests and retries, dead-letters the remaining events with stage
// "shutdown", and returns an error with their count. It is safe to call
// more than once.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.intake)
		p.log.Info("delivery stopping", zap.Int(logfield.Count, len(p.intake)))
	}
	p.mu.Unlock()

	select {
	case <-p.done:
		p.cancel()
		p.log.Info("delivery stopped")
		return nil
	case <-ctx.Done():
	}

	p.cancel()
	<-p.done
	lost := p.abandoned.Load()
	if lost == 0 {
		return nil
	}
	p.log.Error("delivery stopped before every event was sent",
		zap.Int64(logfield.Count, lost), zap.Error(ctx.Err()))
	return fmt.Errorf("delivery: shutdown: %d events not delivered: %w", lost, ctx.Err())
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats {
	return Stats{
		Accepted:     p.accepted.Load(),
		Delivered:    p.delivered.Load(),
		DeadLettered: p.deadLettered.Load(),
		Retries:      p.retries.Load(),
		QueueFull:    p.queueFull.Load(),
		Queued:       len(p.intake),
	}
}

// DeadLetters returns a copy of the dead letters kept in memory, oldest
// first.
func (p *Pool) DeadLetters() []DeadLetter {
	p.dlMu.Lock()
	defer p.dlMu.Unlock()
	return append([]DeadLetter(nil), p.deadLetters...)
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
