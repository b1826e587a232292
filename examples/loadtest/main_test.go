package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The scenarios start this test binary again as the server under test.
	if len(os.Args) > 1 && os.Args[1] == serveCommand {
		os.Exit(serveMain(os.Args[2:]))
	}
	goleak.VerifyTestMain(m)
}

// lockedBuffer collects the children's stderr, which os/exec copies from
// one goroutine per child.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestScenariosEndToEnd(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("loadtest needs Linux")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		wantTrials int
		wantTables []string
	}{
		{
			name:       "intake",
			args:       []string{"-scenario", "intake", "-duration", "1s", "-conns", "2", "-max-requests", "300"},
			wantTrials: 4,
			wantTables: []string{"### Webhook intake", "### Delivery to the Mixpanel stand-in"},
		},
		{
			name:       "latency",
			args:       []string{"-scenario", "latency", "-duration", "1s", "-rate", "100"},
			wantTrials: 3,
			wantTables: []string{"### Webhook intake", "### Delivery to the Mixpanel stand-in"},
		},
		{
			name: "workers",
			args: []string{"-scenario", "workers", "-duration", "1s", "-rate", "100",
				"-worker-counts", "1,2", "-mixpanel-delay", "20ms"},
			wantTrials: 2,
			wantTables: []string{"### Webhook intake", "### Delivery to the Mixpanel stand-in"},
		},
		{
			name: "ratelimit",
			args: []string{"-scenario", "ratelimit", "-duration", "2s", "-rate", "100",
				"-fault-for", "1500ms", "-retry-backoff", "100ms"},
			wantTrials: 1,
			wantTables: []string{"### Webhook intake", "### Events around the fault"},
		},
		{
			name: "outage",
			args: []string{"-scenario", "outage", "-duration", "2s", "-rate", "100",
				"-fault-after", "500ms", "-fault-for", "1s", "-retry-backoff", "100ms", "-queue", "50"},
			wantTrials: 2,
			wantTables: []string{"### Webhook intake", "### Events around the fault"},
		},
		{
			name:       "delivery",
			args:       []string{"-scenario", "delivery", "-prefill", "1000", "-duration", "5s", "-conns", "2"},
			wantTrials: 2,
			wantTables: []string{"### Delivery speed (drain of a full spool)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts, err := parseOptions(tt.args, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			stderr := &lockedBuffer{}
			opts.executable, opts.stderr = self, stderr
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			var out bytes.Buffer
			results, err := run(ctx, opts, &out)
			if err != nil {
				t.Fatalf("run: %v\nstderr:\n%s", err, stderr)
			}
			if len(results) != tt.wantTrials {
				t.Errorf("got %d trials, want %d", len(results), tt.wantTrials)
			}
			for _, table := range tt.wantTables {
				if !strings.Contains(out.String(), table) {
					t.Errorf("output has no %q table:\n%s", table, out.String())
				}
			}
			for _, r := range results {
				checkTrial(t, r)
			}
			if t.Failed() {
				t.Logf("output:\n%s\nstderr:\n%s", out.String(), stderr)
			}
		})
	}
}

// checkTrial checks that a trial accepted webhooks, lost none and drained.
func checkTrial(t *testing.T, r trialResult) {
	t.Helper()
	label := r.spec.label
	if r.accepted == 0 {
		t.Errorf("%s: no webhook got 200", label)
	}
	if r.exit.ShutdownError != "" {
		t.Errorf("%s: shutdown error %q", label, r.exit.ShutdownError)
	}
	if r.spec.child.mode == "bare" {
		if r.lost != -1 {
			t.Errorf("%s: got lost %d, want -1 (not applicable)", label, r.lost)
		}
		return
	}

	if r.lost != 0 {
		t.Errorf("%s: got lost %d, want 0", label, r.lost)
	}
	if r.counts.DistinctIDs != r.accepted {
		t.Errorf("%s: stand-in got %d distinct events, want %d (the 200 responses)", label, r.counts.DistinctIDs, r.accepted)
	}
	if r.counts.MissingIDs != 0 {
		t.Errorf("%s: %d records had no $insert_id", label, r.counts.MissingIDs)
	}
	if f := r.spec.fault; f != nil && faultAnswers(&r.counts, f.status) == 0 {
		t.Errorf("%s: the stand-in sent no %d response", label, f.status)
	}
	if r.spec.child.mode == "naive" {
		return
	}

	s := r.exit.Stats
	if s == nil {
		t.Fatalf("%s: the bridge reported no stats", label)
	}
	if s.Accepted != int64(r.accepted) {
		t.Errorf("%s: bridge accepted %d, want %d (the 200 responses)", label, s.Accepted, r.accepted)
	}
	if s.Pending != 0 {
		t.Errorf("%s: %d events still pending after the drain", label, s.Pending)
	}
	if got, want := s.Unavailable, int64(r.load.statusCount(http.StatusServiceUnavailable)); got != want {
		t.Errorf("%s: bridge counted %d 503 responses, the load generator %d", label, got, want)
	}
}
