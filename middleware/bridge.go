package branchmp

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/delivery"
	"github.com/branchmp/branchmp/internal/mapping"
	"github.com/branchmp/branchmp/internal/mpclient"
)

// Bridge receives Branch webhooks and delivers them to Mixpanel. It is an
// http.Handler and is safe for concurrent use. Create it with New or
// Handler, and stop it with Shutdown.
type Bridge struct {
	cfg         Config
	log         *zap.Logger
	requestLog  *zap.Logger // sampled, for per-request rejections
	pool        *delivery.Pool
	queryParams map[string]string
	now         func() time.Time

	webhooks webhookCounters
}

var _ http.Handler = (*Bridge)(nil)

// New validates cfg, applies its defaults and starts the delivery workers.
// The returned error wraps ErrInvalidConfig and names the invalid field.
func New(cfg Config) (*Bridge, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	params := branch.DefaultQueryParams()
	maps.Copy(params, cfg.QueryParams)

	client := mpclient.New(mpclient.Config{
		Token:          cfg.Token,
		APISecret:      cfg.APISecret,
		ServiceAccount: (*mpclient.ServiceAccount)(cfg.ServiceAccount),
		Residency:      string(cfg.Residency),
		BaseURL:        cfg.BaseURL,
		HTTPClient:     cfg.HTTPClient,
	})

	log := cfg.Logger.Named("branchmp")
	b := &Bridge{
		cfg:         cfg,
		log:         log,
		requestLog:  sampled(log),
		queryParams: params,
		now:         time.Now,
	}
	b.pool = delivery.Start(delivery.Config{
		Client:          client,
		Resolver:        cfg.Resolver,
		ResolverTimeout: cfg.ResolverTimeout,
		EventName:       mapping.EventNamer(cfg.EventName),
		Logger:          log,
		Workers:         cfg.Workers,
		QueueCapacity:   cfg.QueueCapacity,
		BatchSize:       cfg.BatchSize,
		BatchBytes:      cfg.MaxBatchBytes,
		FlushInterval:   cfg.FlushInterval,
		MaxAttempts:     cfg.MaxAttempts,
		MaxAge:          cfg.MaxRetryAge,
		RetryBase:       cfg.RetryBackoff,
		RetryMax:        cfg.RetryMaxBackoff,
		MaxDeadLetters:  cfg.MaxDeadLetters,
	})
	return b, nil
}

// sampled returns a logger that writes the first 10 lines with the same
// message each second and every 100th after that, so a flood of bad
// requests cannot flood the log.
func sampled(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(core zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(core, time.Second, 10, 100)
	}))
}

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

// Middleware wraps next so that requests for the configured Path reach the
// bridge and every other request reaches next.
//
// With gorilla/mux, router.Use(bridge.Middleware) runs only for requests
// that match a registered route, so an unregistered webhook path gets 404
// before the middleware runs. Wrap the whole router instead:
// http.ListenAndServe(addr, bridge.Middleware(router)).
func (b *Bridge) Middleware(next http.Handler) http.Handler {
	path := b.cfg.Path
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			b.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Shutdown stops accepting webhooks (later ones get 503) and waits until
// every queued and in-flight event is delivered or dead-lettered. When ctx
// ends first, it cancels in-flight requests and retries, dead-letters the
// remaining events in memory and returns an error with their count. Those
// events are lost when the process exits. Shutdown is safe to call more
// than once.
func (b *Bridge) Shutdown(ctx context.Context) error {
	return b.pool.Shutdown(ctx)
}

// Stats are counters of a Bridge since it started.
type Stats struct {
	// Webhook responses by status.
	Accepted         int64 // 200, queued
	BadRequest       int64 // 400, not a Branch event
	MethodNotAllowed int64 // 405
	TooLarge         int64 // 413
	UnsupportedMedia int64 // 415
	Unavailable      int64 // 503, queue full or shutting down

	// Delivery.
	Delivered    int64 // events imported by Mixpanel
	DeadLettered int64 // events and profile updates given up on
	Retries      int64 // resends after a failed attempt
	Queued       int   // events waiting for a worker now
}

// Stats returns the bridge's counters.
func (b *Bridge) Stats() Stats {
	ps := b.pool.Stats()
	return Stats{
		Accepted:         b.webhooks.accepted.Load(),
		BadRequest:       b.webhooks.badRequest.Load(),
		MethodNotAllowed: b.webhooks.methodNotAllowed.Load(),
		TooLarge:         b.webhooks.tooLarge.Load(),
		UnsupportedMedia: b.webhooks.unsupportedMedia.Load(),
		Unavailable:      b.webhooks.unavailable.Load(),
		Delivered:        ps.Delivered,
		DeadLettered:     ps.DeadLettered,
		Retries:          ps.Retries,
		Queued:           ps.Queued,
	}
}

type webhookCounters struct {
	accepted, badRequest, methodNotAllowed, tooLarge, unsupportedMedia, unavailable atomic.Int64
}

// DeadLetter is an event or profile update the bridge gave up on.
type DeadLetter struct {
	EventName string
	EventID   string          // Branch's event id, or "" when it had none
	Stage     string          // resolve, map, import, engage set_once, engage set or shutdown
	Reason    string          // cause of the failure
	Status    int             // last HTTP status from Mixpanel, or 0
	Body      string          // last response body from Mixpanel
	Attempts  int             // sends tried
	Payload   json.RawMessage // the Mixpanel event JSON, or nil if mapping never ran
	First     time.Time       // first attempt
	Last      time.Time       // when it was given up on
}

// DeadLetters returns the dead letters kept in memory, oldest first.
func (b *Bridge) DeadLetters() []DeadLetter {
	internal := b.pool.DeadLetters()
	out := make([]DeadLetter, len(internal))
	for i, dl := range internal {
		out[i] = DeadLetter{
			EventName: dl.Event.Name,
			EventID:   dl.Event.ID,
			Stage:     dl.Stage,
			Reason:    dl.Reason,
			Status:    dl.Status,
			Body:      dl.Body,
			Attempts:  dl.Attempts,
			First:     dl.First,
			Last:      dl.Last,
		}
		if dl.Record != nil {
			out[i].Payload, _ = json.Marshal(dl.Record.Event)
		}
	}
	return out
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
