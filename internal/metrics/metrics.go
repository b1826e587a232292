// Package metrics records the bridge's latency and size distributions as
// Prometheus histograms. Counters and gauges are not kept here: the public
// package exports them from its own counters when it is scraped, so every
// number has one source.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Observer receives the measurements that only the delivery pool makes.
// Implementations must be safe for concurrent use.
type Observer interface {
	// BatchSize records the number of events in one /import request.
	BatchSize(n int)
	// MixpanelRequest records one request to endpoint ("import" or
	// "engage"); status is 0 when no response arrived.
	MixpanelRequest(endpoint string, status int, d time.Duration)
	// Resolve records one resolver call; outcome is "found", "unknown" or
	// "error".
	Resolve(outcome string, d time.Duration)
}

// Nop is an Observer that records nothing.
type Nop struct{}

func (Nop) BatchSize(int)                              {}
func (Nop) MixpanelRequest(string, int, time.Duration) {}
func (Nop) Resolve(string, time.Duration)              {}

// Histograms is an Observer backed by Prometheus histograms.
type Histograms struct {
	batchSize *prometheus.HistogramVec
	request   *prometheus.HistogramVec
	resolve   *prometheus.HistogramVec
}

// NewHistograms creates the histograms and registers them with reg.
func NewHistograms(reg prometheus.Registerer) (*Histograms, error) {
	h := &Histograms{
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "branchmp_batch_size",
			Help:    "Events in one Mixpanel /import request.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 1500, 2000},
		}, nil),
		request: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "branchmp_mixpanel_request_duration_seconds",
			Help:    "Duration of Mixpanel requests by endpoint and status class (2xx, 4xx, 5xx, or error when no response arrived).",
			Buckets: prometheus.DefBuckets,
		}, []string{"endpoint", "status_class"}),
		resolve: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "branchmp_resolver_duration_seconds",
			Help:    "Duration of identity resolver calls by outcome (found, unknown, error).",
			Buckets: []float64{.0005, .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"outcome"}),
	}
	for _, c := range []prometheus.Collector{h.batchSize, h.request, h.resolve} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// BatchSize implements Observer.
func (h *Histograms) BatchSize(n int) {
	h.batchSize.WithLabelValues().Observe(float64(n))
}

// MixpanelRequest implements Observer.
func (h *Histograms) MixpanelRequest(endpoint string, status int, d time.Duration) {
	h.request.WithLabelValues(endpoint, StatusClass(status)).Observe(d.Seconds())
}

// Resolve implements Observer.
func (h *Histograms) Resolve(outcome string, d time.Duration) {
	h.resolve.WithLabelValues(outcome).Observe(d.Seconds())
}

// StatusClass returns "2xx", "4xx" and so on for an HTTP status, or
// "error" for 0.
func StatusClass(status int) string {
	if status <= 0 {
		return "error"
	}
	return strconv.Itoa(status/100) + "xx"
}
