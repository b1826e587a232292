package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// loadSpec is one run of the load generator.
type loadSpec struct {
	url         string
	rate        float64 // webhooks per second on a schedule; 0 for as fast as possible
	duration    time.Duration
	conns       int
	maxRequests int
	timeout     time.Duration
}

// sample is the outcome of one request. 12 bytes, so that 2 million of
// them take 24 MB.
type sample struct {
	seq     uint32
	status  uint16 // 0 when no response arrived
	latency uint32 // microseconds
}

// loadResult is the load generator's record of one run.
type loadResult struct {
	samples []sample // one per request sent

	// due is how many requests the schedule called for (fixed rate), or
	// how many were sent (as fast as possible).
	due int
	// notSent counts scheduled requests that were never sent, because the
	// connections were busy until the run's deadline.
	notSent int
	// errors counts requests that got no response, such as timeouts.
	errors     int
	firstError string
	elapsed    time.Duration // from the start until the last response
	// maxWakeLag is how late the scheduler woke up for a request at
	// worst: a large value means the generator lacked CPU, and its
	// latencies are then too high.
	maxWakeLag time.Duration
}

// statusCount returns how many requests got status.
func (r *loadResult) statusCount(status int) int {
	n := 0
	for _, s := range r.samples {
		if int(s.status) == status {
			n++
		}
	}
	return n
}

// generator sends webhooks to one server.
type generator struct {
	spec     loadSpec
	payloads *payloads
	client   *http.Client
}

func newGenerator(spec loadSpec, p *payloads) *generator {
	transport := &http.Transport{
		Proxy:               nil, // only the loopback server under test
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        spec.conns,
		MaxIdleConnsPerHost: spec.conns,
		MaxConnsPerHost:     spec.conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &generator{
		spec:     spec,
		payloads: p,
		client:   &http.Client{Transport: transport, Timeout: spec.timeout},
	}
}

// run sends the load and returns once every request has ended, at most
// the duration plus twice the request timeout after it started.
func (g *generator) run(ctx context.Context) loadResult {
	defer g.client.CloseIdleConnections()
	if g.spec.rate > 0 {
		return g.runFixedRate(ctx)
	}
	return g.runMaxRate(ctx)
}

// workerLog is one sender goroutine's results, merged at the end.
type workerLog struct {
	samples    []sample
	errors     int
	firstError string
	notSent    int
}

func (w *workerLog) record(seq uint64, status int, latency time.Duration, err error) {
	w.samples = append(w.samples, sample{
		seq:     uint32(seq),
		status:  uint16(status),
		latency: uint32(min(latency.Microseconds(), 1<<32-1)),
	})
	if err != nil {
		w.errors++
		if w.firstError == "" {
			w.firstError = err.Error()
		}
	}
}

// runMaxRate keeps conns requests in flight until the duration ends or
// maxRequests were sent. Latency runs from each request's actual send.
func (g *generator) runMaxRate(ctx context.Context) loadResult {
	start := time.Now()
	deadline := start.Add(g.spec.duration)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(g.spec.timeout))
	defer cancel()

	var next atomic.Uint64
	logs := make([]workerLog, g.spec.conns)
	var wg sync.WaitGroup
	for i := range logs {
		wg.Go(func() {
			log := &logs[i]
			for time.Now().Before(deadline) && ctx.Err() == nil {
				seq := next.Add(1) - 1
				if seq >= uint64(g.spec.maxRequests) {
					return
				}
				sent := time.Now()
				status, err := g.send(ctx, seq)
				log.record(seq, status, time.Since(sent), err)
			}
		})
	}
	wg.Wait()
	res := merge(logs)
	res.due = len(res.samples)
	res.elapsed = time.Since(start)
	return res
}

// job is a request due at a scheduled time.
type job struct {
	seq uint64
	due time.Time
}

// runFixedRate sends requests on a schedule of rate per second, open
// loop: latency runs from each request's scheduled time, so a server that
// stalls is charged for the requests that waited behind it. A request not
// sent within the request timeout after the duration is counted as not
// sent.
func (g *generator) runFixedRate(ctx context.Context) loadResult {
	start := time.Now()
	total := min(g.spec.maxRequests, int(g.spec.rate*g.spec.duration.Seconds()))
	ctx, cancel := context.WithDeadline(ctx, start.Add(g.spec.duration+g.spec.timeout))
	defer cancel()

	// A few jobs per connection may wait. When all connections are busy,
	// the scheduler blocks, so the jobs it hands out later are already
	// late, and their latency shows it.
	jobs := make(chan job, 4*g.spec.conns)
	logs := make([]workerLog, g.spec.conns)
	var wg sync.WaitGroup
	for i := range logs {
		wg.Go(func() {
			log := &logs[i]
			for j := range jobs {
				if ctx.Err() != nil {
					log.notSent++
					continue
				}
				status, err := g.send(ctx, j.seq)
				log.record(j.seq, status, time.Since(j.due), err)
			}
		})
	}

	dispatched, maxLag := g.schedule(ctx, start, total, jobs)
	close(jobs)
	wg.Wait()
	res := merge(logs)
	res.due = total
	res.notSent += total - dispatched
	res.elapsed = time.Since(start)
	res.maxWakeLag = maxLag
	return res
}

// schedule hands out total jobs at their due times and returns how many
// it handed out before ctx ended, and its worst wake-up lag.
func (g *generator) schedule(ctx context.Context, start time.Time, total int, jobs chan<- job) (int, time.Duration) {
	interval := float64(time.Second) / g.spec.rate
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C

	var maxLag time.Duration
	for seq := range total {
		due := start.Add(time.Duration(float64(seq) * interval))
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return seq, maxLag
			}
			maxLag = max(maxLag, time.Since(due))
		}
		select {
		case jobs <- job{seq: uint64(seq), due: due}:
		case <-ctx.Done():
			return seq, maxLag
		}
	}
	return total, maxLag
}

// send posts the body of request seq and returns the status.
func (g *generator) send(ctx context.Context, seq uint64) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.spec.url, bytes.NewReader(g.payloads.body(seq)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// Read to the end so that the connection is reused. A failed read
	// only costs the connection: the status has arrived.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, nil
}

func merge(logs []workerLog) loadResult {
	var res loadResult
	n := 0
	for _, l := range logs {
		n += len(l.samples)
	}
	res.samples = make([]sample, 0, n)
	for _, l := range logs {
		res.samples = append(res.samples, l.samples...)
		res.errors += l.errors
		res.notSent += l.notSent
		if res.firstError == "" {
			res.firstError = l.firstError
		}
	}
	return res
}
