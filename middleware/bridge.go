package branchmp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/delivery"
	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/mapping"
	"github.com/branchmp/branchmp/internal/mpclient"
	"github.com/branchmp/branchmp/internal/spool"
)

// Bridge receives Branch webhooks and delivers them to Mixpanel. It is an
// http.Handler and is safe for concurrent use. Create it with New or
// Handler, and stop it with Shutdown.
type Bridge struct {
	cfg         Config
	log         *zap.Logger
	requestLog  *zap.Logger // sampled, for per-request rejections
	spool       spool.Spool
	client      *mpclient.Client
	pool        *delivery.Pool
	queryParams map[string]string
	ignore      []string // query parameters that are never event data
	now         func() time.Time
	auth        authenticator
	ips         ipFilter
	decodeSlots chan struct{} // one token per decode in progress

	webhooks  webhookCounters
	closeOnce sync.Once
	closeErr  error
}

var _ http.Handler = (*Bridge)(nil)

// New validates cfg, applies its defaults, opens the spool and starts the
// delivery workers. Events that an earlier run left in SpoolDir are
// delivered first. The returned error wraps ErrInvalidConfig and names the
// invalid field, or reports why the spool could not be opened.
func New(cfg Config) (*Bridge, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The default resolver reads a field of the event, so it cannot block
	// or panic, and it returns the same user for the same event.
	pureResolver := cfg.Resolver == nil
	cfg = cfg.withDefaults()

	params := branch.DefaultQueryParams()
	maps.Copy(params, cfg.QueryParams)

	log := cfg.Logger.Named("branchmp")
	sp, err := openSpool(cfg, log)
	if err != nil {
		return nil, err
	}

	allowed, _ := parsePrefixes("AllowedIPs", cfg.AllowedIPs) // validated above
	trusted, _ := parsePrefixes("TrustedProxies", cfg.TrustedProxies)
	b := &Bridge{
		cfg:         cfg,
		log:         log,
		requestLog:  logfield.Sampled(log),
		spool:       sp,
		client:      newClient(cfg),
		queryParams: params,
		ignore:      []string{cfg.SecretParam},
		now:         time.Now,
		auth:        newAuthenticator(cfg),
		ips:         ipFilter{allowed: allowed, trusted: trusted, header: http.CanonicalHeaderKey(cfg.ForwardedHeader)},
		decodeSlots: make(chan struct{}, cfg.MaxConcurrentDecodes),
	}
	if cfg.WebhookSecret == "" {
		log.Warn("no WebhookSecret set: anyone with the webhook URL can post events")
	}
	observer, err := b.registerMetrics(cfg.Metrics)
	if err != nil {
		sp.Close()
		return nil, fmt.Errorf("branchmp: Metrics: %w", err)
	}
	b.pool = delivery.Start(delivery.Config{
		Client:          b.client,
		Resolver:        cfg.Resolver,
		ResolverTimeout: cfg.ResolverTimeout,
		PureResolver:    pureResolver,
		Mapping:         mappingOptions(cfg),
		Observer:        observer,
		Logger:          log,
		Spool:           sp,
		Durable:         cfg.SpoolDir != "",
		Decode:          b.decodeEntry,
		InflightBytes:   cfg.QueueMaxBytes,
		Workers:         cfg.Workers,
		BatchSize:       cfg.BatchSize,
		BatchBytes:      cfg.MaxBatchBytes,
		FlushInterval:   cfg.FlushInterval,
		MaxAttempts:     cfg.MaxAttempts,
		MaxAge:          cfg.MaxRetryAge,
		RetryBase:       cfg.RetryBackoff,
		RetryMax:        cfg.RetryMaxBackoff,
	})
	return b, nil
}

func mappingOptions(cfg Config) mapping.Options {
	privacy := map[Privacy]mapping.Privacy{
		PrivacyKeep: mapping.Keep,
		PrivacyDrop: mapping.Drop,
		PrivacyHash: mapping.Hash,
	}
	return mapping.Options{
		EventName:   mapping.EventNamer(cfg.EventName),
		IPAddresses: privacy[cfg.IPAddresses],
		DeviceIDs:   privacy[cfg.DeviceIDs],
		HashKey:     []byte(cfg.HashKey),
	}
}

