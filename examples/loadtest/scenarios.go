package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// scenario is one named measurement.
type scenario struct {
	summary     string // one line for -h, with the defaults
	description string // printed above the scenario's tables
	// defaults are flag values that the command line may override.
	defaults map[string]string
	run      func(ctx context.Context, o options, out io.Writer) ([]trialResult, error)
}

var scenarios = map[string]scenario{
	"intake": {
		summary: "each server in turn at the highest rate -conns connections reach [bare,naive,memory,spool; 20s each; -queue 5000]",
		description: "Webhooks as fast as the connections allow, to each server in turn. " +
			"The bridge's queue holds -queue events, so it fills whenever intake outruns delivery, and then webhooks get 503.",
		defaults: map[string]string{"servers": "bare,naive,memory,spool", "duration": "20s", "rate": "0"},
		run:      runServers,
	},
	"latency": {
		summary:     "acknowledgement latency at a fixed rate [bare,memory,spool; -rate 2000; 20s each]",
		description: "Webhooks on a fixed schedule; latency runs from each request's scheduled send time.",
		defaults:    map[string]string{"servers": "bare,memory,spool", "duration": "20s", "rate": "2000"},
		run:         runServers,
	},
	"workers": {
		summary: "a slow Mixpanel, compared across bridge worker counts [memory; -mixpanel-delay 100ms; -worker-counts 1,4,16; 20s each]",
		description: "The stand-in waits -mixpanel-delay before every response, and the bridge runs with each of -worker-counts. " +
			"Each worker has one request to Mixpanel in flight, so delivery is bounded by workers x batch size / delay.",
		defaults: map[string]string{"servers": "memory", "duration": "20s", "rate": "0", "mixpanel-delay": "100ms"},
		run:      runWorkers,
	},
	"ratelimit": {
		summary:     "the stand-in responds 429 with Retry-After at first [memory; -rate 1000; 20s; 429 for the first 5s]",
		description: "The stand-in responds 429 with Retry-After to every request from -fault-after for -fault-for.",
		defaults: map[string]string{"servers": "memory", "duration": "20s", "rate": "1000",
			"fault-after": "0s", "fault-for": "5s", "retry-after": "1s"},
		run: runFaults(http.StatusTooManyRequests),
	},
	"outage": {
		summary: "the stand-in responds 503 under sustained load [memory,spool; -rate 1000; 30s; 503 from 5s for 15s]",
		description: "The stand-in responds 503 to every request from -fault-after for -fault-for while the load goes on. " +
			"The in-memory queue fills and webhooks get 503; the disk spool keeps taking them.",
		defaults: map[string]string{"servers": "memory,spool", "duration": "30s", "rate": "1000",
			"fault-after": "5s", "fault-for": "15s"},
		run: runFaults(http.StatusServiceUnavailable),
	},
	"delivery": {
		summary: "delivery speed: fill the spool while the stand-in holds every request, then release it [memory,spool; -prefill 60000; -procs 1]",
		description: "The stand-in holds every request while -prefill webhooks are stored, then responds to them all. " +
			"the drain runs from that release to the last /import response. " +
			"The target is 30,000 events/s with at most one core, so the server runs with GOMAXPROCS=-procs.",
		defaults: map[string]string{"servers": "memory,spool", "duration": "30s", "rate": "0",
			"prefill": "60000", "procs": "1", "queue": "60000", "queue-mib": "4096"},
		run: runDelivery,
	},
}

func (o options) loadSpec() loadSpec {
	return loadSpec{
		rate:        o.rate,
		duration:    o.duration,
		conns:       o.conns,
		maxRequests: o.maxRequests,
		timeout:     o.timeout,
	}
}

func (o options) childSpec(mode string, workers int) childSpec {
	return childSpec{
		mode:         mode,
		workers:      workers,
		queue:        o.queue,
		queueMiB:     o.queueMiB,
		procs:        o.procs,
		retryBackoff: o.retryBackoff,
	}
}

// runServers runs each server under the same load (intake, latency).
func runServers(ctx context.Context, o options, out io.Writer) ([]trialResult, error) {
	var specs []trialSpec
	for _, mode := range o.servers {
		specs = append(specs, trialSpec{
			label: mode,
			child: o.childSpec(mode, o.workers),
			load:  o.loadSpec(),
			delay: o.delay,
		})
	}
	results, err := runTrials(ctx, o, specs)
	if err != nil {
		return nil, err
	}
	writeIntake(out, results)
	writeDelivery(out, results)
	return results, nil
}

// runWorkers runs each bridge server with each worker count.
func runWorkers(ctx context.Context, o options, out io.Writer) ([]trialResult, error) {
	var specs []trialSpec
	for _, mode := range o.servers {
		for _, n := range o.workerCounts {
			specs = append(specs, trialSpec{
				label: fmt.Sprintf("%s, %d %s", mode, n, plural(n, "worker")),
				child: o.childSpec(mode, n),
				load:  o.loadSpec(),
				delay: o.delay,
			})
		}
	}
	results, err := runTrials(ctx, o, specs)
	if err != nil {
		return nil, err
	}
	writeIntake(out, results)
	writeDelivery(out, results)
	return results, nil
}

// runFaults returns a scenario that makes the stand-in respond with
// status for a while during the load (ratelimit, outage).
func runFaults(status int) func(context.Context, options, io.Writer) ([]trialResult, error) {
	return func(ctx context.Context, o options, out io.Writer) ([]trialResult, error) {
		fault := &faultSpec{status: status, after: o.faultAfter, dur: o.faultFor}
		if status == http.StatusTooManyRequests {
			fault.retryAfter = o.retryAfter
		}
		var specs []trialSpec
		for _, mode := range o.servers {
			specs = append(specs, trialSpec{
				label: mode,
				child: o.childSpec(mode, o.workers),
				load:  o.loadSpec(),
				delay: o.delay,
				fault: fault,
			})
		}
		results, err := runTrials(ctx, o, specs)
		if err != nil {
			return nil, err
		}
		writeIntake(out, results)
		writeDelivery(out, results)
		writeFaults(out, results)
		return results, nil
	}
}

// runDelivery fills each bridge while the stand-in holds every request,
// then measures the drain.
func runDelivery(ctx context.Context, o options, out io.Writer) ([]trialResult, error) {
	var specs []trialSpec
	for _, mode := range o.servers {
		if mode != "memory" && mode != "spool" {
			return nil, fmt.Errorf("-servers %s: the delivery scenario measures the bridge only: use memory, spool", strings.Join(o.servers, ","))
		}
		load := o.loadSpec()
		load.rate = 0
		load.maxRequests = min(o.prefill, o.maxRequests)
		child := o.childSpec(mode, o.workers)
		child.queue = max(child.queue, o.prefill)
		specs = append(specs, trialSpec{label: mode, child: child, load: load, delay: o.delay, prefill: true})
	}
	results, err := runTrials(ctx, o, specs)
	if err != nil {
		return nil, err
	}
	writeDrain(out, results)
	return results, nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
