package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	branchmp "github.com/branchmp/branchmp/middleware"
)

// serveCommand is the first argument that makes this program a child: a
// server under test.
const serveCommand = "serve"

// webhookPath is the URL path of every server under test's webhook
// handler.
const webhookPath = "/branch"

// usage is a process's resource use so far.
type usage struct {
	CPUSeconds float64 `json:"cpu_seconds"` // user plus system
	MaxRSSKiB  int64   `json:"max_rss_kib"` // peak resident set size
}

// childLine is one JSON line that the child prints on stdout: first its
// address, then a mark for each markSignal, and last its exit report.
type childLine struct {
	Addr string      `json:"addr,omitempty"`
	Mark *usage      `json:"mark,omitempty"`
	Exit *exitReport `json:"exit,omitempty"`
}

// exitReport is the child's last line, printed after it has drained.
type exitReport struct {
	AtStop        usage           `json:"at_stop"` // when SIGTERM arrived
	AtExit        usage           `json:"at_exit"` // after the drain
	DrainSeconds  float64         `json:"drain_seconds"`
	ShutdownError string          `json:"shutdown_error,omitempty"`
	Stats         *branchmp.Stats `json:"stats,omitempty"` // bridge servers only
}

// serveOptions are the child's settings, passed as flags by the parent.
type serveOptions struct {
	mode         string
	mixpanelURL  string
	workers      int
	queue        int
	queueMiB     int
	spoolDir     string
	retryBackoff time.Duration
	cpuProfile   string
	drainTimeout time.Duration
	maxLifetime  time.Duration
	verbose      bool
}

func serveMain(args []string) int {
	if err := serve(args); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest serve:", err)
		return 1
	}
	return 0
}

func parseServeOptions(args []string) (serveOptions, error) {
	var o serveOptions
	fs := flag.NewFlagSet("loadtest "+serveCommand, flag.ContinueOnError)
	fs.StringVar(&o.mode, "mode", "", "server: bare, naive, memory or spool")
	fs.StringVar(&o.mixpanelURL, "mixpanel", "", "URL of the Mixpanel stand-in, on a loopback address")
	fs.IntVar(&o.workers, "workers", 4, "bridge Workers")
	fs.IntVar(&o.queue, "queue", 0, "bridge QueueCapacity; 0 keeps the default")
	fs.IntVar(&o.queueMiB, "queue-mib", 0, "bridge QueueMaxBytes in MiB; 0 keeps the default")
	fs.StringVar(&o.spoolDir, "spool-dir", "", "bridge SpoolDir (spool mode)")
	fs.DurationVar(&o.retryBackoff, "retry-backoff", 0, "bridge RetryBackoff; 0 keeps the default")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 2*time.Minute, "bound on the shutdown")
	fs.DurationVar(&o.maxLifetime, "max-lifetime", 20*time.Minute, "the server stops by itself after this long")
	fs.BoolVar(&o.verbose, "v", false, "log the bridge's warnings and errors to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.mode == "spool" && o.spoolDir == "" {
		return o, errors.New("-spool-dir is required in spool mode")
	}
	if o.mode != "bare" {
		if err := checkLoopbackURL(o.mixpanelURL); err != nil {
			return o, err
		}
	}
	return o, nil
}

// checkLoopbackURL makes sure that nothing is ever sent off the machine.
func checkLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return fmt.Errorf("-mixpanel %q is invalid: use http://127.0.0.1:PORT", raw)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-mixpanel %q is not a loopback address: the load test sends only to a local stand-in", raw)
	}
	return nil
}

// target is a server under test.
type target struct {
	handler  http.Handler
	shutdown func(context.Context) error // drains the bridge; nil for others
	stats    func() branchmp.Stats       // nil for servers other than the bridge
}

