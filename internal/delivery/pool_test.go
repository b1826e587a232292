package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/mpclient"
	"github.com/branchmp/branchmp/internal/mptest"
	"github.com/branchmp/branchmp/internal/spool"
	"go.uber.org/zap"
)

// flakyDone is a spool whose Done fails the first failures times, then
// works.
type flakyDone struct {
	spool.Spool
	failures atomic.Int32
}

func (f *flakyDone) Done(seqs ...uint64) error {
	if f.failures.Add(-1) >= 0 {
		return errors.New("disk full")
	}
	return f.Spool.Done(seqs...)
}

// TestPoolRetriesFailedDone delivers events while the spool's Done fails:
// the next Done must remove them too, so none stays pending.
func TestPoolRetriesFailedDone(t *testing.T) {
	mp, err := mptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	sp := &flakyDone{Spool: spool.NewMemory(spool.MemoryOptions{Capacity: 100, MaxBytes: 1 << 20, MaxDeadLetters: 10, MaxDeadBytes: 1 << 20})}
	sp.failures.Store(2)
	p := Start(Config{
		Client:          mpclient.New(mpclient.Config{Token: "t", BaseURL: mp.URL}),
		Logger:          zap.NewNop(),
		Spool:           sp,
		Resolver:        identity.DeveloperIdentity(),
		ResolverTimeout: time.Second,
		PureResolver:    true,
		Decode:          func(e *spool.Entry) (*branch.Event, error) { return branch.Decode(e.Payload) },
		Workers:         1,
		BatchSize:       1,
		FlushInterval:   time.Millisecond,
		InflightBytes:   1 << 20,
		MaxAttempts:     3,
		MaxAge:          time.Minute,
		RetryBase:       time.Millisecond,
		RetryMax:        time.Millisecond,
	})

	for i := range 4 {
		body := fmt.Sprintf(`{"name":"OPEN","id":%d,"timestamp":1717430400000,"user_data":{"developer_identity":"u%d"}}`, i+1, i)
		ev, err := branch.Decode([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Accept(&spool.Entry{Key: fmt.Sprint("k", i), Received: time.Now(), Payload: []byte(body), Value: ev}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(mp.Events()) < i+1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	if n := len(mp.Events()); n != 4 {
		t.Fatalf("delivered %d events, want 4", n)
	}
	if st := sp.Stats(); st.Pending != 0 {
		t.Errorf("pending after delivery: got %d, want 0 (the failed removals were not tried again)", st.Pending)
	}
}
