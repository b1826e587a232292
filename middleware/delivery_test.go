package branchmp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/fixtures"
	"github.com/branchmp/branchmp/internal/mptest"
)

// postFixtures sends every bundled webhook to url over HTTP and fails the
// test unless each gets 200. It returns the number sent.
func postFixtures(t *testing.T, url string) int {
	t.Helper()
	n := 0
	for _, body := range fixtures.Bodies() {
		resp, err := http.Post(url+"/branch", "application/json", bytes.NewReader(body.Data))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: got %d, want 200", body.Name, resp.StatusCode)
		}
		n++
	}
	for _, target := range fixtures.GetRequests() {
		resp, err := http.Get(url + target)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: got %d, want 200", target, resp.StatusCode)
		}
		n++
	}
	return n
}

// sendEvent queues one GET webhook with the given event id.
func sendEvent(t *testing.T, b *Bridge, id int) {
	t.Helper()
	rec := httptest.NewRecorder()
	target := fmt.Sprintf("/branch?ev=OPEN&id=%d&ts=1717433000000&uid=user-%d&ip=198.51.100.1&camp=spring", id, id)
	b.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("webhook %d: got %d, want 200", id, rec.Code)
	}
}

func requestsTo(mp *mptest.Server, path string) []mptest.Request {
	var out []mptest.Request
	for _, r := range mp.Requests() {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func props(record map[string]any) map[string]any {
	p, _ := record["properties"].(map[string]any)
	return p
}

func TestEndToEndOverLoopback(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.Resolver = identity.ResolverFunc(func(_ context.Context, ids identity.Identifiers) (identity.Identity, error) {
		if ids.DeveloperIdentity == "" {
			return identity.Identity{}, nil
		}
		return identity.Identity{UserID: ids.DeveloperIdentity, Properties: map[string]any{"plan": "pro"}}, nil
	})
	b := newBridge(t, cfg)
	srv := httptest.NewServer(b.Middleware(http.NotFoundHandler()))
	defer srv.Close()

	sent := postFixtures(t, srv.URL)
	// A user whose only event has no IP address: the profile update must
	// carry $ip "0", or Mixpanel would locate the user at the bridge's
	// address.
	resp, err := http.Get(srv.URL + "/branch?ev=OPEN&id=7700&ts=1717433000777&uid=user-no-ip&camp=spring")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET webhook: got %d, want 200", resp.StatusCode)
	}
	sent++
	shutdown(t, b)

	events := mp.Events()
	if len(events) != sent {
		t.Fatalf("events imported: got %d, want %d", len(events), sent)
	}
	for _, r := range requestsTo(mp, "/import") {
		q, _ := url.ParseQuery(r.Query)
		if q.Get("strict") != "1" {
			t.Errorf("import strict: got %q, want 1", q.Get("strict"))
		}
		if r.ContentEncoding != "gzip" {
			t.Errorf("import Content-Encoding: got %q, want gzip", r.ContentEncoding)
		}
		if r.AuthUser != "test-token" {
			t.Errorf("import auth user: got %q, want the token", r.AuthUser)
		}
	}

	byID := map[string]map[string]any{}
	for _, ev := range events {
		p := props(ev)
		byID[fmt.Sprint(p["$insert_id"])] = ev
		for _, key := range []string{"time", "distinct_id", "$insert_id"} {
			if _, ok := p[key]; !ok {
				t.Errorf("event %v has no %s", ev["event"], key)
			}
		}
	}
	install := byID["br-1234567890123456789"]
	if install == nil {
		t.Fatal("attributed iOS install not imported")
	}
	checks := map[string]any{
		"distinct_id":     "user-42",
		"$user_id":        "user-42",
		"branch_event_id": "1234567890123456789",
		"~id":             "467391383381228204",
		"utm_source":      "Facebook",
		"ip":              "203.0.113.7",
	}
	for key, want := range checks {
		if got := props(install)[key]; got != want {
			t.Errorf("install %s: got %#v, want %#v", key, got, want)
		}
	}
	if got := install["event"]; got != "[Branch] install" {
		t.Errorf("install name: got %v, want [Branch] install", got)
	}

	anonymous := byID["br-1234567890123456791"]
	if got := props(anonymous)["distinct_id"]; got != "$device:a1b2c3d4e5f60718" {
		t.Errorf("anonymous distinct_id: got %v, want the Android id device", got)
	}

	for _, r := range requestsTo(mp, "/engage") {
		for _, rec := range r.Records {
			if rec["$token"] != "test-token" {
				t.Errorf("engage $token: got %v, want the token", rec["$token"])
			}
			if rec["$distinct_id"] == "" || strings.HasPrefix(fmt.Sprint(rec["$distinct_id"]), "$device:") {
				t.Errorf("engage for an anonymous user: %v", rec["$distinct_id"])
			}
			if rec["$ip"] == nil {
				t.Errorf("engage without $ip: %v", rec)
			}
		}
	}
	var sawNoIP bool
	for _, p := range mp.Profiles() {
		if p["$distinct_id"] == "user-no-ip" && p["$ip"] == "0" {
			sawNoIP = true
		}
	}
	if !sawNoIP {
		t.Error(`no profile update with $ip "0" for the user without an IP address`)
	}
}

func TestImportAuthUsesAPISecret(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.APISecret = "test-secret"
	b := newBridge(t, cfg)
	sendEvent(t, b, 1)
	shutdown(t, b)

	imports := requestsTo(mp, "/import")
	if len(imports) != 1 {
		t.Fatalf("import requests: got %d, want 1", len(imports))
	}
	if imports[0].AuthUser != "test-secret" {
		t.Errorf("auth user: got %q, want the API secret", imports[0].AuthUser)
	}
}

func TestBatchByCount(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.BatchSize = 3
	cfg.FlushInterval = time.Hour
	b := newBridge(t, cfg)
	for i := range 7 {
		sendEvent(t, b, i+1)
	}
	shutdown(t, b)

	var sizes []int
	for _, r := range requestsTo(mp, "/import") {
		sizes = append(sizes, len(r.Records))
	}
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{1, 3, 3}) {
		t.Errorf("batch sizes: got %v, want [1 3 3]", sizes)
	}
}

