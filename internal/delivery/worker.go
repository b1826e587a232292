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

// work resolves and maps queued jobs and hands them to the batcher until
// the intake queue is closed and empty.
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

// prepare freezes j's identity and Mixpanel record. It returns false when
// the job was dead-lettered instead.
func (p *Pool) prepare(j *Job) bool {
	if j.record != nil {
		return true
	}
	first := time.Now()
	who, attempts, err := p.resolve(j)
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

	rec := mapping.Map(j.Event, who, mapping.Options{
		EventName:  p.cfg.EventName,
		ReceivedAt: j.ReceivedAt,
	})
	data, err := json.Marshal(rec.Event)
	if err != nil {
		p.deadLetter([]*Job{j}, DeadLetter{
			Stage: "map", Reason: err.Error(), Attempts: attempts, First: first,
		})
		return false
	}
	j.record = &rec
	j.size = len(data)

	if rec.TimeMissing {
		p.log.Warn("event has no timestamp, sent with the time of receipt", p.jobFields(j)...)
	}
	if rec.DroppedProperties > 0 {
		p.log.Warn("event has too many properties, extra ones dropped",
			append(p.jobFields(j), zap.Int(logfield.Count, rec.DroppedProperties))...)
	}
	return true
}

// resolve calls the resolver for j's user, retrying errors with a short
// backoff. ErrNotFound and an empty identity both mean an anonymous event.
//
// TODO: a resolver that keeps failing blocks this worker for up to three
// timeouts; failed events should go back to the queue instead.
func (p *Pool) resolve(j *Job) (identity.Identity, int, error) {
	ids := mapping.Identifiers(j.Event)
	for attempt := 1; ; attempt++ {
		who, err := p.callResolver(ids)
		if errors.Is(err, identity.ErrNotFound) {
			return identity.Identity{}, attempt, nil
		}
		if err == nil {
			return who, attempt, nil
		}
		if attempt >= resolverAttempts || p.ctx.Err() != nil {
			return identity.Identity{}, attempt, err
		}
		delay := backoff(attempt, 100*time.Millisecond, 2*time.Second)
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
	id := j.Event.ID
	if id == "" && j.record != nil {
		id, _ = j.record.Event.Properties["$insert_id"].(string)
	}
	return []zap.Field{
		zap.String(logfield.EventID, id),
		zap.String(logfield.EventName, j.Event.Name),
	}
}
