package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/branchmp/branchmp/internal/mptest"
)

// trialSpec is one server under one load.
type trialSpec struct {
	label   string // row name in the tables
	child   childSpec
	load    loadSpec // url is filled in once the child runs
	delay   time.Duration
	fault   *faultSpec
	prefill bool // hold the stand-in during the load and measure the drain
}

// faultSpec is a period during which the stand-in responds with status.
type faultSpec struct {
	status     int
	after, dur time.Duration // from the start of the load
	retryAfter time.Duration
}

// trialResult is everything measured in one trial.
type trialResult struct {
	spec trialSpec
	load loadResult

	mark usage      // child's use when the load started, or at the release
	exit exitReport // child's use at SIGTERM and after the drain, and Stats

	// delivered is the child's use once the stand-in had every accepted
	// event, taken in prefill trials. It is zero when that did not happen.
	delivered usage

	counts     mptest.Counts  // stand-in, after the child exited
	atFaultEnd *mptest.Counts // stand-in, when the fault ended

	loadStart, loadEnd time.Time
	release            time.Time // prefill: when the stand-in released the held requests
	exited             time.Time // when the exit report arrived

	accepted int // requests that got 200
	lost     int // got 200 but never imported; -1 for bare, which delivers nothing
	extra    int // imported without a 200 to the client, as after a client timeout

	stopSnapshot func() // ends the fault-end snapshot's timer
}

// isBridge reports whether the server is the bridge.
func (r *trialResult) isBridge() bool {
	return r.spec.child.mode == "memory" || r.spec.child.mode == "spool"
}

// runTrial starts the stand-in and the child, runs the load, drains the
// child and checks every accepted event against the stand-in.
func runTrial(ctx context.Context, o options, spec trialSpec, p *payloads) (trialResult, error) {
	standIn, err := mptest.StartWith(mptest.Options{CountOnly: true, Delay: spec.delay})
	if err != nil {
		return trialResult{}, err
	}
	defer standIn.Close()
	spec.child.mixpanelURL = standIn.URL

	if spec.child.mode == "spool" {
		dir, err := os.MkdirTemp("", "branchmp-loadtest-")
		if err != nil {
			return trialResult{}, err
		}
		defer os.RemoveAll(dir)
		spec.child.spoolDir = dir
	}

	if o.profileDir != "" {
		name := strings.NewReplacer(", ", "-", " ", "-").Replace(o.scenario + "-" + spec.label)
		spec.child.cpuProfile = filepath.Join(o.profileDir, name+".pprof")
	}
	c, err := startChild(ctx, o, spec.child)
	if err != nil {
		return trialResult{}, err
	}
	defer c.kill()
	spec.load.url = c.url + webhookPath

	res := trialResult{spec: spec, stopSnapshot: func() {}}
	defer func() { res.stopSnapshot() }()
	if err := res.runLoad(ctx, c, standIn, p); err != nil {
		return trialResult{}, err
	}
	if spec.prefill {
		if res.delivered, err = res.markDelivered(ctx, c, standIn, o.drainTimeout); err != nil {
			return trialResult{}, err
		}
	}
	// The drain is bounded by the child's own -drain-timeout; the margin
	// covers its HTTP shutdown and exit.
	res.exit, err = c.stop(ctx, o.drainTimeout+30*time.Second)
	if err != nil {
		return trialResult{}, err
	}
	res.exited = time.Now()
	res.stopSnapshot()
	res.counts = standIn.Counts()
	res.check(standIn)
	return res, nil
}

// runLoad runs the load, with the stand-in's fault or hold around it, and
// takes the child's mark.
func (r *trialResult) runLoad(ctx context.Context, c *child, standIn *mptest.Server, p *payloads) error {
	var err error
	if r.spec.prefill {
		standIn.Hold()
	} else if r.mark, err = c.mark(ctx); err != nil {
		return err
	}

	r.loadStart = time.Now()
	r.stopSnapshot = r.scheduleFault(standIn)
	r.load = newGenerator(r.spec.load, p).run(ctx)
	r.loadEnd = time.Now()
	if err := ctx.Err(); err != nil {
		return err
	}

	if r.spec.prefill {
		if r.mark, err = c.mark(ctx); err != nil {
			return err
		}
		r.release = time.Now()
		standIn.Release()
	}
	return nil
}

// markDelivered waits, at most timeout, until the stand-in has imported as
// many distinct events as the load got 200s for, then takes the child's
// mark. It returns the zero usage when the wait times out.
func (r *trialResult) markDelivered(ctx context.Context, c *child, standIn *mptest.Server, timeout time.Duration) (usage, error) {
	accepted := 0
	for _, s := range r.load.samples {
		if s.status == http.StatusOK {
			accepted++
		}
	}
	deadline := time.Now().Add(timeout)
	for standIn.Counts().DistinctIDs < accepted {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return usage{}, ctx.Err()
		}
		time.Sleep(2 * time.Millisecond)
	}
	return c.mark(ctx)
}

// scheduleFault adds the trial's fault to the stand-in and schedules a
// snapshot of its counts at the fault's end. The returned function
// cancels a snapshot that has not run yet, or waits for one that is
// running, so that no timer outlives the trial. It is safe to call twice.
func (r *trialResult) scheduleFault(standIn *mptest.Server) func() {
	f := r.spec.fault
	if f == nil {
		return func() {}
	}
	from := r.loadStart.Add(f.after)
	until := from.Add(f.dur)
	standIn.AddFault(mptest.Fault{From: from, Until: until, Status: f.status, RetryAfter: f.retryAfter})
	done := make(chan struct{})
	timer := time.AfterFunc(time.Until(until), func() {
		counts := standIn.Counts()
		r.atFaultEnd = &counts
		close(done)
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			if !timer.Stop() {
				<-done
			}
		})
	}
}

// check counts the accepted requests and looks each one up in the
// stand-in.
func (r *trialResult) check(standIn *mptest.Server) {
	for _, s := range r.load.samples {
		if s.status != http.StatusOK {
			continue
		}
		r.accepted++
		if r.spec.child.mode != "bare" && !standIn.HasInsertID(insertID(uint64(s.seq))) {
			r.lost++
		}
	}
	if r.spec.child.mode == "bare" {
		r.lost = -1
		return
	}
	r.extra = r.counts.DistinctIDs - (r.accepted - r.lost)
}

// runTrials runs specs in turn and stops at the first error.
func runTrials(ctx context.Context, o options, specs []trialSpec) ([]trialResult, error) {
	p, err := newPayloads()
	if err != nil {
		return nil, err
	}
	var results []trialResult
	for _, spec := range specs {
		fmt.Fprintf(o.stderr, "loadtest: running %s\n", spec.label)
		res, err := runTrial(ctx, o, spec, p)
		if err != nil {
			return results, fmt.Errorf("%s: %w", spec.label, err)
		}
		if res.exit.ShutdownError != "" {
			fmt.Fprintf(o.stderr, "loadtest: %s: shutdown: %s\n", spec.label, res.exit.ShutdownError)
		}
		results = append(results, res)
	}
	if len(results) == 0 {
		return nil, errors.New("no server ran")
	}
	return results, nil
}
