package mpclient

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestImportClassification(t *testing.T) {
	tests := []struct {
		name           string
		status         int
		body           string
		header         http.Header
		wantOutcome    Outcome
		wantFailed     int
		wantRetryAfter time.Duration
	}{
		{name: "ok", status: 200, body: `{"code":200,"num_records_imported":1,"status":1}`, wantOutcome: OK},
		{name: "ok unparseable", status: 200, body: `not json`, wantOutcome: OK},
		{name: "strict partial", status: 400, wantOutcome: Partial, wantFailed: 2,
			body: `{"code":400,"error":"x","failed_records":[{"index":0,"field":"f","message":"m"},{"index":3,"field":"g","message":"n"}],"num_records_imported":2,"status":"Bad Request"}`},
		{name: "400 html", status: 400, body: `<html></html>`, wantOutcome: Rejected},
		{name: "400 without records", status: 400, body: `{"error":"x"}`, wantOutcome: Rejected},
		{name: "401", status: 401, body: `{"error":"Invalid credentials"}`, wantOutcome: Unauthorized},
		{name: "403 plain", status: 403, body: `forbidden`, wantOutcome: Unauthorized},
		{name: "404", status: 404, wantOutcome: Unauthorized},
		{name: "413 empty", status: 413, wantOutcome: TooLarge},
		{name: "429 seconds", status: 429, header: http.Header{"Retry-After": {"7"}}, wantOutcome: Transient, wantRetryAfter: 7 * time.Second},
		{name: "429 no body", status: 429, wantOutcome: Transient},
		{name: "500", status: 500, body: "oops", wantOutcome: Transient},
		{name: "503", status: 503, wantOutcome: Transient},
		{name: "418", status: 418, wantOutcome: Rejected},
		{name: "408", status: 408, wantOutcome: Transient},
		{name: "425", status: 425, wantOutcome: Transient},
		{name: "302 without location", status: 302, wantOutcome: Unauthorized},
		{name: "304", status: 304, wantOutcome: Unauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				for k, v := range tt.header {
					w.Header()[k] = v
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()

			c := New(Config{Token: "tok", BaseURL: srv.URL, HTTPClient: srv.Client()})
			res := c.Import(context.Background(), [][]byte{[]byte(`{"event":"e","properties":{"time":1}}`)})

			if res.Outcome != tt.wantOutcome {
				t.Errorf("outcome: got %v, want %v (err %v)", res.Outcome, tt.wantOutcome, res.Err)
			}
			if res.Status != tt.status {
				t.Errorf("status: got %d, want %d", res.Status, tt.status)
			}
			if res.Body != tt.body {
				t.Errorf("body: got %q, want %q", res.Body, tt.body)
			}
			if len(res.Failed) != tt.wantFailed {
				t.Errorf("failed records: got %d, want %d", len(res.Failed), tt.wantFailed)
			}
			if res.RetryAfter != tt.wantRetryAfter {
				t.Errorf("Retry-After: got %v, want %v", res.RetryAfter, tt.wantRetryAfter)
			}
			if (res.Err == nil) != (tt.wantOutcome == OK) {
				t.Errorf("err: got %v for outcome %v", res.Err, res.Outcome)
			}
		})
	}
}

func TestImportNetworkErrorIsTransient(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()

	c := New(Config{Token: "tok", BaseURL: url})
	res := c.Import(context.Background(), [][]byte{[]byte(`{"event":"e","properties":{}}`)})
	if res.Outcome != Transient || res.Status != 0 || res.Err == nil {
		t.Errorf("got outcome %v status %d err %v, want transient, 0 and an error", res.Outcome, res.Status, res.Err)
	}
}

func TestEngageClassification(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   Outcome
	}{
		{"ok", 200, "1", OK},
		{"zero", 200, "0", Transient},
		{"garbage", 200, "x", Transient},
		{"400", 400, "bad", Rejected},
		{"401", 401, "", Unauthorized},
		{"429", 429, "", Transient},
		{"500", 500, "", Transient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()

			c := New(Config{Token: "tok", BaseURL: srv.URL, HTTPClient: srv.Client()})
			res := c.PeopleSet(context.Background(), []Profile{{DistinctID: "u", Properties: map[string]any{"a": 1}}})
			if res.Outcome != tt.want {
				t.Errorf("outcome: got %v, want %v (err %v)", res.Outcome, tt.want, res.Err)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		give string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"30", 30 * time.Second},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.give, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q): got %v, want %v", tt.give, got, tt.want)
		}
	}
}

func TestNewKeepsCallerClient(t *testing.T) {
	hc := &http.Client{Timeout: time.Second}
	New(Config{Token: "tok", HTTPClient: hc})
	if hc.Transport != nil {
		t.Error("New modified the caller's http.Client")
	}
}