func TestBatchByBytes(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.MaxBatchBytes = 2000
	cfg.FlushInterval = time.Hour
	b := newBridge(t, cfg)
	for i := range 10 {
		sendEvent(t, b, i+1)
	}
	shutdown(t, b)

	imports := requestsTo(mp, "/import")
	if len(imports) < 2 {
		t.Fatalf("import requests: got %d, want several", len(imports))
	}
	total := 0
	for _, r := range imports {
		total += len(r.Records)
		if len(r.Body) > cfg.MaxBatchBytes && len(r.Records) > 1 {
			t.Errorf("batch of %d records is %d bytes, over %d", len(r.Records), len(r.Body), cfg.MaxBatchBytes)
		}
	}
	if total != 10 {
		t.Errorf("records: got %d, want 10", total)
	}
}

func TestBatchByTime(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.FlushInterval = 30 * time.Millisecond
	b := newBridge(t, cfg)
	sendEvent(t, b, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mp.WaitEvents(ctx, 1); err != nil {
		t.Fatalf("partial batch not flushed before shutdown: %v", err)
	}
}

func TestRetryTransientFailures(t *testing.T) {
	mp := startMixpanel(t)
	mp.Script("/import",
		mptest.Response{Status: 500, Body: "internal error"},
		mptest.Response{Status: 503, Body: "unavailable"},
		mptest.Response{Status: 429, Body: `{"error":"rate limited","status":0}`},
	)
	b := newBridge(t, testConfig(mp))
	sendEvent(t, b, 1)
	sendEvent(t, b, 2)
	shutdown(t, b)

	imports := requestsTo(mp, "/import")
	if len(imports) != 4 {
		t.Fatalf("import requests: got %d, want 4", len(imports))
	}
	for i, r := range imports[1:] {
		if !bytes.Equal(r.Body, imports[0].Body) {
			t.Errorf("retry %d body differs from the first attempt", i+1)
		}
	}
	if got := b.Stats().Delivered; got != 2 {
		t.Errorf("Delivered: got %d, want 2", got)
	}
	// Three resends of a batch of two events.
	if got := b.Stats().Retries; got != 6 {
		t.Errorf("Retries: got %d, want 6", got)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	mp := startMixpanel(t)
	mp.Script("/import", mptest.Response{
		Status: 429,
		Header: http.Header{"Retry-After": {"1"}},
		Body:   `{"error":"rate limited","status":0}`,
	})
	b := newBridge(t, testConfig(mp))
	start := time.Now()
	sendEvent(t, b, 1)
	shutdown(t, b)

	// A lower bound only: a slow machine makes the wait longer, never
	// shorter.
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond {
		t.Errorf("retried after %v, want at least the 1s of Retry-After", elapsed)
	}
	if got := len(mp.Events()); got != 1 {
		t.Errorf("events: got %d, want 1", got)
	}
}

func TestPartialFailureDeadLettersOnlyFailed(t *testing.T) {
	mp := startMixpanel(t)
	mp.Script("/import", mptest.Response{
		Status: 400,
		Body: `{"code":400,"error":"some data points in the request failed validation",` +
			`"failed_records":[{"index":1,"insert_id":"x","field":"properties.time","message":"too old"}],` +
			`"num_records_imported":2,"status":"Bad Request"}`,
	})
	cfg := testConfig(mp)
	cfg.FlushInterval = time.Hour
	b := newBridge(t, cfg)
	for i := range 3 {
		sendEvent(t, b, i+1)
	}
	shutdown(t, b)

	if got := len(requestsTo(mp, "/import")); got != 1 {
		t.Errorf("import requests: got %d, want 1 (the batch must not be resent)", got)
	}
	dead := deadLetters(t, b)
	if len(dead) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(dead))
	}
	if !strings.Contains(dead[0].Reason, "properties.time") || dead[0].Status != 400 {
		t.Errorf("dead letter: got reason %q status %d, want the failed field and 400", dead[0].Reason, dead[0].Status)
	}
	if len(dead[0].Record) == 0 {
		t.Error("dead letter has no Mixpanel record")
	}
	if got := b.Stats().Delivered; got != 2 {
		t.Errorf("Delivered: got %d, want 2", got)
	}
}

