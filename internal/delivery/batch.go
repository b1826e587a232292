package delivery

import "time"

// batch groups prepared jobs into batches of at most BatchSize events and
// BatchBytes bytes, and sends a partial batch FlushInterval after its first
// event arrived. It closes batches when records is closed.
func (p *Pool) batch() {
	defer close(p.batches)

	var (
		current []*Job
		size    int
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
			if len(current) > 0 && size+j.size+1 > p.cfg.BatchBytes {
				flush()
			}
			if len(current) == 0 {
				timer.Reset(p.cfg.FlushInterval)
			}
			current = append(current, j)
			size += j.size + 1
			if len(current) >= p.cfg.BatchSize || size >= p.cfg.BatchBytes {
				flush()
			}
		case <-timer.C:
			flush()
		}
	}
}