func TestImportRequest(t *testing.T) {
	events := [][]byte{
		[]byte(`{"event":"a","properties":{"time":1,"$insert_id":"x1"}}`),
		[]byte(`{"event":"b\u003c\u0026\u003e","properties":{"time":2,"list":["é"]}}`),
	}
	tests := []struct {
		name        string
		cfg         Config
		wantUser    string
		wantPass    string
		wantProject string
	}{
		{name: "token", cfg: Config{Token: "tok"}, wantUser: "tok"},
		{name: "api secret", cfg: Config{Token: "tok", APISecret: "sec"}, wantUser: "sec"},
		{name: "service account", cfg: Config{Token: "tok", APISecret: "sec",
			ServiceAccount: &ServiceAccount{ProjectID: 42, Username: "sa.user", Secret: "sa-secret"}},
			wantUser: "sa.user", wantPass: "sa-secret", wantProject: "42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got struct {
				method, path, query, ctype, encoding, user, pass string
				basic                                            bool
				body                                             []byte
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.method, got.path, got.query = r.Method, r.URL.Path, r.URL.RawQuery
				got.ctype, got.encoding = r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding")
				got.user, got.pass, got.basic = r.BasicAuth()
				if zr, err := gzip.NewReader(r.Body); err == nil {
					got.body, _ = io.ReadAll(zr)
				}
				io.WriteString(w, `{"code":200,"num_records_imported":2,"status":1}`)
			}))
			defer srv.Close()
			cfg := tt.cfg
			cfg.BaseURL, cfg.HTTPClient = srv.URL+"/", srv.Client()

			if res := New(cfg).Import(context.Background(), events); res.Outcome != OK {
				t.Fatalf("Import: got %v (%v), want ok", res.Outcome, res.Err)
			}
			q, _ := url.ParseQuery(got.query)
			if got.method != http.MethodPost || got.path != "/import" || q.Get("strict") != "1" || q.Get("verbose") != "1" || q.Get("project_id") != tt.wantProject {
				t.Errorf("request: got %s %s?%s, want POST /import?strict=1&verbose=1 and project_id %q", got.method, got.path, got.query, tt.wantProject)
			}
			if got.ctype != "application/json" || got.encoding != "gzip" {
				t.Errorf("headers: got Content-Type %q, Content-Encoding %q", got.ctype, got.encoding)
			}
			if !got.basic || got.user != tt.wantUser || got.pass != tt.wantPass {
				t.Errorf("basic auth: got %v %q:%q, want %q:%q", got.basic, got.user, got.pass, tt.wantUser, tt.wantPass)
			}
			want := "[" + string(events[0]) + "," + string(events[1]) + "]"
			if string(got.body) != want {
				t.Errorf("body:\ngot  %s\nwant %s", got.body, want)
			}
		})
	}
}

func TestImportURLByResidency(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "https://api.mixpanel.com/import?"},
		{Config{Residency: "eu"}, "https://api-eu.mixpanel.com/import?"},
		{Config{Residency: "IN"}, "https://api-in.mixpanel.com/import?"},
		{Config{Residency: "EU", BaseURL: "http://127.0.0.1:9/proxy/"}, "http://127.0.0.1:9/proxy/import?"},
	}
	for _, tt := range tests {
		if got := importURL(tt.cfg); !strings.HasPrefix(got, tt.want) {
			t.Errorf("importURL(%+v): got %s, want prefix %s", tt.cfg, got, tt.want)
		}
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var landed atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/landing" {
			landed.Add(1)
			io.WriteString(w, `{"code":200,"num_records_imported":1,"status":1}`)
			return
		}
		http.Redirect(w, r, "/landing", http.StatusFound)
	}))
	defer srv.Close()

	c := New(Config{Token: "tok", BaseURL: srv.URL, HTTPClient: srv.Client()})
	event := [][]byte{[]byte(`{"event":"e","properties":{"time":1}}`)}
	if res := c.Import(context.Background(), event); res.Outcome != Unauthorized || res.Status != http.StatusFound {
		t.Errorf("Import: got %v with status %d, want unauthorized with 302", res.Outcome, res.Status)
	}
	profiles := []Profile{{DistinctID: "u1", Properties: map[string]any{"plan": "pro"}}}
	if res := c.PeopleSet(context.Background(), profiles); res.Outcome != Unauthorized {
		t.Errorf("PeopleSet: got %v with status %d, want unauthorized", res.Outcome, res.Status)
	}
	if n := landed.Load(); n != 0 {
		t.Errorf("requests to the redirect target: got %d, want 0", n)
	}
}
