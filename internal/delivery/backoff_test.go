package delivery

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBackoffStaysInWindow(t *testing.T) {
	base, limit := 2*time.Second, 60*time.Second
	tests := []struct {
		attempt    int
		wantWindow time.Duration
	}{
		{1, 2 * time.Second},
		{2, 4 * time.Second},
		{3, 8 * time.Second},
		{5, 32 * time.Second},
		{6, 60 * time.Second},
		{50, 60 * time.Second},
	}
	for _, tt := range tests {
		var maxSeen time.Duration
		for range 2000 {
			d := backoff(tt.attempt, base, limit)
			if d <= 0 || d > tt.wantWindow {
				t.Fatalf("attempt %d: got %v, want within (0, %v]", tt.attempt, d, tt.wantWindow)
			}
			maxSeen = max(maxSeen, d)
		}
		// Full jitter: over 2000 draws the largest lands in the top half.
		if maxSeen < tt.wantWindow/2 {
			t.Errorf("attempt %d: largest of 2000 draws %v, want above %v", tt.attempt, maxSeen, tt.wantWindow/2)
		}
	}
}

func TestGateDelaysOnlyForward(t *testing.T) {
	var g gate
	now := time.Unix(1000, 0)
	if d := g.wait(now); d > 0 {
		t.Fatalf("new gate: got wait %v, want none", d)
	}
	g.delay(now, 10*time.Second)
	g.delay(now, 2*time.Second) // a shorter delay must not shorten the wait
	if d := g.wait(now); d != 10*time.Second {
		t.Errorf("wait: got %v, want 10s", d)
	}
	if d := g.wait(now.Add(11 * time.Second)); d > 0 {
		t.Errorf("wait after the delay: got %v, want none", d)
	}
}
