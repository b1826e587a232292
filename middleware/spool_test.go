package branchmp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/mptest"
)

// userResolver resolves every developer identity to the user id that
// current returns, so a test can change its result between runs.
func userResolver(current *atomic.Value) identity.Resolver {
	return identity.ResolverFunc(func(context.Context, identity.Identifiers) (identity.Identity, error) {
		return identity.Identity{UserID: current.Load().(string)}, nil
	})
}

func failAll(status int) func(string) *mptest.Response {
	return func(string) *mptest.Response { return &mptest.Response{Status: status, Body: "down"} }
}

func TestSpoolSurvivesRestart(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(failAll(503))
	var user atomic.Value
	user.Store("first-user")

	cfg := testConfig(mp)
	cfg.SpoolDir = t.TempDir()
	cfg.Resolver = userResolver(&user)
	cfg.MaxAttempts = 1_000_000 // nothing may be dead-lettered before the restart
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		sendEvent(t, b, i+1)
	}
	// Wait until the events were mapped and sent at least once, so their
	// records are frozen.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mp.WaitRequests(ctx, "/import", 1); err != nil {
		t.Fatal(err)
	}
	firstRecords := recordsByInsertID(t, requestsTo(mp, "/import")[0].Records)

	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	err = b.Shutdown(short)
	if err == nil || !strings.Contains(err.Error(), "left in the spool") {
		t.Fatalf("Shutdown: got %v, want events left in the spool", err)
	}

	// A restart with a resolver that now returns another user must send
	// the frozen records: the same bytes as the first attempt.
	user.Store("second-user")
	mp.SetFault(nil)
	b2 := newBridge(t, cfg)
	if got := b2.Stats().Pending; got != 5 {
		t.Errorf("pending after restart: got %d, want 5", got)
	}
	shutdown(t, b2)

	if got := mp.UniqueEvents(); got != 5 {
		t.Fatalf("unique events: got %d, want 5", got)
	}
	delivered := recordsByInsertID(t, mp.Events())
	for id, first := range firstRecords {
		if delivered[id] != first {
			t.Errorf("event %s after restart:\n got %s\nwant %s", id, delivered[id], first)
		}
	}
	for _, ev := range mp.Events() {
		if got := props(ev)["distinct_id"]; got != "first-user" {
			t.Errorf("distinct_id after restart: got %v, want the frozen first-user", got)
		}
	}
}

// TestSpoolRestartDefaultResolver checks that the default resolver's
// records, which are not frozen, are mapped again after a restart into the
// bytes of the first attempt.
func TestSpoolRestartDefaultResolver(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(failAll(503))
	cfg := testConfig(mp)
	cfg.SpoolDir = t.TempDir()
	cfg.MaxAttempts = 1_000_000
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		sendEvent(t, b, i+1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mp.WaitRequests(ctx, "/import", 1); err != nil {
		t.Fatal(err)
	}
	firstRecords := recordsByInsertID(t, requestsTo(mp, "/import")[0].Records)
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if err := b.Shutdown(short); err == nil {
		t.Fatal("Shutdown: got nil, want events left in the spool")
	}

	mp.SetFault(nil)
	b2 := newBridge(t, cfg)
	shutdown(t, b2)

	if got := mp.UniqueEvents(); got != 5 {
		t.Fatalf("unique events: got %d, want 5", got)
	}
	delivered := recordsByInsertID(t, mp.Events())
	for id, first := range firstRecords {
		if delivered[id] != first {
			t.Errorf("event %s after restart:\n got %s\nwant %s", id, delivered[id], first)
		}
	}
}

func TestDuplicateWebhookSentOnce(t *testing.T) {
	for _, dir := range []string{"", "spool"} {
		name := "memory"
		if dir != "" {
			name = "bolt"
		}
		t.Run(name, func(t *testing.T) {
			mp := startMixpanel(t)
			cfg := testConfig(mp)
			if dir != "" {
				cfg.SpoolDir = t.TempDir()
			}
			b := newBridge(t, cfg)
			sendEvent(t, b, 7)
			sendEvent(t, b, 7)
			sendEvent(t, b, 8)
			shutdown(t, b)

			if got := len(mp.Events()); got != 2 {
				t.Errorf("events sent: got %d, want 2", got)
			}
			if got := b.Stats().Duplicates; got != 1 {
				t.Errorf("Duplicates: got %d, want 1", got)
			}
		})
	}
}

func TestDedupCanBeTurnedOff(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.DedupWindow = -1
	b := newBridge(t, cfg)
	sendEvent(t, b, 7)
	sendEvent(t, b, 7)
	shutdown(t, b)
	if got := len(mp.Events()); got != 2 {
		t.Errorf("events sent: got %d, want 2", got)
	}
}

func TestFullDiskSpoolGets503(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(failAll(503))
	cfg := testConfig(mp)
	cfg.SpoolDir = t.TempDir()
	cfg.SpoolMaxBytes = 1 << 20
	b := newBridge(t, cfg)

	statuses := map[int]int{}
	padding := strings.Repeat("x", 200<<10)
	for i := range 10 {
		body := fmt.Sprintf(`{"name":"OPEN","id":"%d","custom_data":{"pad":"%s"}}`, i+1, padding)
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("POST", "/branch", strings.NewReader(body)))
		statuses[rec.Code]++
	}
	if statuses[503] == 0 || statuses[200] == 0 {
		t.Errorf("statuses: got %v, want some 200 then 503 once the spool is full", statuses)
	}
}

