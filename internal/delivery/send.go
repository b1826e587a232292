package delivery

import (
	"context"
	"maps"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/mapping"
	"github.com/branchmp/branchmp/internal/mpclient"
)

// maxProfilesPerRequest is Mixpanel's limit on updates in one /engage
// request.
const maxProfilesPerRequest = 2000

// authLogInterval bounds how often a rejected token or secret is logged
// while the senders keep retrying.
const authLogInterval = time.Minute

// send delivers batches until the batcher closes the channel.
func (p *Pool) send() {
	for jobs := range p.batches {
		if p.ctx.Err() != nil {
			p.abandon(jobs)
			continue
		}
		p.freeze(jobs)
		imported := p.importJobs(jobs)
		p.sendProfiles(imported)
		p.complete(imported)
	}
}

// freeze stores the records of newly mapped jobs in the spool in one write
// before their first send. After a restart, a retry then sends the same
// identity, time and $insert_id, even if the resolver would now return
// another user. A failed write is logged and delivery goes on, because the
// events stay in the spool and are mapped again after a restart.
func (p *Pool) freeze(jobs []*Job) {
	records := make(map[uint64][]byte)
	for _, j := range jobs {
		if j.frozen != nil {
			records[j.entry.Seq] = j.frozen
		}
	}
	if len(records) == 0 {
		return
	}
	if err := p.cfg.Spool.Freeze(records); err != nil {
		p.log.Error("storing mapped events in the spool failed",
			zap.Int(logfield.Count, len(records)), zap.Error(err))
		return
	}
	for _, j := range jobs {
		if j.frozen != nil {
			j.entry.Record, j.frozen = j.frozen, nil
		}
	}
}

// importJobs sends jobs to /import until each is imported or dead-lettered,
// and returns the imported ones.
func (p *Pool) importJobs(jobs []*Job) []*Job {
	first := time.Now()
	for attempt := 1; ; attempt++ {
		if !p.waitGate() {
			p.abandon(jobs)
			return nil
		}
		p.cfg.Observer.BatchSize(len(jobs))
		start := time.Now()
		res := p.cfg.Client.Import(p.ctx, events(jobs))
		p.cfg.Observer.MixpanelRequest("import", res.Status, time.Since(start))

		switch res.Outcome {
		case mpclient.OK:
			p.unauthorized.Store(false)
			p.delivered.Add(int64(len(jobs)))
			return jobs

		case mpclient.Partial:
			return p.splitFailed(jobs, res, attempt, first)

		case mpclient.Rejected:
			p.deadLetter(jobs, failure("import", "rejected by Mixpanel", res, attempt, first))
			return nil

		case mpclient.TooLarge:
			if len(jobs) == 1 {
				p.deadLetter(jobs, failure("import", "event too large for Mixpanel", res, attempt, first))
				return nil
			}
			half := len(jobs) / 2
			p.log.Warn("batch too large, splitting", zap.Int(logfield.BatchSize, len(jobs)))
			left := p.importJobs(jobs[:half])
			return append(left, p.importJobs(jobs[half:])...)
		}

		if p.ctx.Err() != nil {
			p.abandon(jobs)
			return nil
		}
		delay, ok := p.retryDelay("import", len(jobs), res, attempt, first)
		if !ok {
			p.deadLetter(jobs, failure("import", "retry budget spent", res, attempt, first))
			return nil
		}
		if !p.sleep(delay) {
			p.abandon(jobs)
			return nil
		}
	}
}

