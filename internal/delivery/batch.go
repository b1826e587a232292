package delivery

import "time"

// urgentDelay is how long a batch waits for more events after the spool was
// full: long enough for the workers to hand over what they are mapping.
const urgentDelay = 10 * time.Millisecond

// batch groups prepared jobs into batches of at most BatchSize events and
// BatchBytes bytes, and sends a partial batch FlushInterval after its first
// event arrived. When the spool is full it sends the partial batch at once,
// and the next partial batch within urgentDelay, for events that were still
// with the workers. It closes batches when records is closed.
func (p *Pool) batch() {
	defer close(p.batches)

	var (
		current []*Job
		size    int
		urgent  bool // the spool was full: send the next partial batch soon
		timer   = time.NewTimer(time.Hour)
	)
	timer.Stop()
	defer timer.Stop()

	flush := func() {
		if len(current) == 0 {
			return
		}
		timer.Stop()
		p.batches <- current
		current, size = nil, 0
	}

	for {
		select {
		case j, ok := <-p.records:
			if !ok {
				flush()
				return
			}
			// One byte per record for the comma between array elements.
			if len(current) > 0 && size+len(j.encoded)+1 > p.cfg.BatchBytes {
				flush()
			}
			if len(current) == 0 {
				wait := p.cfg.FlushInterval
				if urgent {
					wait = min(wait, urgentDelay)
				}
				timer.Reset(wait)
			}
			current = append(current, j)
			size += len(j.encoded) + 1
			if len(current) >= p.cfg.BatchSize || size >= p.cfg.BatchBytes {
				flush()
			}
		case <-timer.C:
			flush()
			urgent = false
		case <-p.flush:
			// Events that the workers are still mapping follow within
			// urgentDelay.
			urgent = true
			flush()
		}
	}
}
