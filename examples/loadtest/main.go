// Command loadtest measures the bridge under load on one machine and
// prints the results as Markdown tables.
//
// Each server under test runs in a child process, a second copy of this
// binary started as "loadtest serve", so that its CPU time and peak RSS are
// its own. The parent runs the load generator and a counting stand-in for
// Mixpanel (internal/mptest). It checks that the event of every webhook
// that got 200 reached the stand-in. Everything listens on 127.0.0.1.
//
//	go run ./examples/loadtest -scenario latency -duration 20s
//
// Run with -h for the scenarios and flags. The command needs Linux: it
// reads the child's CPU time and peak RSS with getrusage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveCommand {
		os.Exit(serveMain(os.Args[2:]))
	}
	if err := start(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// start parses the flags and runs the chosen scenarios until they end or
// SIGINT or SIGTERM arrives.
func start(args []string) error {
	opts, err := parseOptions(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program's executable to start the servers: %w", err)
	}
	opts.executable = self
	opts.stderr = os.Stderr

	if opts.profileDir != "" {
		if err := os.MkdirAll(opts.profileDir, 0o755); err != nil {
			return fmt.Errorf("-cpuprofile-dir: %w", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = run(ctx, opts, os.Stdout)
	return err
}

// run runs every scenario in opts, writes its tables to out and returns
// the results of every trial.
func run(ctx context.Context, opts options, out io.Writer) ([]trialResult, error) {
	writeEnvironment(out, opts)
	var all []trialResult
	for _, name := range opts.scenarios {
		sc := scenarios[name]
		scenarioOpts, err := opts.forScenario(name)
		if err != nil {
			return all, err
		}
		fmt.Fprintf(out, "\n## Scenario %s\n\n%s\n", name, sc.description)
		results, err := sc.run(ctx, scenarioOpts, out)
		all = append(all, results...)
		if err != nil {
			return all, fmt.Errorf("scenario %s: %w", name, err)
		}
	}
	return all, nil
}

// scenarioNames returns the scenario names in the order they are listed
// in the help text.
func scenarioNames() []string {
	return []string{"intake", "latency", "workers", "ratelimit", "outage", "delivery"}
}

func printUsage(fs *flag.FlagSet) func() {
	return func() {
		out := fs.Output()
		fmt.Fprintf(out, `Usage: loadtest -scenario NAME[,NAME...] [flags]

Runs load scenarios against the bridge and prints Markdown tables. Each
server runs as a child process; the load generator and a counting stand-in
for Mixpanel run in this process, all on 127.0.0.1.

Scenarios (defaults in brackets; flags given on the command line win):
`)
		for _, name := range scenarioNames() {
			fmt.Fprintf(out, "  %-10s %s\n", name, scenarios[name].summary)
		}
		fmt.Fprintf(out, `
Servers: bare (reads the body, responds 200: the ceiling), naive (decodes
the body and calls mixpanel-go's Import once per webhook before it responds),
memory (the bridge with its in-memory spool), spool (the bridge with
SpoolDir in a temporary directory).

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprintf(out, `
"loadtest %s" is the child process; the parent starts it.
`, serveCommand)
	}
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