// splitFailed dead-letters the records a strict-mode 400 names and returns
// the others, which Mixpanel imported and which must not be sent again. A
// failed record is matched by its $insert_id, else by its index. When any
// failed record matches no job, the response does not say which records
// were imported, so the whole batch is dead-lettered. A replay is safe,
// because Mixpanel drops the copies of those that were imported.
func (p *Pool) splitFailed(jobs []*Job, res mpclient.Result, attempt int, first time.Time) []*Job {
	// Each event's $insert_id is its entry's dedup key.
	byInsertID := make(map[string]int, len(jobs))
	for i, j := range jobs {
		if j.entry.Key != "" {
			byInsertID[j.entry.Key] = i
		}
	}
	failed := make(map[int]mpclient.FailedRecord, len(res.Failed))
	for _, f := range res.Failed {
		i, ok := byInsertID[f.InsertID]
		if !ok {
			i = f.Index
		}
		if i < 0 || i >= len(jobs) {
			p.deadLetter(jobs, failure("import", "failed records do not match the batch", res, attempt, first))
			return nil
		}
		failed[i] = f
	}

	imported := make([]*Job, 0, len(jobs)-len(failed))
	for i, j := range jobs {
		f, ok := failed[i]
		if !ok {
			imported = append(imported, j)
			continue
		}
		reason := "invalid field " + f.Field + ": " + f.Message
		p.deadLetter([]*Job{j}, failure("import", reason, res, attempt, first))
	}
	p.delivered.Add(int64(len(imported)))
	return imported
}

// retryDelay logs a failed attempt and returns the wait before the next
// one. ok is false when the retry budget is spent. A rejected token or
// secret is retried without limit, because every event is kept until an
// operator fixes the configuration.
func (p *Pool) retryDelay(stage string, n int, res mpclient.Result, attempt int, first time.Time) (time.Duration, bool) {
	// Mixpanel's Retry-After gives the wait. Without it, the exponential
	// backoff estimates one.
	delay := backoff(attempt, p.cfg.RetryBase, p.cfg.RetryMax)
	if res.RetryAfter > 0 {
		delay = res.RetryAfter
	}
	fields := []zap.Field{
		zap.String(logfield.Stage, stage),
		zap.Int(logfield.BatchSize, n),
		zap.String(logfield.Outcome, res.Outcome.String()),
		zap.Int(logfield.Status, res.Status),
		zap.Int(logfield.Attempt, attempt),
		zap.Duration(logfield.Delay, delay),
		zap.Error(res.Err),
	}

	if res.Outcome == mpclient.Unauthorized {
		p.unauthorized.Store(true)
		if p.shouldLogAuth() {
			msg := "mixpanel rejected the credentials; events are kept and retried"
			if res.Status >= 300 && res.Status < 400 {
				msg = "mixpanel request redirected: check the endpoint and any proxy; events are kept and retried"
			}
			p.log.Error(msg, fields...)
		}
		p.retries.Add(int64(n))
		return delay, true
	}

	if res.Status == http.StatusTooManyRequests {
		// Every sender waits, even when this batch is given up on below.
		p.gate.delay(time.Now(), delay)
	}
	// The budget counts time already spent, not the coming wait, so a
	// long Retry-After is waited out once before the budget is checked.
	if attempt >= p.cfg.MaxAttempts || time.Since(first) > p.cfg.MaxAge {
		return 0, false
	}
	p.log.Warn("mixpanel request failed, retrying", fields...)
	p.retries.Add(int64(n))
	return delay, true
}

func (p *Pool) shouldLogAuth() bool {
	p.authLogMu.Lock()
	defer p.authLogMu.Unlock()
	now := time.Now()
	if now.Sub(p.authLoggedAt) < authLogInterval {
		return false
	}
	p.authLoggedAt = now
	return true
}

// waitGate waits while a rate limit holds every sender back. It reports
// whether the pool is still running.
func (p *Pool) waitGate() bool {
	for {
		d := p.gate.wait(time.Now())
		if d <= 0 {
			return p.ctx.Err() == nil
		}
		if !p.sleep(d) {
			return false
		}
	}
}

// sendProfiles sends the $set_once and $set updates of imported jobs.
// Profile updates that fail for good are dead-lettered; their events stay
// imported.
func (p *Pool) sendProfiles(jobs []*Job) {
	once := mergeProfiles(jobs, func(r *mapping.Record) map[string]any { return r.SetOnce }, false)
	set := mergeProfiles(jobs, func(r *mapping.Record) map[string]any { return r.Set }, true)
	// The two operations touch different properties, so they may run at
	// once; that halves the round trips a batch waits for.
	var wg sync.WaitGroup
	wg.Go(func() { p.engage("set_once", once, p.cfg.Client.PeopleSetOnce) })
	p.engage("set", set, p.cfg.Client.PeopleSet)
	wg.Wait()
}