func newTarget(o serveOptions, logger *zap.Logger) (target, error) {
	switch o.mode {
	case "bare":
		return target{handler: bareHandler()}, nil
	case "naive":
		return target{handler: newNaiveHandler(o.mixpanelURL)}, nil
	case "memory", "spool":
		bridge, err := branchmp.New(branchmp.Config{
			Token:         "loadtest-token",
			BaseURL:       o.mixpanelURL,
			Logger:        logger,
			Workers:       o.workers,
			QueueCapacity: o.queue,
			QueueMaxBytes: int64(o.queueMiB) << 20,
			SpoolDir:      o.spoolDir,
			RetryBackoff:  o.retryBackoff,
		})
		if err != nil {
			return target{}, err
		}
		return target{handler: bridge, shutdown: bridge.Shutdown, stats: bridge.Stats}, nil
	}
	return target{}, fmt.Errorf("-mode %q is unknown: use bare, naive, memory or spool", o.mode)
}

// bareHandler reads the body and responds 200. Every other server does
// that and more, so it is the ceiling for them.
func bareHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 1<<20)); err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok\n")
	})
}

// serve runs the server until SIGTERM or SIGINT, then drains it and prints
// the exit report.
func serve(args []string) error {
	o, err := parseServeOptions(args)
	if err != nil {
		return err
	}
	logger := zap.NewNop()
	if o.verbose {
		cfg := zap.NewProductionConfig()
		cfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
		if logger, err = cfg.Build(); err != nil {
			return err
		}
		defer logger.Sync()
	}
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	t, err := newTarget(o, logger)
	if err != nil {
		stopProfile()
		return err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		if t.shutdown != nil {
			t.shutdown(context.Background())
		}
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(webhookPath, t.handler)
	server := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(ln) }()

	// Registered before the address is printed: the parent may signal as
	// soon as it reads it.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, markSignal, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)
	out := &lineWriter{w: os.Stdout}
	out.write(childLine{Addr: ln.Addr().String()})
	waitForStop(signals, out, o.maxLifetime)

	report := drain(server, t, o.drainTimeout)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		report.ShutdownError += fmt.Sprintf("; serve: %v", err)
	}
	if err := stopProfile(); err != nil {
		report.ShutdownError += fmt.Sprintf("; CPU profile: %v", err)
	}
	out.write(childLine{Exit: &report})
	return out.err
}

// startCPUProfile profiles the process into path until the returned
// function is called. An empty path profiles nothing.
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// waitForStop prints a mark at each markSignal and returns at SIGTERM,
// SIGINT or after maxLifetime.
func waitForStop(signals <-chan os.Signal, out *lineWriter, maxLifetime time.Duration) {
	lifetime := time.NewTimer(maxLifetime)
	defer lifetime.Stop()
	for {
		select {
		case sig := <-signals:
			if sig != markSignal {
				return
			}
			u := readUsage()
			out.write(childLine{Mark: &u})
		case <-lifetime.C:
			fmt.Fprintf(os.Stderr, "loadtest serve: no stop signal within %v, stopping\n", maxLifetime)
			return
		}
	}
}

// drain stops taking connections, waits for the requests in progress,
// then drains the bridge within timeout.
func drain(server *http.Server, t target, timeout time.Duration) exitReport {
	report := exitReport{AtStop: readUsage()}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var errs []error
	if err := server.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http server: %w", err))
	}
	if t.shutdown != nil {
		if err := t.shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("bridge: %w", err))
		}
	}
	report.DrainSeconds = time.Since(start).Seconds()
	report.AtExit = readUsage()
	if t.stats != nil {
		stats := t.stats()
		report.Stats = &stats
	}
	if err := errors.Join(errs...); err != nil {
		report.ShutdownError = err.Error()
	}
	return report
}

// lineWriter writes JSON lines; the signal loop and drain share it.
type lineWriter struct {
	mu  sync.Mutex
	w   io.Writer
	err error
}

func (lw *lineWriter) write(line childLine) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	data, err := json.Marshal(line)
	if err == nil {
		_, err = lw.w.Write(append(data, '\n'))
	}
	if err != nil && lw.err == nil {
		lw.err = err
	}
}
