package delivery

import (
	"time"

	"go.uber.org/zap"

	"github.com/branchmp/branchmp/internal/logfield"
)

// deadLetter records that jobs were given up on, with the reason in tmpl.
func (p *Pool) deadLetter(jobs []*Job, tmpl DeadLetter) {
	if len(jobs) == 0 {
		return
	}
	tmpl.Last = time.Now()
	p.deadLettered.Add(int64(len(jobs)))

	p.log.Error("dead-lettered",
		zap.String(logfield.Stage, tmpl.Stage),
		zap.String(logfield.Reason, tmpl.Reason),
		zap.Int(logfield.Status, tmpl.Status),
		zap.Int(logfield.Attempt, tmpl.Attempts),
		zap.Int(logfield.Count, len(jobs)),
		zap.String(logfield.EventID, firstEventID(jobs)))

	p.dlMu.Lock()
	defer p.dlMu.Unlock()
	for _, j := range jobs {
		dl := tmpl
		dl.Event = j.Event
		dl.Record = j.record
		p.deadLetters = append(p.deadLetters, dl)
	}
	if over := len(p.deadLetters) - p.cfg.MaxDeadLetters; over > 0 {
		p.log.Error("dead letters over the in-memory limit, oldest discarded",
			zap.Int(logfield.Count, over))
		p.deadLetters = append(p.deadLetters[:0:0], p.deadLetters[over:]...)
	}
}

// abandon dead-letters jobs that Shutdown's deadline cut off.
func (p *Pool) abandon(jobs []*Job) {
	if len(jobs) == 0 {
		return
	}
	p.abandoned.Add(int64(len(jobs)))
	p.deadLetter(jobs, DeadLetter{Stage: "shutdown", Reason: "shutdown deadline passed"})
}

func firstEventID(jobs []*Job) string {
	for _, j := range jobs {
		if j.Event.ID != "" {
			return j.Event.ID
		}
	}
	return ""
}