func TestOutageFillsMemoryNotSpool(t *testing.T) {
	for _, durable := range []bool{false, true} {
		name := map[bool]string{false: "memory", true: "bolt"}[durable]
		t.Run(name, func(t *testing.T) {
			mp := startMixpanel(t)
			mp.SetFault(failAll(503))
			cfg := testConfig(mp)
			cfg.QueueCapacity = 10
			cfg.MaxAttempts = 1_000_000
			if durable {
				cfg.SpoolDir = t.TempDir()
			}
			b := newBridge(t, cfg)

			accepted := 0
			for i := range 30 {
				rec := httptest.NewRecorder()
				b.ServeHTTP(rec, httptest.NewRequest("GET", "/branch?ev=OPEN&id=9"+string(rune('a'+i)), nil))
				if rec.Code == http.StatusOK {
					accepted++
				}
			}
			want := 10
			if durable {
				want = 30 // the spool takes what memory cannot
			}
			if accepted != want {
				t.Errorf("accepted during the outage: got %d, want %d", accepted, want)
			}

			mp.SetFault(nil)
			shutdown(t, b)
			if got := mp.UniqueEvents(); got != want {
				t.Errorf("delivered after the outage: got %d, want %d", got, want)
			}
		})
	}
}

func TestRateLimitSlowsEveryWorker(t *testing.T) {
	mp := startMixpanel(t)
	var stormEnd atomic.Int64
	mp.SetFault(func(path string) *mptest.Response {
		if path != "/import" {
			return nil
		}
		now := time.Now().UnixNano()
		stormEnd.CompareAndSwap(0, now+int64(300*time.Millisecond))
		if now < stormEnd.Load() {
			return &mptest.Response{Status: 429, Header: http.Header{"Retry-After": {"1"}}}
		}
		return nil
	})
	cfg := testConfig(mp)
	cfg.Workers = 4
	cfg.BatchSize = 1
	b := newBridge(t, cfg)
	for i := range 8 {
		sendEvent(t, b, i+1)
	}
	shutdown(t, b)

	// With backoff of at most 20ms per worker, 4 workers would each see
	// many 429s during the 300ms storm. The shared wait of Retry-After
	// lets at most one request per worker through.
	rateLimited := 0
	for _, r := range requestsTo(mp, "/import") {
		if r.Status == http.StatusTooManyRequests {
			rateLimited++
		}
	}
	if rateLimited > cfg.Workers {
		t.Errorf("429 responses: got %d, want at most %d", rateLimited, cfg.Workers)
	}
	if got := mp.UniqueEvents(); got != 8 {
		t.Errorf("events: got %d, want 8", got)
	}
}

func TestReplayResendsSameTuple(t *testing.T) {
	mp := startMixpanel(t)
	mp.Script("/import", mptest.Response{Status: 400, Body: "not json"})
	cfg := testConfig(mp)
	cfg.SpoolDir = t.TempDir()
	b := newBridge(t, cfg)
	sendEvent(t, b, 1)
	waitFor(t, func() bool { return b.Stats().DeadLetters == 1 })

	dead := deadLetters(t, b)
	if dead[0].EventID != "1" || dead[0].Stage != "import" || dead[0].Status != 400 || len(dead[0].Webhook) == 0 {
		t.Fatalf("dead letter: got %+v", dead[0])
	}
	if n, err := b.Replay(dead[0].ID); err != nil || n != 1 {
		t.Fatalf("Replay: got %d, %v, want 1", n, err)
	}
	waitFor(t, func() bool { return len(mp.Events()) == 1 })

	// Dead-letter it again by hand and replay: the same tuple goes out.
	mp.Script("/import", mptest.Response{Status: 400, Body: "not json"})
	sendEvent(t, b, 2)
	waitFor(t, func() bool { return b.Stats().DeadLetters == 1 })
	if n, _ := b.Replay(); n != 1 {
		t.Fatalf("Replay all: got %d, want 1", n)
	}
	shutdown(t, b)

	imports := requestsTo(mp, "/import")
	if string(imports[0].Body) != string(imports[1].Body) {
		t.Error("replay of event 1 sent other bytes than the first attempt")
	}
	if got := mp.UniqueEvents(); got != 2 {
		t.Errorf("unique events: got %d, want 2", got)
	}
}

