package delivery

import (
	"math/rand/v2"
	"sync"
	"time"
)

// backoff returns the delay before retry attempt n (1-based): full jitter
// over an exponential window starting at base and capped at limit.
func backoff(n int, base, limit time.Duration) time.Duration {
	window := base
	for i := 1; i < n && window < limit; i++ {
		window *= 2
	}
	window = min(window, limit)
	return time.Duration(rand.Int64N(int64(window)) + 1)
}

// gate holds every sender back until a time set by a rate-limit response, so
// one 429 slows all workers instead of only the one that saw it.
type gate struct {
	mu    sync.Mutex
	until time.Time
}

// delay pushes the gate's opening to at least now+d.
func (g *gate) delay(now time.Time, d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if at := now.Add(d); at.After(g.until) {
		g.until = at
	}
}

// wait returns how long a sender must still wait at now.
func (g *gate) wait(now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.until.Sub(now)
}
