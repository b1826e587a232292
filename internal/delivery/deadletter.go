package delivery

import (
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/spool"
)

// DeadLetter describes why jobs were given up on. The pool fills in each
// job's spool entry.
type DeadLetter struct {
	Stage    string // decode, resolve, map, import, engage set_once, engage set or shutdown
	Reason   string
	Status   int    // last HTTP status, or 0
	Body     string // last response body, or ""
	Attempts int
	First    time.Time // first attempt

	// logReason replaces Reason in the log line when Reason may contain
	// personal data.
	logReason string
}

// deadLetter moves jobs from the spool to its dead letters and logs them
// once. A failed write is logged: the jobs then stay pending in the spool.
func (p *Pool) deadLetter(jobs []*Job, why DeadLetter) {
	if len(jobs) == 0 {
		return
	}
	now := time.Now()
	dls := make([]spool.DeadLetter, len(jobs))
	for i, j := range jobs {
		entry := *j.entry
		if entry.Record == nil && j.record != nil {
			// Keep the mapped payload, so a person can read what was sent
			// and a replay sends the same dedup tuple.
			entry.Record = j.frozen
			if entry.Record == nil {
				entry.Record = freeze(j.record, j.encoded)
			}
		}
		dls[i] = spool.DeadLetter{
			Entry: entry, Stage: why.Stage, Reason: why.Reason, Status: why.Status,
			Body: why.Body, Attempts: why.Attempts, First: why.First, Last: now,
		}
	}
	p.deadLettered.Add(int64(len(jobs)))
	if !strings.HasPrefix(why.Stage, "engage") {
		// An engage dead letter is for a job that was imported; it
		// leaves the pool through complete.
		defer p.leave(jobs)
	}

	reason := why.Reason
	if why.logReason != "" {
		reason = why.logReason
	}
	fields := []zap.Field{
		zap.String(logfield.Stage, why.Stage),
		zap.String(logfield.Reason, reason),
		zap.Int(logfield.Status, why.Status),
		zap.Int(logfield.Attempt, why.Attempts),
		zap.Int(logfield.Count, len(jobs)),
		zap.String(logfield.EventID, jobs[0].eventID()),
	}
	if err := p.cfg.Spool.DeadLetter(dls...); err != nil {
		p.log.Error("storing dead letters failed; the events stay in the spool",
			append(fields, zap.Error(err))...)
		return
	}
	p.log.Error("dead-lettered", fields...)
}

// abandon handles jobs that Shutdown's deadline cut off: a durable spool
// keeps them for the next start, a memory spool dead-letters them.
func (p *Pool) abandon(jobs []*Job) {
	if len(jobs) == 0 {
		return
	}
	p.abandoned.Add(int64(len(jobs)))
	if p.cfg.Durable {
		p.leave(jobs)
		return
	}
	p.deadLetter(jobs, DeadLetter{Stage: "shutdown", Reason: "shutdown deadline passed"})
}

// complete removes delivered jobs from the spool. A failed removal is
// logged and tried again with the next delivered jobs. Until then, a
// restart sends the jobs again with the same $insert_id, and Mixpanel
// drops the duplicates.
func (p *Pool) complete(jobs []*Job) {
	if len(jobs) == 0 {
		return
	}
	defer p.leave(jobs)
	seqs := make([]uint64, len(jobs))
	for i, j := range jobs {
		seqs[i] = j.entry.Seq
	}

	// Events whose removal failed before are removed with these.
	p.undoneMu.Lock()
	earlier := len(p.undone)
	seqs = append(seqs, p.undone...)
	p.undone = nil
	p.undoneMu.Unlock()
	if err := p.cfg.Spool.Done(seqs...); err != nil {
		p.undoneMu.Lock()
		p.undone = append(p.undone, seqs...)
		if over := len(p.undone) - maxUndone; over > 0 {
			// A restart sends these again, and Mixpanel drops the copies.
			p.undone = p.undone[over:]
		}
		p.undoneMu.Unlock()
		p.log.Error("removing delivered events from the spool failed; the next delivery tries again",
			zap.Int(logfield.Count, len(jobs)), zap.Int("earlier", earlier), zap.Error(err))
	}
}

// maxUndone bounds the delivered events kept for another removal from the
// spool after one failed.
const maxUndone = 1 << 20