// profileUpdate is one user's merged profile update and the jobs it
// carries, which are dead-lettered together when it fails.
type profileUpdate struct {
	profile mpclient.Profile
	jobs    []*Job
}

// mergeProfiles merges the profile updates of jobs into one per user, in
// the order of each user's first job, so a user with several events in a
// batch costs one update. The merge gives what applying the updates in
// event order would: for $set_once the first value of each property and
// the first IP address, for $set (last is true) the last value and the
// last IP address.
func mergeProfiles(jobs []*Job, props func(*mapping.Record) map[string]any, last bool) []profileUpdate {
	var updates []profileUpdate
	byUser := make(map[string]int)
	for _, j := range jobs {
		values := props(j.record)
		if values == nil {
			continue
		}
		id := j.record.DistinctID
		i, seen := byUser[id]
		if !seen {
			byUser[id] = len(updates)
			updates = append(updates, profileUpdate{
				profile: mpclient.Profile{DistinctID: id, Properties: values, IP: j.record.IP},
				jobs:    []*Job{j},
			})
			continue
		}
		u := &updates[i]
		if len(u.jobs) == 1 {
			// Copied before the first merge: the map belongs to the record.
			u.profile.Properties = maps.Clone(u.profile.Properties)
		}
		u.jobs = append(u.jobs, j)
		for k, v := range values {
			if _, exists := u.profile.Properties[k]; !exists || last {
				u.profile.Properties[k] = v
			}
		}
		// An update without an IP address leaves the profile's location
		// alone, so the merged one takes the last address sent for $set
		// and the first for $set_once.
		if ip := j.record.IP; ip != "" && (last || u.profile.IP == "") {
			u.profile.IP = ip
		}
	}
	return updates
}

type engageFunc func(context.Context, []mpclient.Profile) mpclient.Result

func (p *Pool) engage(op string, updates []profileUpdate, call engageFunc) {
	for start := 0; start < len(updates); start += maxProfilesPerRequest {
		chunk := updates[start:min(start+maxProfilesPerRequest, len(updates))]
		profiles := make([]mpclient.Profile, len(chunk))
		var jobs []*Job
		for i, u := range chunk {
			profiles[i] = u.profile
			jobs = append(jobs, u.jobs...)
		}
		p.engageChunk(op, jobs, profiles, call)
	}
}

func (p *Pool) engageChunk(op string, jobs []*Job, profiles []mpclient.Profile, call engageFunc) {
	stage := "engage " + op
	first := time.Now()
	for attempt := 1; ; attempt++ {
		if !p.waitGate() {
			p.deadLetter(jobs, DeadLetter{Stage: stage, Reason: "shutdown", Attempts: attempt - 1, First: first})
			return
		}
		start := time.Now()
		res := call(p.ctx, profiles)
		p.cfg.Observer.MixpanelRequest("engage", res.Status, time.Since(start))
		switch res.Outcome {
		case mpclient.OK:
			return
		case mpclient.Rejected, mpclient.Partial, mpclient.TooLarge:
			p.deadLetter(jobs, failure(stage, "rejected by Mixpanel", res, attempt, first))
			return
		}
		if p.ctx.Err() != nil {
			p.deadLetter(jobs, failure(stage, "shutdown", res, attempt, first))
			return
		}
		delay, ok := p.retryDelay(stage, len(jobs), res, attempt, first)
		if !ok {
			p.deadLetter(jobs, failure(stage, "retry budget spent", res, attempt, first))
			return
		}
		if !p.sleep(delay) {
			p.deadLetter(jobs, failure(stage, "shutdown", res, attempt, first))
			return
		}
	}
}

func events(jobs []*Job) [][]byte {
	out := make([][]byte, len(jobs))
	for i, j := range jobs {
		out[i] = j.encoded
	}
	return out
}

func failure(stage, reason string, res mpclient.Result, attempts int, first time.Time) DeadLetter {
	if res.Err != nil {
		reason += ": " + res.Err.Error()
	}
	return DeadLetter{
		Stage:    stage,
		Reason:   reason,
		Status:   res.Status,
		Body:     res.Body,
		Attempts: attempts,
		First:    first,
	}
}
