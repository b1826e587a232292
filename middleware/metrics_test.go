package branchmp

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metricValue returns the value of the named metric whose labels include
// every pair in labels, summing counters, gauges and histogram counts.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			case m.Histogram != nil:
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func TestMetricsCountWebhooksAndDelivery(t *testing.T) {
	mp := startMixpanel(t)
	reg := prometheus.NewRegistry()
	cfg := testConfig(mp)
	cfg.Metrics = reg
	b := newBridge(t, cfg)
	srv := httptest.NewServer(b)
	defer srv.Close()

	sent := postFixtures(t, srv.URL)
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("POST", "/branch", strings.NewReader("[]")))
	shutdown(t, b)

	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"branchmp_webhooks_total", map[string]string{"outcome": "accepted", "status": "200"}, float64(sent)},
		{"branchmp_webhooks_total", map[string]string{"outcome": "bad_request", "status": "400"}, 1},
		{"branchmp_events_accepted_total", nil, float64(sent)},
		{"branchmp_events_delivered_total", nil, float64(sent)},
		{"branchmp_events_dead_lettered_total", nil, 0},
		{"branchmp_spool_events", nil, 0},
	}
	for _, tt := range tests {
		if got := metricValue(t, reg, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v: got %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}

	positive := []struct {
		name   string
		labels map[string]string
	}{
		{"branchmp_batch_size", nil},
		{"branchmp_mixpanel_request_duration_seconds", map[string]string{"endpoint": "import", "status_class": "2xx"}},
		{"branchmp_mixpanel_request_duration_seconds", map[string]string{"endpoint": "engage", "status_class": "2xx"}},
		{"branchmp_resolver_duration_seconds", map[string]string{"outcome": "found"}},
		{"branchmp_resolver_duration_seconds", map[string]string{"outcome": "unknown"}},
	}
	for _, tt := range positive {
		if got := metricValue(t, reg, tt.name, tt.labels); got <= 0 {
			t.Errorf("%s%v: got %v, want observations", tt.name, tt.labels, got)
		}
	}
}

func TestMetricsRegistryConflictNamesField(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(startMixpanel(t))
	cfg.Metrics = reg
	newBridge(t, cfg)
	second, err := New(cfg)
	if err == nil {
		shutdown(t, second)
	}
	if err == nil || !strings.Contains(err.Error(), "Metrics") {
		t.Errorf("second bridge on one registry: got %v, want an error naming Metrics", err)
	}

	// Bridges that each wrap the registry with their own label coexist.
	shared := prometheus.NewRegistry()
	for _, name := range []string{"first", "second"} {
		wrapped := cfg
		wrapped.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"bridge": name}, shared)
		newBridge(t, wrapped) // fails the test if New returns an error
	}
}
