package delivery

import (
	"go.uber.org/zap"

	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/spool"
)

// feed loads spooled entries in order and hands them to the workers. After
// Shutdown it keeps loading until the spool has nothing new, then closes
// intake; when Shutdown's deadline passes it stops at once.
func (p *Pool) feed() {
	defer close(p.intake)
	var cursor uint64
	for {
		entries, err := p.cfg.Spool.Load(cursor, feedChunk)
		if err != nil {
			p.log.Error("spool read failed, retrying", zap.Error(err))
			if !p.sleep(p.cfg.RetryBase) {
				return
			}
			continue
		}
		for _, e := range entries {
			cursor = e.Seq
			j := p.newJob(e)
			j.cost = min(inflightCost(e), p.cfg.InflightBytes)
			if err := p.inflight.Acquire(p.ctx, j.cost); err != nil {
				return
			}
			select {
			case p.intake <- j:
			case <-p.ctx.Done():
				p.leave([]*Job{j})
				return
			}
		}
		if len(entries) > 0 {
			continue
		}

		select {
		case <-p.notify:
		case <-p.closing:
			// Accept can no longer add entries, so one more empty load
			// means the spool is drained.
			if more, err := p.cfg.Spool.Load(cursor, 1); err == nil && len(more) == 0 {
				return
			}
		case <-p.ctx.Done():
			return
		}
	}
}

// newJob builds a job from a spooled entry, restoring its decoded event and
// frozen record when it has them.
func (p *Pool) newJob(e *spool.Entry) *Job {
	j := &Job{entry: e}
	if ev, ok := e.Value.(*branch.Event); ok {
		j.event = ev
	}
	if e.Record != nil {
		rec, event, err := thaw(e.Record)
		if err != nil {
			p.log.Error("frozen record unreadable, mapping the event again",
				zap.Uint64(logfield.Seq, e.Seq), zap.Error(err))
		} else {
			j.record, j.encoded = rec, event
		}
	}
	return j
}

// inflightCost estimates the memory an event takes while the pool holds
// it.
func inflightCost(e *spool.Entry) int64 {
	return int64((spool.DecodedOverhead+1)*len(e.Payload) + len(e.Record) + 256)
}

// leave gives back the share of InflightBytes that jobs hold. It is called
// once a job is delivered, dead-lettered or abandoned, and is idempotent.
func (p *Pool) leave(jobs []*Job) {
	for _, j := range jobs {
		if j.cost > 0 {
			p.inflight.Release(j.cost)
			j.cost = 0
		}
	}
}