func newClient(cfg Config) *mpclient.Client {
	return mpclient.New(mpclient.Config{
		Token:          cfg.Token,
		APISecret:      cfg.APISecret,
		ServiceAccount: (*mpclient.ServiceAccount)(cfg.ServiceAccount),
		Residency:      string(cfg.Residency),
		BaseURL:        cfg.BaseURL,
		HTTPClient:     cfg.HTTPClient,
	})
}

// dedupKeysPerEvent sizes the in-memory dedup index: it remembers the keys
// of ten full queues, and at least 100,000.
const dedupKeysPerEvent = 10

func openSpool(cfg Config, log *zap.Logger) (spool.Spool, error) {
	window := max(cfg.DedupWindow, 0)
	if cfg.SpoolDir == "" {
		return spool.NewMemory(spool.MemoryOptions{
			Capacity:       cfg.QueueCapacity,
			MaxBytes:       cfg.QueueMaxBytes,
			MaxDeadLetters: cfg.MaxDeadLetters,
			MaxDeadBytes:   cfg.QueueMaxBytes / 4,
			DedupWindow:    window,
			DedupKeys:      max(cfg.QueueCapacity*dedupKeysPerEvent, 100_000),
		}), nil
	}
	sp, err := spool.OpenBolt(cfg.SpoolDir, spool.BoltOptions{
		MaxBytes:       cfg.SpoolMaxBytes,
		MaxDeadLetters: cfg.MaxDeadLetters,
		MaxDeadBytes:   cfg.SpoolMaxBytes / 4,
		DedupWindow:    window,
		// Decoded events waiting to be loaded, so the workers need not
		// decode them again. Under a backlog it fills and they do.
		MaxValueBytes: boltValueBytes,
		Logger:        log,
	})
	if err != nil {
		return nil, fmt.Errorf("branchmp: SpoolDir: %w", err)
	}
	return sp, nil
}

// boltValueBytes bounds the memory of decoded events that a disk spool
// keeps between acceptance and delivery.
const boltValueBytes = 32 << 20

// Handler returns a Bridge for use as router.Handle("/branch",
// branchmp.Handler(cfg)). It panics when cfg is invalid, with a message
// that names the field; use New to get the error instead. Keep the result
// to call Shutdown.
func Handler(cfg Config) *Bridge {
	b, err := New(cfg)
	if err != nil {
		panic(err.Error())
	}
	return b
}

// Middleware returns middleware that serves cfg.Path with a new Bridge and
// passes every other request to the next handler. It panics when cfg is
// invalid. The Bridge cannot be shut down through this form: call New and
// use Bridge.Middleware when the host drains on shutdown.
func Middleware(cfg Config) func(http.Handler) http.Handler {
	return Handler(cfg).Middleware
}

