package delivery

import (
	"context"
	"encoding/json"
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
		return p.measure(j)
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
			Stage: "resolve", Reason: err.Error(), Attempts: attempts, First: first,
		})
		return false
	}

	opts := p.cfg.Mapping
	opts.ReceivedAt = j.entry.Received
	rec := mapping.Map(j.event, who, opts)
	j.record = &rec
	if !p.measure(j) {
		return false
	}
	if p.cfg.Durable {
		p.freeze(j)
	}

	if rec.TimeMissing {
		p.log.Warn("event has no timestamp, sent with the time of receipt", p.jobFields(j)...)
	}
	if rec.DroppedProperties > 0 {
		p.log.Warn("event has too many properties, extra ones dropped",
			append(p.jobFields(j), zap.Int(logfield.Count, rec.DroppedProperties))...)
	}
	return true
}

// measure sets j.size from the record's event JSON.
func (p *Pool) measure(j *Job) bool {
	data, err := json.Marshal(j.record.Event)
	if err != nil {
		p.deadLetter([]*Job{j}, DeadLetter{Stage: "map", Reason: err.Error(), First: time.Now()})
		return false
	}
	j.size = len(data)
	return true
}

// freeze stores j's record in the spool, so that after a restart a retry
// sends the same identity, time and $insert_id even if the resolver would
// now return another user. A failed write is logged and delivery goes on:
// the event is still in the spool and is mapped again after a restart.
func (p *Pool) freeze(j *Job) {
	data, err := json.Marshal(j.record)
	if err == nil {
		err = p.cfg.Spool.Freeze(j.entry.Seq, data)
	}
	if err != nil {
		p.log.Error("freezing the mapped event failed", append(p.jobFields(j), zap.Error(err))...)
		return
	}
	j.entry.Record = data
}

// resolve asks the resolver for j's user. ErrNotFound and an empty identity
// both mean an anonymous event. Other errors are retried like a transient
// Mixpanel failure, with the same backoff and budget.
//
// NOTE: the worker waits out the backoff itself, so a resolver that keeps
// failing holds every worker, and new events wait in the spool meanwhile.
func (p *Pool) resolve(j *Job, first time.Time) (identity.Identity, int, error) {
	ids := mapping.Identifiers(j.event)
	for attempt := 1; ; attempt++ {
		who, err := p.callResolver(ids)
		if errors.Is(err, identity.ErrNotFound) {
			return identity.Identity{}, attempt, nil
		}
		if err == nil {
			return who, attempt, nil
		}
		delay := backoff(attempt, p.cfg.RetryBase, p.cfg.RetryMax)
		if attempt >= p.cfg.MaxAttempts || time.Since(first)+delay > p.cfg.MaxAge || p.ctx.Err() != nil {
			return identity.Identity{}, attempt, err
		}
		p.log.Warn("resolver failed, retrying", append(p.jobFields(j),
			zap.Int(logfield.Attempt, attempt), zap.Duration(logfield.Delay, delay), zap.Error(err))...)
		p.retries.Add(1)
		if !p.sleep(delay) {
			return identity.Identity{}, attempt, err
		}
	}
}

// callResolver runs the resolver with the configured timeout and turns a
// panic into an error, so a faulty resolver cannot stop the worker.
func (p *Pool) callResolver(ids identity.Identifiers) (who identity.Identity, err error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ResolverTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("resolver panicked: %v", r)
		}
	}()
	return p.cfg.Resolver.Resolve(ctx, ids)
}

// jobFields returns the log fields that identify j without personal data.
func (p *Pool) jobFields(j *Job) []zap.Field {
	return []zap.Field{
		zap.String(logfield.EventID, j.eventID()),
		zap.String(logfield.EventName, j.eventName()),
	}
}
