package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bounds on the load that no flag can exceed, so that no run can go on
// for hours or fill the parent's memory with samples.
const (
	maxDuration     = 5 * time.Minute
	maxRequestsCap  = 2_000_000
	maxRate         = 100_000
	maxConns        = 1024
	maxFaultEnd     = 10 * time.Minute
	maxDrainTimeout = 10 * time.Minute
	maxWorkers      = 256
)

// serverModes are the servers a child process can run.
var serverModes = []string{"bare", "naive", "memory", "spool"}

// options are the parent's settings for one scenario.
type options struct {
	scenario     string // the scenario these options are for; empty before forScenario
	scenarios    []string
	servers      []string
	duration     time.Duration
	rate         float64
	conns        int
	maxRequests  int
	timeout      time.Duration
	queue        int
	queueMiB     int
	workers      int
	workerCounts []int
	delay        time.Duration
	faultAfter   time.Duration
	faultFor     time.Duration
	retryAfter   time.Duration
	prefill      int
	procs        int
	retryBackoff time.Duration
	drainTimeout time.Duration
	profileDir   string
	verbose      bool

	args       []string  // the command line, re-parsed over each scenario's defaults
	executable string    // this program, started again as the child
	stderr     io.Writer // receives the children's stderr
}

// newFlagSet binds the flags to o, with the defaults that apply when a
// scenario sets none.
func newFlagSet(o *options, output io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = printUsage(fs)
	fs.Func("scenario", "scenarios to run, comma-separated: "+strings.Join(scenarioNames(), ", "), func(s string) error {
		o.scenarios = splitList(s)
		return nil
	})
	fs.Func("servers", "servers to run, comma-separated: bare, naive, memory, spool (default: the scenario's)", func(s string) error {
		o.servers = splitList(s)
		return nil
	})

	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long the load runs against each server, at most 5m")
	fs.Float64Var(&o.rate, "rate", 0, "webhooks per second on a fixed schedule (open loop); 0 sends as fast as -conns connections allow")
	fs.IntVar(&o.conns, "conns", 32, "concurrent keep-alive connections of the load generator")
	fs.IntVar(&o.maxRequests, "max-requests", maxRequestsCap, "cap on the webhooks sent to each server")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "timeout of one webhook request")

	fs.IntVar(&o.workers, "workers", 4, "bridge Config.Workers")
	fs.Func("worker-counts", "bridge Config.Workers values that the workers scenario compares (default 1,4,16)", func(s string) error {
		counts, err := parseInts(s)
		o.workerCounts = counts
		return err
	})
	fs.IntVar(&o.queue, "queue", 5000, "bridge Config.QueueCapacity, in events (in-memory spool only); smaller than the bridge's default so that it fills")
	fs.IntVar(&o.queueMiB, "queue-mib", 0, "bridge Config.QueueMaxBytes in MiB (in-memory spool only); 0 keeps the bridge's default of 256")

	fs.DurationVar(&o.delay, "mixpanel-delay", 0, "latency that the Mixpanel stand-in adds before every response")
	fs.DurationVar(&o.faultAfter, "fault-after", 0, "time from the start of the load to the start of the stand-in's fault (ratelimit, outage)")
	fs.DurationVar(&o.faultFor, "fault-for", 0, "how long the stand-in responds 429 (ratelimit) or 503 (outage)")
	fs.DurationVar(&o.retryAfter, "retry-after", time.Second, "Retry-After of the stand-in's 429 responses, in whole seconds")
	fs.IntVar(&o.prefill, "prefill", 60000, "webhooks stored while the stand-in holds every request (delivery)")

	fs.IntVar(&o.procs, "procs", 0, "GOMAXPROCS of the server process, which taskset (when installed) also pins to that many CPUs; 0 leaves Go's default, the CPU count, and no pinning")
	fs.DurationVar(&o.retryBackoff, "retry-backoff", 0, "bridge Config.RetryBackoff, the first retry's backoff window; 0 keeps the bridge's default of 2s")
	fs.StringVar(&o.profileDir, "cpuprofile-dir", "", "write a CPU profile of each server process to this directory, named after the scenario and server")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 2*time.Minute, "bound on the server's shutdown after the load, which for the bridge waits for delivery")
	fs.BoolVar(&o.verbose, "v", false, "print the bridge's warning and error logs (JSON) to stderr")
	return fs
}

// parseOptions parses the command line and checks every scenario it
// names with that scenario's defaults.
func parseOptions(args []string, output io.Writer) (options, error) {
	o := options{args: args}
	fs := newFlagSet(&o, output)
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q: every setting is a flag, see -h", fs.Arg(0))
	}
	if len(o.scenarios) == 0 {
		return options{}, errors.New("no scenario: set -scenario to one or more of " + strings.Join(scenarioNames(), ", "))
	}
	for _, name := range o.scenarios {
		if _, ok := scenarios[name]; !ok {
			return options{}, fmt.Errorf("-scenario %q is unknown: use %s", name, strings.Join(scenarioNames(), ", "))
		}
		if _, err := o.forScenario(name); err != nil {
			return options{}, err
		}
	}
	if runtime.GOOS != "linux" {
		return options{}, fmt.Errorf("loadtest needs Linux to read a process's CPU time and peak RSS, not %s", runtime.GOOS)
	}
	return o, nil
}