func TestUnparseable400DeadLettersBatch(t *testing.T) {
	mp := startMixpanel(t)
	mp.Script("/import", mptest.Response{Status: 400, Body: "<html>bad</html>"})
	cfg := testConfig(mp)
	cfg.FlushInterval = time.Hour
	b := newBridge(t, cfg)
	sendEvent(t, b, 1)
	sendEvent(t, b, 2)
	shutdown(t, b)

	if got := len(deadLetters(t, b)); got != 2 {
		t.Errorf("dead letters: got %d, want 2", got)
	}
	if got := len(requestsTo(mp, "/import")); got != 1 {
		t.Errorf("import requests: got %d, want 1", got)
	}
}

func TestTooLargeSplitsBatch(t *testing.T) {
	mp := startMixpanel(t)
	mp.Script("/import", mptest.Response{Status: 413, Body: `{"error":"too large"}`})
	cfg := testConfig(mp)
	cfg.FlushInterval = time.Hour
	b := newBridge(t, cfg)
	for i := range 4 {
		sendEvent(t, b, i+1)
	}
	shutdown(t, b)

	var sizes []int
	for _, r := range requestsTo(mp, "/import") {
		sizes = append(sizes, len(r.Records))
	}
	if !slices.Equal(sizes, []int{4, 2, 2}) {
		t.Errorf("request sizes: got %v, want [4 2 2]", sizes)
	}
	if got := mp.UniqueEvents(); got != 4 {
		t.Errorf("unique events: got %d, want 4", got)
	}
}

func TestTooLargeSingleEventDeadLettered(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(func(path string) *mptest.Response {
		if path == "/import" {
			return &mptest.Response{Status: 413}
		}
		return nil
	})
	b := newBridge(t, testConfig(mp))
	sendEvent(t, b, 1)
	shutdown(t, b)

	dead := deadLetters(t, b)
	if len(dead) != 1 || dead[0].Status != 413 {
		t.Fatalf("dead letters: got %+v, want one with status 413", dead)
	}
}

func TestRetryBudgetDeadLetters(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(func(path string) *mptest.Response {
		return &mptest.Response{Status: 502, Body: "bad gateway"}
	})
	cfg := testConfig(mp)
	cfg.MaxAttempts = 3
	b := newBridge(t, cfg)
	sendEvent(t, b, 1)
	shutdown(t, b)

	if got := len(requestsTo(mp, "/import")); got != 3 {
		t.Errorf("import requests: got %d, want 3", got)
	}
	dead := deadLetters(t, b)
	if len(dead) != 1 {
		t.Fatalf("dead letters: got %d, want 1", len(dead))
	}
	if dead[0].Status != 502 || dead[0].Body != "bad gateway" || dead[0].Attempts != 3 {
		t.Errorf("dead letter: got status %d body %q attempts %d, want 502, the body and 3",
			dead[0].Status, dead[0].Body, dead[0].Attempts)
	}
	if dead[0].EventID != "1" {
		t.Errorf("dead letter event id: got %q, want 1", dead[0].EventID)
	}
}

