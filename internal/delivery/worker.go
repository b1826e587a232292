package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/mapping"
)

// work resolves and maps jobs and hands them to the batcher until intake
// is closed and empty.
func (p *Pool) work() {
	for j := range p.intake {
		if p.ctx.Err() != nil {
			p.abandon([]*Job{j})
			continue
		}
		if !p.prepare(j) {
			continue
		}
		p.records <- j
	}
}

// prepare decodes j's event when needed and freezes its identity and
// Mixpanel record. It returns false when the job was dead-lettered or
// abandoned instead.
func (p *Pool) prepare(j *Job) bool {
	if j.record != nil {
		return true // thawed from the spool, already encoded
	}
	first := time.Now()
	if j.event == nil {
		ev, err := p.cfg.Decode(j.entry)
		if err != nil {
			p.deadLetter([]*Job{j}, DeadLetter{Stage: "decode", Reason: err.Error(), First: first})
			return false
		}
		j.event = ev
	}

	who, attempts, err := p.resolve(j, first)
	if err != nil {
		if p.ctx.Err() != nil {
			p.abandon([]*Job{j})
			return false
		}
		p.deadLetter([]*Job{j}, DeadLetter{
			Stage: "resolve", Reason: err.Error(), logReason: resolverFailure(err),
			Attempts: attempts, First: first,
		})
		return false
	}

	opts := p.cfg.Mapping
	opts.ReceivedAt = j.entry.Received
	opts.InsertID = j.entry.Key // the webhook's dedup key is its $insert_id
	opts.EncodeOnly = true
	rec := mapping.Map(j.event, who, opts)
	// Map encodes the event here, on the parallel workers: the batcher
	// counts the bytes, every attempt sends them, and a durable spool
	// stores them in the sender's one write per batch.
	j.encoded, rec.JSON = rec.JSON, nil
	j.record = &rec
	if p.cfg.Durable && !p.cfg.PureResolver {
		j.frozen = freeze(j.record, j.encoded)
	}

	if rec.TimeMissing {
		p.eventLog.Warn("event has no timestamp, sent with the time of receipt", p.jobFields(j)...)
	}
	if rec.DroppedProperties > 0 {
		p.eventLog.Warn("event has too many properties, extra ones dropped",
			append(p.jobFields(j), zap.Int(logfield.Count, rec.DroppedProperties))...)
	}
	return true
}

// resolve calls the resolver for j's user. ErrNotFound and an empty identity
// both mean an anonymous event. Other errors are retried like a transient
// Mixpanel failure, with the same backoff and budget.
//
// NOTE: the worker waits out the backoff itself, so a resolver that keeps
// failing holds every worker, and new events wait in the spool meanwhile.
func (p *Pool) resolve(j *Job, first time.Time) (identity.Identity, int, error) {
	ids := mapping.Identifiers(j.event)
	for attempt := 1; ; attempt++ {
		start := time.Now()
		who, err := p.callResolver(ids)
		switch {
		case errors.Is(err, identity.ErrNotFound), err == nil && who.UserID == "":
			p.cfg.Observer.Resolve("unknown", time.Since(start))
			return identity.Identity{}, attempt, nil
		case err == nil:
			p.cfg.Observer.Resolve("found", time.Since(start))
			return who, attempt, nil
		}
		p.cfg.Observer.Resolve("error", time.Since(start))
		delay := backoff(attempt, p.cfg.RetryBase, p.cfg.RetryMax)
		if attempt >= p.cfg.MaxAttempts || time.Since(first)+delay > p.cfg.MaxAge || p.ctx.Err() != nil {
			return identity.Identity{}, attempt, err
		}
		// The error's text may quote the identifiers the resolver was
		// given, so the log gets only its kind; the dead letter keeps it.
		p.eventLog.Warn("resolver failed, retrying", append(p.jobFields(j),
			zap.Int(logfield.Attempt, attempt), zap.Duration(logfield.Delay, delay),
			zap.String(logfield.Reason, resolverFailure(err)))...)
		p.retries.Add(1)
		if !p.sleep(delay) {
			return identity.Identity{}, attempt, err
		}
	}
}

// resolverFailure names the kind of a resolver error without its text.
func resolverFailure(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "resolver timed out"
	case errors.Is(err, errResolverPanic):
		return "resolver panicked"
	}
	return "resolver returned an error"
}

var errResolverPanic = errors.New("resolver panicked")

// callResolver runs the resolver with the configured timeout. The call runs
// in its own goroutine, so a resolver that ignores its context costs that
// goroutine until it returns, but never holds the worker or Shutdown past
// the timeout. A panic becomes an error, so a faulty resolver cannot stop
// the pool.
func (p *Pool) callResolver(ids identity.Identifiers) (identity.Identity, error) {
	if p.cfg.PureResolver {
		return p.cfg.Resolver.Resolve(p.ctx, ids)
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ResolverTimeout)
	defer cancel()

	type result struct {
		who identity.Identity
		err error
	}
	done := make(chan result, 1) // buffered: a late result must not block the goroutine
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("%w: %v", errResolverPanic, r)}
			}
		}()
		who, err := p.cfg.Resolver.Resolve(ctx, ids)
		done <- result{who, err}
	}()

	select {
	case r := <-done:
		return r.who, r.err
	case <-ctx.Done():
		return identity.Identity{}, fmt.Errorf("resolver did not return within %v: %w", p.cfg.ResolverTimeout, ctx.Err())
	}
}

// jobFields returns the log fields that identify j without personal data.
func (p *Pool) jobFields(j *Job) []zap.Field {
	return []zap.Field{
		zap.String(logfield.EventID, j.eventID()),
		zap.String(logfield.EventName, j.eventName()),
	}
}
