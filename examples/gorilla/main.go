// Command gorilla is an existing gorilla/mux app that also receives Branch
// webhooks at /branch and delivers them to Mixpanel.
//
// Environment:
//
//	MIXPANEL_TOKEN    Mixpanel project token (required)
//	MIXPANEL_API_URL  base URL that replaces Mixpanel's API host, for a
//	                  proxy or a local stand-in (optional)
//	BRANCHMP_LISTEN   address to listen on (default 127.0.0.1:8080)
//
// The -mount flag selects how the bridge joins the router: "route" (the
// default) registers /branch as a route, "middleware" wraps the whole router
// with bridge.Middleware. On SIGINT or SIGTERM the app stops the HTTP server
// first, so no webhook arrives after the bridge stops, and then drains the
// bridge.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	branchmp "github.com/branchmp/branchmp/middleware"
)

const (
	defaultListen = "127.0.0.1:8080"
	webhookPath   = "/branch"

	// shutdownTimeout bounds the whole shutdown: the HTTP server's drain
	// and then the bridge's. Events still queued when it passes are lost.
	shutdownTimeout = 25 * time.Second
)

// Mount forms for the -mount flag.
const (
	mountRoute      = "route"
	mountMiddleware = "middleware"
)

const envUsage = `Environment:
  MIXPANEL_TOKEN    Mixpanel project token (required)
  MIXPANEL_API_URL  base URL that replaces Mixpanel's API host (optional)
  BRANCHMP_LISTEN   address to listen on (default 127.0.0.1:8080)
Flags:
`

// config is the app's configuration from the environment and flags.
type config struct {
	token  string
	apiURL string // empty means Mixpanel's own endpoint
	listen string
	mount  string
}

func main() {
	if err := serve(); err != nil {
		fmt.Fprintln(os.Stderr, "gorilla:", err)
		os.Exit(1)
	}
}

// serve reads the configuration, opens the logger and the listener, and
// runs the app until SIGINT or SIGTERM.
func serve() error {
	cfg, err := loadConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h printed the usage
	}
	if err != nil {
		return err
	}

	logger, err := zap.NewProduction()
	if err != nil {
		return fmt.Errorf("create logger: %w", err)
	}
	defer logger.Sync()

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.listen, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, ln, cfg, logger)
}

// loadConfig parses args and reads the environment through getenv.
func loadConfig(args []string, getenv func(string) string) (config, error) {
	cfg := config{
		token:  strings.TrimSpace(getenv("MIXPANEL_TOKEN")),
		apiURL: strings.TrimSpace(getenv("MIXPANEL_API_URL")),
		listen: strings.TrimSpace(getenv("BRANCHMP_LISTEN")),
	}

	flags := flag.NewFlagSet("gorilla", flag.ContinueOnError)
	flags.StringVar(&cfg.mount, "mount", mountRoute,
		`how the bridge joins the router: "route" registers /branch, `+
			`"middleware" wraps the whole router`)
	flags.Usage = func() {
		fmt.Fprintf(flags.Output(), "Usage: %s [-mount route|middleware]\n%s", flags.Name(), envUsage)
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return config{}, err
	}

	if cfg.token == "" {
		return config{}, errors.New("MIXPANEL_TOKEN is missing: set it to the Mixpanel project token")
	}
	if cfg.apiURL != "" {
		u, err := url.Parse(cfg.apiURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return config{}, fmt.Errorf("MIXPANEL_API_URL %q is invalid: "+
				"use an absolute http or https URL such as http://127.0.0.1:8081", cfg.apiURL)
		}
	}
	if cfg.listen == "" {
		cfg.listen = defaultListen
	}
	if cfg.mount != mountRoute && cfg.mount != mountMiddleware {
		return config{}, fmt.Errorf("-mount %q is invalid: use %q or %q",
			cfg.mount, mountRoute, mountMiddleware)
	}
	return cfg, nil
}

// run serves the app on ln until ctx ends, then shuts down the HTTP server
// and the bridge, in that order, within shutdownTimeout. It closes ln.
func run(ctx context.Context, ln net.Listener, cfg config, logger *zap.Logger) error {
	bridge, err := branchmp.New(branchmp.Config{
		Token:   cfg.token,
		BaseURL: cfg.apiURL,
		Path:    webhookPath,
		Logger:  logger,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("create bridge: %w", err)
	}

	server := &http.Server{
		Handler:           newHandler(bridge, cfg.mount),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second, // headers and a body of at most 1 MiB
		WriteTimeout:      15 * time.Second, // the bridge responds without waiting for Mixpanel
		IdleTimeout:       60 * time.Second,
		ErrorLog:          zap.NewStdLog(logger.Named("http")),
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(ln) }()
	logStart(logger, ln.Addr(), cfg)

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("app stopping")
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	return errors.Join(runErr, shutdown(shutdownCtx, server, bridge, logger))
}

// newHandler builds the app's router and mounts bridge on it in the given
// form.
func newHandler(bridge *branchmp.Bridge, mount string) http.Handler {
	router := mux.NewRouter()
	router.HandleFunc("/healthz", handleHealth).Methods(http.MethodGet)
	router.HandleFunc("/api/hello", handleHello).Methods(http.MethodGet)

	if mount == mountMiddleware {
		// Do not use router.Use(bridge.Middleware) here. gorilla/mux
		// (v1.8.1) runs Use middleware only for requests that match a
		// registered route. No route matches /branch, so the router would
		// respond with 404 before the bridge received the webhook. Wrapping
		// the whole router sends /branch to the bridge before the router
		// looks at it.
		return bridge.Middleware(router)
	}

	// No Methods filter: the bridge checks the method itself and responds
	// 405 with an Allow header, which gorilla/mux's own 405 lacks.
	router.Handle(webhookPath, bridge)
	return router
}

// shutdown stops the HTTP server, so that no webhook arrives after the
// bridge stops, and then drains the bridge. Both share ctx's deadline.
func shutdown(ctx context.Context, server *http.Server, bridge *branchmp.Bridge, logger *zap.Logger) error {
	var errs []error
	if err := server.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shut down http server: %w", err))
	}
	if err := bridge.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("shut down bridge: %w", err))
	}

	stats := bridge.Stats()
	logger.Info("app stopped",
		zap.Int64("webhooks_accepted", stats.Accepted),
		zap.Int64("events_delivered", stats.Delivered),
		zap.Int64("events_dead_lettered", stats.DeadLettered))
	return errors.Join(errs...)
}

func handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

func handleHello(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"message":"hello"}`+"\n")
}

// logStart logs the listening address and the settings, with any password
// in MIXPANEL_API_URL redacted. The token is never logged.
func logStart(logger *zap.Logger, addr net.Addr, cfg config) {
	fields := []zap.Field{zap.Stringer("addr", addr), zap.String("mount", cfg.mount)}
	if u, err := url.Parse(cfg.apiURL); cfg.apiURL != "" && err == nil {
		fields = append(fields, zap.String("mixpanel_base_url", u.Redacted()))
	}
	logger.Info("app started", fields...)
}