// forScenario returns the options of one scenario: its defaults, then the
// flags given on the command line.
func (o options) forScenario(name string) (options, error) {
	out := options{scenario: name, args: o.args, executable: o.executable, stderr: o.stderr}
	fs := newFlagSet(&out, io.Discard)
	defaults := scenarios[name].defaults
	for _, flagName := range slices.Sorted(maps.Keys(defaults)) {
		if err := fs.Set(flagName, defaults[flagName]); err != nil {
			return options{}, fmt.Errorf("scenario %s: default -%s: %w", name, flagName, err)
		}
	}
	if err := fs.Parse(o.args); err != nil {
		return options{}, err
	}
	if len(out.workerCounts) == 0 {
		out.workerCounts = []int{1, 4, 16}
	}
	if err := out.validate(); err != nil {
		return options{}, fmt.Errorf("scenario %s: %w", name, err)
	}
	return out, nil
}

// validate checks the bounds of every setting.
func (o options) validate() error {
	for _, s := range o.servers {
		if !slices.Contains(serverModes, s) {
			return fmt.Errorf("-servers %q is unknown: use %s", s, strings.Join(serverModes, ", "))
		}
	}
	if len(o.servers) == 0 {
		return errors.New("-servers is empty")
	}
	checks := []struct {
		ok      bool
		problem string
	}{
		{o.duration > 0 && o.duration <= maxDuration, fmt.Sprintf("-duration %v is out of range: use more than 0 and at most %v", o.duration, maxDuration)},
		{o.rate >= 0 && o.rate <= maxRate, fmt.Sprintf("-rate %v is out of range: use 0 to %d", o.rate, maxRate)},
		{o.conns >= 1 && o.conns <= maxConns, fmt.Sprintf("-conns %d is out of range: use 1 to %d", o.conns, maxConns)},
		{o.maxRequests >= 1 && o.maxRequests <= maxRequestsCap, fmt.Sprintf("-max-requests %d is out of range: use 1 to %d", o.maxRequests, maxRequestsCap)},
		{o.timeout > 0 && o.timeout <= time.Minute, fmt.Sprintf("-timeout %v is out of range: use more than 0 and at most 1m", o.timeout)},
		{o.workers >= 1 && o.workers <= maxWorkers, fmt.Sprintf("-workers %d is out of range: use 1 to %d", o.workers, maxWorkers)},
		{o.queue >= 1, fmt.Sprintf("-queue %d is out of range: use at least 1", o.queue)},
		{o.queueMiB == 0 || o.queueMiB >= 1 && o.queueMiB <= 1<<16, fmt.Sprintf("-queue-mib %d is out of range: use 0 or 1 to 65536", o.queueMiB)},
		{o.delay >= 0 && o.delay <= 10*time.Second, fmt.Sprintf("-mixpanel-delay %v is out of range: use 0 to 10s", o.delay)},
		{o.faultAfter >= 0 && o.faultFor >= 0 && o.faultAfter+o.faultFor <= maxFaultEnd, fmt.Sprintf("-fault-after plus -fault-for must be at most %v", maxFaultEnd)},
		{o.retryAfter >= 0 && o.retryAfter <= time.Minute, fmt.Sprintf("-retry-after %v is out of range: use 0 to 1m", o.retryAfter)},
		{o.prefill >= 1 && o.prefill <= maxRequestsCap, fmt.Sprintf("-prefill %d is out of range: use 1 to %d", o.prefill, maxRequestsCap)},
		{o.procs >= 0 && o.procs <= 1024, fmt.Sprintf("-procs %d is out of range: use 0 to 1024", o.procs)},
		{o.retryBackoff >= 0 && o.retryBackoff <= time.Minute, fmt.Sprintf("-retry-backoff %v is out of range: use 0 to 1m", o.retryBackoff)},
		{o.drainTimeout > 0 && o.drainTimeout <= maxDrainTimeout, fmt.Sprintf("-drain-timeout %v is out of range: use more than 0 and at most %v", o.drainTimeout, maxDrainTimeout)},
	}
	for _, c := range checks {
		if !c.ok {
			return errors.New(c.problem)
		}
	}
	for _, n := range o.workerCounts {
		if n < 1 || n > maxWorkers {
			return fmt.Errorf("-worker-counts value %d is out of range: use 1 to %d", n, maxWorkers)
		}
	}
	return nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, item := range splitList(s) {
		n, err := strconv.Atoi(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", item)
		}
		out = append(out, n)
	}
	return out, nil
}
