package branchmp

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/branchmp/branchmp/internal/metrics"
)

// registerMetrics registers the bridge's collectors with reg and returns
// the observer for the delivery pool.
func (b *Bridge) registerMetrics(reg prometheus.Registerer) (metrics.Observer, error) {
	if reg == nil {
		return metrics.Nop{}, nil
	}
	h, err := metrics.NewHistograms(reg)
	if err != nil {
		return nil, err
	}
	if err := reg.Register(&collector{bridge: b}); err != nil {
		return nil, err
	}
	return h, nil
}

// webhookOutcome names one value of the outcome label of
// branchmp_webhooks_total.
type webhookOutcome struct {
	outcome string
	status  string
	value   func(Stats) int64
}

var webhookOutcomes = []webhookOutcome{
	{"accepted", "200", func(s Stats) int64 { return s.Accepted }},
	{"duplicate", "200", func(s Stats) int64 { return s.Duplicates }},
	{"robot", "200", func(s Stats) int64 { return s.Robots }},
	{"bad_request", "400", func(s Stats) int64 { return s.BadRequest }},
	{"unauthorized", "401", func(s Stats) int64 { return s.Unauthorized }},
	{"forbidden", "403", func(s Stats) int64 { return s.Forbidden }},
	{"method_not_allowed", "405", func(s Stats) int64 { return s.MethodNotAllowed }},
	{"too_large", "413", func(s Stats) int64 { return s.TooLarge }},
	{"unsupported_media", "415", func(s Stats) int64 { return s.UnsupportedMedia }},
	{"unavailable", "503", func(s Stats) int64 { return s.Unavailable }},
}

var (
	descWebhooks = prometheus.NewDesc("branchmp_webhooks_total",
		"Webhook requests by outcome and response status.", []string{"outcome", "status"}, nil)
	descAccepted = prometheus.NewDesc("branchmp_events_accepted_total",
		"Events stored for delivery.", nil, nil)
	descDelivered = prometheus.NewDesc("branchmp_events_delivered_total",
		"Events imported by Mixpanel.", nil, nil)
	descRetried = prometheus.NewDesc("branchmp_events_retried_total",
		"Events resent to Mixpanel or to the resolver after a failed attempt; a resent batch of n events counts n.", nil, nil)
	descDeadLettered = prometheus.NewDesc("branchmp_events_dead_lettered_total",
		"Events and profile updates given up on.", nil, nil)
	descDeduplicated = prometheus.NewDesc("branchmp_events_deduplicated_total",
		"Redeliveries of an event within the dedup window, not sent again.", nil, nil)
	descPending = prometheus.NewDesc("branchmp_spool_events",
		"Events accepted and not yet delivered or dead-lettered.", nil, nil)
	descSpoolBytes = prometheus.NewDesc("branchmp_spool_bytes",
		"Estimated size of the pending events in the spool.", nil, nil)
	descDeadLetters = prometheus.NewDesc("branchmp_dead_letters",
		"Dead letters kept for inspection and replay.", nil, nil)
	descReady = prometheus.NewDesc("branchmp_ready",
		"1 when the bridge can deliver, 0 while Mixpanel rejects the credentials or the spool cannot be written.", nil, nil)
	descCacheHits = prometheus.NewDesc("branchmp_resolver_cache_hits_total",
		"Resolver lookups answered by the cache.", nil, nil)
	descCacheMisses = prometheus.NewDesc("branchmp_resolver_cache_misses_total",
		"Resolver lookups that called the wrapped resolver.", nil, nil)
)

// collector exports the bridge's counters when Prometheus scrapes, so the
// numbers are the ones Stats returns.
type collector struct {
	bridge *Bridge
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descWebhooks, descAccepted, descDelivered, descRetried, descDeadLettered,
		descDeduplicated, descPending, descSpoolBytes, descDeadLetters, descReady,
		descCacheHits, descCacheMisses,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.bridge.Stats()
	for _, o := range webhookOutcomes {
		ch <- prometheus.MustNewConstMetric(descWebhooks, prometheus.CounterValue, float64(o.value(s)), o.outcome, o.status)
	}
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(descAccepted, s.Accepted)
	counter(descDelivered, s.Delivered)
	counter(descRetried, s.Retries)
	counter(descDeadLettered, s.DeadLettered)
	counter(descDeduplicated, s.Duplicates)
	gauge(descPending, float64(s.Pending))
	gauge(descSpoolBytes, float64(s.SpoolBytes))
	gauge(descDeadLetters, float64(s.DeadLetters))
	ready := 0.0
	if c.bridge.Ready() == nil {
		ready = 1
	}
	gauge(descReady, ready)
	if hits, misses, ok := c.bridge.cacheStats(); ok {
		counter(descCacheHits, hits)
		counter(descCacheMisses, misses)
	}
}