// Middleware wraps next so that requests for exactly the configured Path
// reach the bridge and every other request, "/branch/" included, reaches
// next.
//
// With gorilla/mux, router.Use(bridge.Middleware) runs only for requests
// that match a registered route, so an unregistered webhook path gets 404
// before the middleware runs. Wrap the whole router instead:
// http.ListenAndServe(addr, bridge.Middleware(router)).
//
// With a WebhookSecret, Path plus one more segment (/branch/SECRET) also
// reaches the bridge, so the secret can be part of the URL path.
func (b *Bridge) Middleware(next http.Handler) http.Handler {
	path := b.cfg.Path
	withSegment := b.auth.enabled
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path || withSegment && isChildSegment(r.URL.Path, path) {
			b.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isChildSegment reports whether p is parent plus exactly one non-empty
// path segment.
func isChildSegment(p, parent string) bool {
	rest, ok := strings.CutPrefix(p, strings.TrimSuffix(parent, "/")+"/")
	return ok && rest != "" && !strings.Contains(rest, "/")
}

// Shutdown stops accepting webhooks (later ones get 503) and waits until
// every accepted event is delivered or dead-lettered. When ctx ends first,
// it cancels in-flight requests and retries and returns an error with the
// count of events not delivered. With SpoolDir those events stay on disk
// and are delivered after the next New. Without it they are dead-lettered
// in memory and lost when the process exits. Shutdown then closes the
// spool. It is safe to call more than once.
func (b *Bridge) Shutdown(ctx context.Context) error {
	err := b.pool.Shutdown(ctx)
	b.closeOnce.Do(func() {
		b.client.CloseIdleConnections()
		b.closeErr = b.spool.Close()
		if b.closeErr != nil {
			b.log.Error("closing the spool failed", zap.Error(b.closeErr))
		}
	})
	return errors.Join(err, b.closeErr)
}

// Ready returns an error while the bridge cannot deliver: Mixpanel rejects
// the token or secret (events are kept meanwhile), or the spool cannot be
// written. With SpoolDir each call writes to the spool file.
func (b *Bridge) Ready() error {
	if err := b.pool.Ready(); err != nil {
		return err
	}
	return b.spool.Probe()
}

// cacheStats returns the resolver cache's counters when the resolver is an
// *identity.Cache. Hits count known and unknown users found in the
// cache.
func (b *Bridge) cacheStats() (hits, misses int64, ok bool) {
	c, ok := b.cfg.Resolver.(*identity.Cache)
	if !ok {
		return 0, 0, false
	}
	st := c.Stats()
	return int64(st.Hits + st.NegativeHits), int64(st.Misses), true
}

// Stats are counters of a Bridge since it started.
type Stats struct {
	// Webhook responses by status.
	Accepted         int64 // 200, stored for delivery
	Duplicates       int64 // 200, a redelivery within DedupWindow, not sent again
	Robots           int64 // 200, robot traffic dropped
	BadRequest       int64 // 400, not a Branch event
	Unauthorized     int64 // 401, missing or wrong secret
	Forbidden        int64 // 403, client address not allowed
	MethodNotAllowed int64 // 405
	TooLarge         int64 // 413
	UnsupportedMedia int64 // 415
	Unavailable      int64 // 503, spool full, spool write failed or shutting down

	// Delivery.
	Delivered    int64 // events imported by Mixpanel
	DeadLettered int64 // events and profile updates given up on
	Retries      int64 // events resent after a failed attempt; a batch of n counts n
	Pending      int   // events accepted and not yet delivered
	SpoolBytes   int64 // estimated size of the pending events
	DeadLetters  int   // dead letters kept now
}

// Stats returns the bridge's counters.
func (b *Bridge) Stats() Stats {
	ps := b.pool.Stats()
	return Stats{
		Accepted:         b.webhooks.accepted.Load(),
		Duplicates:       ps.Deduplicated,
		Robots:           b.webhooks.robots.Load(),
		BadRequest:       b.webhooks.badRequest.Load(),
		Unauthorized:     b.webhooks.unauthorized.Load(),
		Forbidden:        b.webhooks.forbidden.Load(),
		MethodNotAllowed: b.webhooks.methodNotAllowed.Load(),
		TooLarge:         b.webhooks.tooLarge.Load(),
		UnsupportedMedia: b.webhooks.unsupportedMedia.Load(),
		Unavailable:      b.webhooks.unavailable.Load(),
		Delivered:        ps.Delivered,
		DeadLettered:     ps.DeadLettered,
		Retries:          ps.Retries,
		Pending:          ps.Pending,
		SpoolBytes:       ps.SpoolBytes,
		DeadLetters:      ps.DeadLetters,
	}
}

type webhookCounters struct {
	accepted, robots, badRequest, unauthorized, forbidden     atomic.Int64
	methodNotAllowed, tooLarge, unsupportedMedia, unavailable atomic.Int64
}

// DefaultEventName is the default Config.EventName: "[Branch] install",
// "[Branch] add to cart" for standard events, and "[Branch] " plus the
// app's own spelling for custom events.
func DefaultEventName(name string, standard bool) string {
	return mapping.DefaultEventName(name, standard)
}

// DefaultQueryParams returns the GET query parameter names that a Bridge
// understands without Config.QueryParams, mapped to the event fields they
// fill.
func DefaultQueryParams() map[string]string {
	return branch.DefaultQueryParams()
}