func TestUnauthorizedKeepsEvents(t *testing.T) {
	mp := startMixpanel(t)
	answers := make([]mptest.Response, 5)
	for i := range answers {
		answers[i] = mptest.Response{Status: 401, Body: `{"error":"Invalid credentials","status":0}`}
	}
	mp.Script("/import", answers...)
	cfg := testConfig(mp)
	cfg.MaxAttempts = 2
	b := newBridge(t, cfg)
	sendEvent(t, b, 1)
	shutdown(t, b)

	if got := len(deadLetters(t, b)); got != 0 {
		t.Errorf("dead letters: got %d, want 0", got)
	}
	if got := len(mp.Events()); got != 1 {
		t.Errorf("events: got %d, want 1 once the credentials work", got)
	}
}

func TestEngageZeroIsRetried(t *testing.T) {
	mp := startMixpanel(t)
	mp.Script("/engage", mptest.Response{Status: 200, Body: "0"})
	b := newBridge(t, testConfig(mp))
	sendEvent(t, b, 1)
	shutdown(t, b)

	engages := requestsTo(mp, "/engage")
	// One rejected update, its retry, and the other update; $set_once and
	// $set go out at once, so either may be the rejected one.
	if len(engages) != 3 {
		t.Fatalf("engage requests: got %d, want 3", len(engages))
	}
	first := engages[0]
	var retried bool
	for _, r := range engages[1:] {
		if bytes.Equal(r.Body, first.Body) {
			retried = true
		}
	}
	if !retried {
		t.Error("no engage request repeats the rejected one's body")
	}
	if got := len(deadLetters(t, b)); got != 0 {
		t.Errorf("dead letters: got %d, want 0", got)
	}
}