func TestPurgeDeletesDeadLetters(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(func(path string) *mptest.Response {
		return &mptest.Response{Status: 400, Body: "not json"}
	})
	b := newBridge(t, testConfig(mp))
	sendEvent(t, b, 1)
	sendEvent(t, b, 2)
	waitFor(t, func() bool { return b.Stats().DeadLetters == 2 })

	dead := deadLetters(t, b)
	if n, err := b.Purge(dead[0].ID); err != nil || n != 1 {
		t.Fatalf("Purge one: got %d, %v, want 1", n, err)
	}
	if n, _ := b.Purge(); n != 1 {
		t.Errorf("Purge all: got %d, want 1", n)
	}
	if got := len(deadLetters(t, b)); got != 0 {
		t.Errorf("dead letters after Purge: got %d, want 0", got)
	}
}

func TestReadyReportsRejectedCredentials(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(failAll(401))
	b := newBridge(t, testConfig(mp))
	if err := b.Ready(); err != nil {
		t.Fatalf("Ready before any send: got %v, want nil", err)
	}
	sendEvent(t, b, 1)
	waitFor(t, func() bool { return b.Ready() != nil })

	mp.SetFault(nil)
	waitFor(t, func() bool { return b.Ready() == nil })
	shutdown(t, b)
	if got := len(mp.Events()); got != 1 {
		t.Errorf("events after the credentials work: got %d, want 1", got)
	}
}

func TestShutdownMidRetryKeepsEvents(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(failAll(500))
	cfg := testConfig(mp)
	cfg.SpoolDir = t.TempDir()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sendEvent(t, b, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mp.WaitRequests(ctx, "/import", 2) // now retrying

	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := b.Shutdown(short); err == nil {
		t.Error("Shutdown during retries: got nil, want an error with the count left")
	}

	mp.SetFault(nil)
	b2 := newBridge(t, cfg)
	if got := len(deadLetters(t, b2)); got != 0 {
		t.Errorf("dead letters: got %d, want 0 with a durable spool", got)
	}
	shutdown(t, b2)
	if got := mp.UniqueEvents(); got != 1 {
		t.Errorf("events after restart: got %d, want 1", got)
	}
}

// recordsByInsertID encodes each imported record as JSON, keyed by its
// $insert_id. encoding/json sorts map keys, so equal records encode equally.
func recordsByInsertID(t *testing.T, records []map[string]any) map[string]string {
	t.Helper()
	out := make(map[string]string, len(records))
	for _, rec := range records {
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprint(props(rec)["$insert_id"])] = string(data)
	}
	return out
}

func TestEventsWithoutIDOrTimeNotDeduplicated(t *testing.T) {
	mp := startMixpanel(t)
	b := newBridge(t, testConfig(mp))
	for range 2 {
		for _, target := range []string{
			"/branch?ev=OPEN&idfa=AAAA-1&campaign=spring",       // no id, no time: both kept
			"/branch?ev=OPEN&idfa=AAAA-1&ts=1717433000000",      // a time: the copy is a redelivery
			"/branch?ev=OPEN&id=77&idfa=AAAA-1&campaign=spring", // an id: the copy is a redelivery
		} {
			rec := httptest.NewRecorder()
			b.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
			if rec.Code != 200 {
				t.Fatalf("%s: got %d, want 200", target, rec.Code)
			}
		}
	}
	shutdown(t, b)
	if got := len(mp.Events()); got != 4 {
		t.Errorf("events sent: got %d, want 4", got)
	}
	if got := b.Stats().Duplicates; got != 2 {
		t.Errorf("Duplicates: got %d, want 2", got)
	}
}

func TestSpoolFeedBoundedByMemory(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.SpoolDir = t.TempDir()
	cfg.QueueMaxBytes = 1 << 20 // one 200 kB body counts more than this
	b := newBridge(t, cfg)

	padding := strings.Repeat("x", 200<<10)
	for i := range 4 {
		body := fmt.Sprintf(`{"name":"OPEN","id":"%d","timestamp":1717433000000,"custom_data":{"pad":"%s"}}`, i+1, padding)
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("POST", "/branch", strings.NewReader(body)))
		if rec.Code != 200 {
			t.Fatalf("webhook %d: got %d, want 200", i+1, rec.Code)
		}
	}
	shutdown(t, b)

	imports := requestsTo(mp, "/import")
	for _, r := range imports {
		if len(r.Records) != 1 {
			t.Errorf("batch of %d events, want 1: only one large event may be held at once", len(r.Records))
		}
	}
	if got := mp.UniqueEvents(); got != 4 {
		t.Errorf("events: got %d, want 4", got)
	}
}
