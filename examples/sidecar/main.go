// Command branchmp-sidecar runs the bridge as a standalone process next to
// an app that cannot embed the Go library. Branch posts webhooks to its
// public listener; health, readiness, metrics and dead-letter endpoints are
// served on a separate admin listener that must stay private.
//
// Every setting is a flag and an environment variable; run with -h for the
// list. "branchmp-sidecar healthcheck" requests the admin listener's /healthz
// and exits 0 when it responds 200, for container health checks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/branchmp/branchmp/identity"
	branchmp "github.com/branchmp/branchmp/middleware"
)

func main() {
	if err := start(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "branchmp-sidecar:", err)
		os.Exit(1)
	}
}

// start dispatches the healthcheck command or runs the sidecar until
// SIGINT or SIGTERM.
func start(args []string) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:])
	}
	s, err := parseSettings(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger, err := newLogger(s.logLevel, s.logFormat)
	if err != nil {
		return err
	}
	defer logger.Sync()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, s, logger)
}

func newLogger(level, format string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("BRANCHMP_LOG_LEVEL (-log-level) %q is invalid: use debug, info, warn or error", level)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
	default:
		return nil, fmt.Errorf("BRANCHMP_LOG_FORMAT (-log-format) %q is invalid: use json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	return cfg.Build()
}

// run serves webhooks and the admin endpoints until ctx ends, then stops
// the webhook listener, drains the bridge within the grace period, and
// stops the admin listener last so readiness stays visible while draining.
func run(ctx context.Context, s settings, logger *zap.Logger) error {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	cfg, err := bridgeConfig(s, logger, registry)
	if err != nil {
		return err
	}
	bridge, err := branchmp.New(cfg)
	if err != nil {
		return settingNames(err)
	}

	public, err := net.Listen("tcp", s.listen)
	if err != nil {
		bridge.Shutdown(context.Background())
		return fmt.Errorf("BRANCHMP_LISTEN (-listen) %q: %w", s.listen, err)
	}
	admin, err := net.Listen("tcp", s.adminListen)
	if err != nil {
		public.Close()
		bridge.Shutdown(context.Background())
		return fmt.Errorf("BRANCHMP_ADMIN_LISTEN (-admin-listen) %q: %w", s.adminListen, err)
	}

	webhookServer := newServer(bridge.Middleware(http.NotFoundHandler()), logger)
	adminMux := http.NewServeMux()
	adminMux.Handle("/", bridge.AdminHandler())
	adminMux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	adminServer := newServer(adminMux, logger)

	errs := make(chan error, 2)
	go func() { errs <- serve(webhookServer, public) }()
	go func() { errs <- serve(adminServer, admin) }()
	logger.Info("sidecar started",
		zap.String("webhook_addr", public.Addr().String()),
		zap.String("admin_addr", admin.Addr().String()),
		zap.String("path", cfg.Path),
		zap.Bool("durable", cfg.SpoolDir != ""))

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("sidecar stopping", zap.String("grace_period", s.gracePeriod.String()))
	case runErr = <-errs:
		logger.Error("listener failed", zap.Error(runErr))
	}

	grace, cancel := context.WithTimeout(context.Background(), s.gracePeriod)
	defer cancel()
	shutdownErr := errors.Join(
		webhookServer.Shutdown(grace),
		bridge.Shutdown(grace),
		adminServer.Shutdown(grace),
	)
	if n := bridge.Stats().DeadLetters; n > 0 && cfg.SpoolDir == "" {
		// Without a spool directory the dead letters live in memory and
		// end with the process, so the exit must not look clean.
		shutdownErr = errors.Join(shutdownErr, fmt.Errorf("%d dead letters were kept in memory and are lost; set BRANCHMP_SPOOL_DIR to keep them on disk", n))
	}
	if shutdownErr != nil {
		logger.Error("sidecar stopped with errors", zap.Error(shutdownErr))
	} else {
		logger.Info("sidecar stopped")
	}
	return errors.Join(runErr, shutdownErr)
}

// newServer returns a server with the timeouts that keep a slow client
// from holding a connection.
func newServer(h http.Handler, logger *zap.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(logger.Named("http")),
	}
}

func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// bridgeConfig turns settings into a bridge configuration.
func bridgeConfig(s settings, logger *zap.Logger, registry prometheus.Registerer) (branchmp.Config, error) {
	cfg := branchmp.Config{
		Token:           s.token,
		APISecret:       s.apiSecret,
		Residency:       branchmp.Residency(strings.ToUpper(s.residency)),
		BaseURL:         s.apiURL,
		Path:            s.path,
		Logger:          logger,
		Metrics:         registry,
		WebhookSecret:   s.webhookSecret,
		TrustedProxies:  s.trustedProxies,
		ForwardedHeader: s.forwardedHeader,
		SpoolDir:        s.spoolDir,
		SpoolMaxBytes:   s.spoolMaxBytes,
		Workers:         s.workers,
		QueueCapacity:   s.queueCapacity,
		BatchSize:       s.batchSize,
		FlushInterval:   s.flushInterval,
		MaxBodyBytes:    s.maxBodyBytes,
		DedupWindow:     s.dedupWindow,
		IPAddresses:     branchmp.Privacy(s.ipAddresses),
		DeviceIDs:       branchmp.Privacy(s.deviceIDs),
		HashKey:         s.hashKey,
	}
	if s.saUser != "" || s.saSecret != "" {
		cfg.ServiceAccount = &branchmp.ServiceAccount{ProjectID: s.saProject, Username: s.saUser, Secret: s.saSecret}
	}
	if len(s.allowedIPs) == 1 && s.allowedIPs[0] == "branch" {
		cfg.AllowedIPs = branchmp.BranchWebhookIPs()
	} else {
		cfg.AllowedIPs = s.allowedIPs
	}

	if s.resolverURL != "" {
		resolver, err := httpResolver(s)
		if err != nil {
			return branchmp.Config{}, err
		}
		cfg.Resolver = resolver
		// The resolver's own timeout bounds each call; leave room for it.
		cfg.ResolverTimeout = s.resolverTimeout + time.Second
	}
	return cfg, nil
}