func TestShutdownDrainsQueue(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(func(path string) *mptest.Response {
		if path == "/import" {
			// A slow but working Mixpanel: respond normally after a delay.
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	})
	cfg := testConfig(mp)
	cfg.BatchSize = 5
	b := newBridge(t, cfg)
	for i := range 40 {
		sendEvent(t, b, i+1)
	}
	shutdown(t, b)

	if got := mp.UniqueEvents(); got != 40 {
		t.Errorf("events delivered: got %d, want 40", got)
	}
}

func TestShutdownDeadlineReportsLoss(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(func(path string) *mptest.Response {
		return &mptest.Response{Status: 200, Delay: 5 * time.Second}
	})
	b := newBridge(t, testConfig(mp))
	for i := range 3 {
		sendEvent(t, b, i+1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := b.Shutdown(ctx)
	if err == nil {
		t.Fatal("Shutdown: got nil, want an error reporting lost events")
	}
	if !strings.Contains(err.Error(), "3 events not delivered") {
		t.Errorf("Shutdown error: got %q, want the count of 3", err)
	}
	dead := deadLetters(t, b)
	if len(dead) != 3 || dead[0].Stage != "shutdown" {
		t.Errorf("dead letters: got %+v, want 3 with stage shutdown", dead)
	}
}

func TestResolverFailuresAreContained(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.ResolverTimeout = 20 * time.Millisecond
	cfg.Resolver = identity.ResolverFunc(func(ctx context.Context, ids identity.Identifiers) (identity.Identity, error) {
		switch ids.DeveloperIdentity {
		case "user-1":
			panic("resolver bug")
		case "user-2":
			<-ctx.Done()
			return identity.Identity{}, ctx.Err()
		case "user-3":
			return identity.Identity{}, identity.ErrNotFound
		}
		return identity.Identity{UserID: ids.DeveloperIdentity}, nil
	})
	b := newBridge(t, cfg)
	for i := range 4 {
		sendEvent(t, b, i+1)
	}
	shutdown(t, b)

	stages := map[string]int{}
	for _, dl := range deadLetters(t, b) {
		stages[dl.Stage]++
	}
	if stages["resolve"] != 2 {
		t.Errorf("resolve dead letters: got %d, want 2 (panic and timeout)", stages["resolve"])
	}
	events := mp.Events()
	if len(events) != 2 {
		t.Fatalf("events: got %d, want 2", len(events))
	}
	for _, ev := range events {
		p := props(ev)
		if p["branch_event_id"] == "3" && p["distinct_id"] != "" {
			t.Errorf("unknown user: distinct_id %v, want anonymous", p["distinct_id"])
		}
	}
}

func TestMixpanelJSONHasNoFloatIDs(t *testing.T) {
	mp := startMixpanel(t)
	b := newBridge(t, testConfig(mp))
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("POST", "/branch",
		bytes.NewReader(fixtures.BodyNamed("install-attributed-ios"))))
	shutdown(t, b)

	imports := requestsTo(mp, "/import")
	if len(imports) != 1 {
		t.Fatalf("import requests: got %d, want 1", len(imports))
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(imports[0].Body, &raw); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(imports[0].Body, []byte(`"~id":"467391383381228204"`)) {
		t.Errorf("link id above 2^53 not sent as an exact string: %s", imports[0].Body)
	}
}

func deadLetters(t *testing.T, b *Bridge) []DeadLetter {
	t.Helper()
	dead, err := b.DeadLetters(0)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	return dead
}

func TestResolverIgnoringContextIsBounded(t *testing.T) {
	mp := startMixpanel(t)
	release := make(chan struct{})
	defer close(release)
	cfg := testConfig(mp)
	cfg.ResolverTimeout = 20 * time.Millisecond
	cfg.MaxAttempts = 2
	cfg.Resolver = identity.ResolverFunc(func(context.Context, identity.Identifiers) (identity.Identity, error) {
		<-release // ignores its context
		return identity.Identity{}, nil
	})
	b := newBridge(t, cfg)
	sendEvent(t, b, 1)

	start := time.Now()
	shutdown(t, b) // fails the test on error
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Shutdown took %v with a stuck resolver", elapsed)
	}
	dead := deadLetters(t, b)
	if len(dead) != 1 || dead[0].Stage != "resolve" || !strings.Contains(dead[0].Reason, "did not return") {
		t.Errorf("dead letters: got %+v, want one resolve timeout", dead)
	}
}

func TestShutdownAccountsForEveryEvent(t *testing.T) {
	for _, durable := range []bool{false, true} {
		name := map[bool]string{false: "memory", true: "bolt"}[durable]
		t.Run(name, func(t *testing.T) {
			mp := startMixpanel(t)
			mp.SetFault(failAll(503))
			cfg := testConfig(mp)
			cfg.MaxAttempts = 1_000_000
			cfg.BatchSize = 5
			if durable {
				cfg.SpoolDir = t.TempDir()
			}
			b, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			const sent = 120
			for i := range sent {
				sendEvent(t, b, i+1)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			err = b.Shutdown(ctx)
			want := fmt.Sprintf("%d events", sent)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Shutdown: got %v, want a count of %s", err, want)
			}
			if again := b.Shutdown(context.Background()); again == nil || again.Error() != err.Error() {
				t.Errorf("second Shutdown: got %v, want the first result %v", again, err)
			}
			if b.Ready() == nil {
				t.Error("Ready after Shutdown: got nil, want an error")
			}

			if !durable {
				if got := len(deadLetters(t, b)); got != sent {
					t.Errorf("dead letters: got %d, want %d", got, sent)
				}
				return
			}
			mp.SetFault(nil)
			b2 := newBridge(t, cfg)
			if got := b2.Stats().Pending; got != sent {
				t.Errorf("pending after restart: got %d, want %d", got, sent)
			}
		})
	}
}

func TestPartialFailureMatching(t *testing.T) {
	tests := []struct {
		name         string
		failed       string
		wantDead     int
		wantDeadID   string
		wantImported int64
	}{
		{
			name:     "by insert id",
			failed:   `{"index":0,"insert_id":"br-2","field":"properties.time","message":"too old"}`,
			wantDead: 1, wantDeadID: "2", wantImported: 2,
		},
		{
			name:     "index out of range",
			failed:   `{"index":7,"insert_id":"unknown","field":"f","message":"m"}`,
			wantDead: 3, wantImported: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mp := startMixpanel(t)
			mp.Script("/import", mptest.Response{
				Status: 400,
				Body:   `{"code":400,"error":"x","failed_records":[` + tt.failed + `],"status":"Bad Request"}`,
			})
			cfg := testConfig(mp)
			cfg.FlushInterval = time.Hour
			b := newBridge(t, cfg)
			for i := range 3 {
				sendEvent(t, b, i+1)
			}
			shutdown(t, b)

			dead := deadLetters(t, b)
			if len(dead) != tt.wantDead {
				t.Fatalf("dead letters: got %d, want %d", len(dead), tt.wantDead)
			}
			if tt.wantDeadID != "" && dead[0].EventID != tt.wantDeadID {
				t.Errorf("dead letter event id: got %q, want %q", dead[0].EventID, tt.wantDeadID)
			}
			if got := b.Stats().Delivered; got != tt.wantImported {
				t.Errorf("Delivered: got %d, want %d", got, tt.wantImported)
			}
		})
	}
}

func TestFullSpoolFlushesPartialBatch(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.QueueCapacity = 5
	cfg.FlushInterval = time.Hour
	b := newBridge(t, cfg)
	for i := range 5 {
		sendEvent(t, b, i+1)
	}
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/branch?ev=OPEN&id=99", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("sixth webhook: got %d, want 503", rec.Code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mp.WaitEvents(ctx, 5); err != nil {
		t.Fatalf("the full spool did not flush its partial batch: %v", err)
	}
}
