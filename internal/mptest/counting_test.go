package mptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const importBody = `[
	{"event": "a", "properties": {"$insert_id": "id-1"}},
	{"event": "b", "properties": {"$insert_id": "id-2"}},
	{"event": "b", "properties": {"$insert_id": "id-2"}},
	{"event": "c", "properties": {}}
]`

// post sends body to path, gzip-compressed and with basic auth when auth
// is set, and returns the response with its body closed.
func post(t *testing.T, client *http.Client, url, path, body string, auth bool) (*http.Response, error) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(body))
	zw.Close()
	req, err := http.NewRequest(http.MethodPost, url+path, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Encoding", "gzip")
	if auth {
		req.SetBasicAuth("token", "")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

func startCounting(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.CountOnly = true
	s, err := StartWith(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCountOnlyCounts(t *testing.T) {
	s := startCounting(t, Options{})
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	for _, tt := range []struct {
		path, body string
		auth       bool
		want       int
	}{
		{"/import", importBody, true, http.StatusOK},
		{"/import", importBody, false, http.StatusUnauthorized},
		{"/engage", `[{"$distinct_id": "u1"}, {"$distinct_id": "u2"}]`, false, http.StatusOK},
		{"/import", `not json`, true, http.StatusBadRequest},
		{"/other", `[]`, true, http.StatusNotFound},
	} {
		resp, err := post(t, client, s.URL, tt.path, tt.body, tt.auth)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tt.want {
			t.Errorf("%s: got status %d, want %d", tt.path, resp.StatusCode, tt.want)
		}
	}

	c := s.Counts()
	if c.Events != 4 {
		t.Errorf("got Events %d, want 4", c.Events)
	}
	if c.DistinctIDs != 2 {
		t.Errorf("got DistinctIDs %d, want 2", c.DistinctIDs)
	}
	if c.MissingIDs != 1 {
		t.Errorf("got MissingIDs %d, want 1", c.MissingIDs)
	}
	if c.Profiles != 2 {
		t.Errorf("got Profiles %d, want 2", c.Profiles)
	}
	wantImports := map[int]int{http.StatusOK: 1, http.StatusUnauthorized: 1, http.StatusBadRequest: 1}
	for status, n := range wantImports {
		if got := c.Requests["/import"][status]; got != n {
			t.Errorf("got %d /import requests answered %d, want %d", got, status, n)
		}
	}
	if b := c.Batches; b.Count != 1 || b.Min != 4 || b.Max != 4 || b.Mean() != 4 {
		t.Errorf("got batches %+v, want one of 4 records", b)
	}
	if got := c.Batches.Histogram[1]; got != 1 {
		t.Errorf("got %d batches in the bucket up to 10, want 1", got)
	}
	if c.FirstImport.IsZero() || c.LastImport.Before(c.FirstImport) {
		t.Errorf("got imports from %v to %v, want a first and a later last", c.FirstImport, c.LastImport)
	}
	if c.Connections < 1 {
		t.Errorf("got %d connections, want at least 1", c.Connections)
	}
	if !s.HasInsertID("id-2") {
		t.Error("HasInsertID(id-2) = false, want true")
	}
	if s.HasInsertID("id-3") {
		t.Error("HasInsertID(id-3) = true, want false")
	}
	if got := s.UniqueEvents(); got != 2 {
		t.Errorf("got UniqueEvents %d, want 2", got)
	}
	if got := s.Requests(); got != nil {
		t.Errorf("got %d recorded requests, want none", len(got))
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.WaitEvents(ctx, 4); err != nil {
		t.Errorf("WaitEvents(4): %v", err)
	}
	if err := s.WaitRequests(ctx, "/engage", 1); err != nil {
		t.Errorf("WaitRequests(/engage, 1): %v", err)
	}
}

func TestFaultSchedule(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name           string
		fault          Fault
		wantStatus     int
		wantRetryAfter string
	}{
		{"active 429", Fault{From: now.Add(-time.Second), Until: now.Add(time.Hour), Status: 429, RetryAfter: 1500 * time.Millisecond}, 429, "2"},
		{"active 503", Fault{From: now.Add(-time.Second), Until: now.Add(time.Hour), Status: 503}, 503, ""},
		{"ended", Fault{From: now.Add(-time.Hour), Until: now.Add(-time.Minute), Status: 503}, 200, ""},
		{"not started", Fault{From: now.Add(time.Hour), Until: now.Add(2 * time.Hour), Status: 503}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startCounting(t, Options{})
			s.AddFault(tt.fault)
			client := &http.Client{Timeout: 5 * time.Second}
			defer client.CloseIdleConnections()

			resp, err := post(t, client, s.URL, "/import", importBody, true)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("got status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("got Retry-After %q, want %q", got, tt.wantRetryAfter)
			}
			wantEvents := 0
			if tt.wantStatus == http.StatusOK {
				wantEvents = 4
			}
			if got := s.Counts().Events; got != wantEvents {
				t.Errorf("got Events %d, want %d", got, wantEvents)
			}
		})
	}
}

func TestFaultInRecordingMode(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.AddFault(Fault{From: time.Now().Add(-time.Second), Until: time.Now().Add(time.Hour), Status: 503})
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	if _, err := post(t, client, s.URL, "/import", importBody, true); err != nil {
		t.Fatal(err)
	}
	requests := s.Requests()
	if len(requests) != 1 {
		t.Fatalf("got %d requests, want 1", len(requests))
	}
	if requests[0].Status != 503 {
		t.Errorf("got status %d, want 503", requests[0].Status)
	}
	if got := len(s.Events()); got != 0 {
		t.Errorf("got %d events, want 0", got)
	}
}

func TestDelay(t *testing.T) {
	const delay = 50 * time.Millisecond
	s := startCounting(t, Options{Delay: delay})
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	start := time.Now()
	if _, err := post(t, client, s.URL, "/import", importBody, true); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("got an answer after %v, want at least %v", elapsed, delay)
	}
}

func TestHoldAndRelease(t *testing.T) {
	s := startCounting(t, Options{})
	s.Hold()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	answered := make(chan int, 1)
	go func() {
		resp, err := post(t, client, s.URL, "/import", importBody, true)
		if err != nil {
			answered <- 0
			return
		}
		answered <- resp.StatusCode
	}()
	select {
	case status := <-answered:
		t.Fatalf("got status %d during the hold, want no answer", status)
	case <-time.After(100 * time.Millisecond):
	}

	s.Release()
	select {
	case status := <-answered:
		if status != http.StatusOK {
			t.Errorf("got status %d after the release, want 200", status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer within 5s of the release")
	}
	if got := s.Counts().HeldEvents; got != 4 {
		t.Errorf("got HeldEvents %d, want 4", got)
	}
}

func TestHoldCanceledRequest(t *testing.T) {
	s := startCounting(t, Options{})
	s.Hold()
	defer s.Release()
	client := &http.Client{Timeout: 50 * time.Millisecond}
	defer client.CloseIdleConnections()

	_, err := post(t, client, s.URL, "/import", importBody, true)
	if err == nil {
		t.Fatal("got an answer during the hold, want a timeout")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitRequests(ctx, "/import", 1); err != nil {
		t.Fatalf("WaitRequests(/import, 1): %v", err)
	}
	c := s.Counts()
	if c.Canceled != 1 {
		t.Errorf("got Canceled %d, want 1", c.Canceled)
	}
	if c.Events != 0 {
		t.Errorf("got Events %d, want 0", c.Events)
	}
	if got := c.Requests["/import"][0]; got != 1 {
		t.Errorf("got %d /import requests under status 0, want 1", got)
	}
}

func TestScanRecords(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    []any // each record's $insert_id
		wantErr bool
	}{
		{name: "records", give: `[{"event":"a","properties":{"time":1,"$insert_id":"x1","nested":{"$insert_id":"no"}}},{"properties":{"$insert_id":"x2"},"event":"b"}]`, want: []any{"x1", "x2"}},
		{name: "missing and non-string ids", give: `[{"event":"a","properties":{}},{"properties":{"$insert_id":7}},{"properties":null},42]`, want: []any{nil, nil, nil, nil}},
		{name: "engage updates", give: `[{"$token":"t","$distinct_id":"u","$set":{"a":1}}]`, want: []any{nil}},
		{name: "bridge shape", give: `[{"event":"a","properties":{"time":1,"$insert_id":"x1","s":"q\"$insert_id\":\"no"}},{"event":"b","properties":{"$insert_id":"x2"}}]`, want: []any{"x1", "x2"}},
		{name: "bridge shape, id nested in a list", give: `[{"event":"a","properties":{"$insert_id":"x1","items":[{"$insert_id":"in"}]}}]`, want: []any{"x1"}},
		{name: "bridge shape, escaped id", give: `[{"event":"a","properties":{"$insert_id":"x\u0031"}}]`, want: []any{"x1"}},
		{name: "bridge shape, truncated", give: `[{"event":"a","properties":{"$insert_id":"x1"}`, wantErr: true},
		{name: "empty array", give: `[]`, want: nil},
		{name: "object", give: `{"properties":{"$insert_id":"x"}}`, wantErr: true},
		{name: "truncated", give: `[{"properties":{"$insert_id":"x"}`, wantErr: true},
		{name: "trailing data", give: `[] []`, wantErr: true},
		{name: "invalid", give: `[{"properties":{"$insert_id":x}}]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast, ok := searchRecords([]byte(tt.give)); ok {
				slow, err := tokenRecords([]byte(tt.give))
				if err != nil || !reflect.DeepEqual(fast, slow) {
					t.Errorf("searchRecords %v, tokenRecords %v (error %v): want the same", fast, slow, err)
				}
			}
			records, err := scanRecords([]byte(tt.give))
			if (err != nil) != tt.wantErr {
				t.Fatalf("scanRecords: got error %v, want error %v", err, tt.wantErr)
			}
			var got []any
			for _, r := range records {
				got = append(got, r.Properties.InsertID)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("insert ids: got %v, want %v", got, tt.want)
			}
		})
	}
}