// httpResolver builds the cached HTTP resolver of BRANCHMP_RESOLVER_URL.
func httpResolver(s settings) (identity.Resolver, error) {
	header := http.Header{}
	if s.resolverHeader != "" {
		name, value, ok := strings.Cut(s.resolverHeader, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, errors.New(`BRANCHMP_RESOLVER_HEADER (-resolver-header) is invalid: use "Name: value"`)
		}
		header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resolver, err := identity.NewHTTPResolver(s.resolverURL, identity.HTTPOptions{
		Timeout: s.resolverTimeout,
		Header:  header,
	})
	if err != nil {
		return nil, fmt.Errorf("BRANCHMP_RESOLVER_URL (-resolver-url): %w", err)
	}
	cache, err := identity.NewCache(resolver, identity.CacheOptions{
		TTL:         s.resolverCacheTTL,
		NegativeTTL: max(s.resolverCacheTTL/10, time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("BRANCHMP_RESOLVER_CACHE_TTL (-resolver-cache-ttl): %w", err)
	}
	return cache, nil
}

// configSettings maps the bridge's Config field names, which its errors
// name, to the sidecar settings an operator sets.
var configSettings = []struct{ field, setting string }{
	{"ServiceAccount", "the service account (BRANCHMP_SERVICE_ACCOUNT_USER, _SECRET and _PROJECT, all three needed)"},
	{"BaseURL", "MIXPANEL_API_URL (-mixpanel-api-url)"},
	{"Path", "BRANCHMP_PATH (-path)"},
	{"Residency", "BRANCHMP_RESIDENCY (-residency)"},
	{"AllowedIPs", "BRANCHMP_ALLOWED_IPS (-allowed-ips)"},
	{"TrustedProxies", "BRANCHMP_TRUSTED_PROXIES (-trusted-proxies)"},
	{"ForwardedHeader", "BRANCHMP_FORWARDED_HEADER (-forwarded-header)"},
	{"IPAddresses", "BRANCHMP_IP_ADDRESSES (-ip-addresses)"},
	{"DeviceIDs", "BRANCHMP_DEVICE_IDS (-device-ids)"},
	{"HashKey", "BRANCHMP_HASH_KEY (-hash-key)"},
	{"BatchSize", "BRANCHMP_BATCH_SIZE (-batch-size)"},
	{"FlushInterval", "BRANCHMP_FLUSH_INTERVAL (-flush-interval)"},
	{"QueueCapacity", "BRANCHMP_QUEUE_SIZE (-queue-size)"},
	{"SpoolDir", "BRANCHMP_SPOOL_DIR (-spool-dir)"},
	{"SpoolMaxBytes", "BRANCHMP_SPOOL_MAX_BYTES (-spool-max-bytes)"},
	{"MaxBodyBytes", "BRANCHMP_MAX_BODY_BYTES (-max-body-bytes)"},
	{"Workers", "BRANCHMP_WORKERS (-workers)"},
	{"Token", "MIXPANEL_TOKEN (-mixpanel-token)"},
}

// settingNames rewrites a bridge configuration error so that it names the
// sidecar setting instead of the Config field. Only a rejected value is
// called invalid: a spool directory that cannot be opened (locked, damaged,
// not permitted) may be set right.
func settingNames(err error) error {
	msg := err.Error()
	for _, c := range configSettings {
		if strings.Contains(msg, "invalid config: "+c.field+" ") || strings.Contains(msg, "invalid config: "+c.field+":") {
			return fmt.Errorf("%s is invalid: %w", c.setting, err)
		}
		if strings.Contains(msg, "branchmp: "+c.field+" ") || strings.Contains(msg, "branchmp: "+c.field+":") {
			return fmt.Errorf("%s: %w", c.setting, err)
		}
	}
	return err
}

// healthcheck requests the admin listener's /healthz. The address comes
// from -admin-listen, else BRANCHMP_ADMIN_LISTEN, else :9090; a listener on
// every interface is reached through 127.0.0.1.
func healthcheck(args []string) error {
	fs := flag.NewFlagSet("branchmp-sidecar healthcheck", flag.ContinueOnError)
	adminListen := fs.String("admin-listen", "", "`address` of the admin listener (env BRANCHMP_ADMIN_LISTEN, default :9090)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q: use -admin-listen", fs.Arg(0))
	}
	setting := "-admin-listen"
	if *adminListen == "" {
		*adminListen, setting = os.Getenv("BRANCHMP_ADMIN_LISTEN"), "BRANCHMP_ADMIN_LISTEN"
	}
	if *adminListen == "" {
		*adminListen, setting = ":9090", "the default admin address"
	}
	return probe(*adminListen, setting)
}

func probe(adminListen, setting string) error {
	host, port, err := net.SplitHostPort(adminListen)
	if err != nil {
		return fmt.Errorf("%s %q is invalid: %w", setting, adminListen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz responded %s", resp.Status)
	}
	return nil
}
