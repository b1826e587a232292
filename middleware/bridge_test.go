package branchmp

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/fixtures"
	"github.com/branchmp/branchmp/internal/mptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startMixpanel starts a loopback stand-in for Mixpanel, closed when the
// test ends.
func startMixpanel(t *testing.T) *mptest.Server {
	t.Helper()
	mp, err := mptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mp.Close() })
	return mp
}

// testConfig returns a config aimed at mp with short intervals, so retries
// and flushes happen within a test.
func testConfig(mp *mptest.Server) Config {
	return Config{
		Token:           "test-token",
		BaseURL:         mp.URL,
		FlushInterval:   20 * time.Millisecond,
		RetryBackoff:    5 * time.Millisecond,
		RetryMaxBackoff: 20 * time.Millisecond,
		Timeout:         5 * time.Second,
	}
}

// newBridge starts a bridge and shuts it down when the test ends.
func newBridge(t *testing.T, cfg Config) *Bridge {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})
	return b
}

func shutdown(t *testing.T, b *Bridge) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestServeHTTPStatus(t *testing.T) {
	install := fixtures.BodyNamed("install-attributed-ios")
	const limit = 4096
	atLimit := append(bytes.Repeat([]byte(" "), limit-len(install)), install...)
	overLimit := append([]byte(" "), atLimit...)
	var manyKeys strings.Builder
	manyKeys.WriteString(`{"name":"OPEN"`)
	for i := range 300 {
		fmt.Fprintf(&manyKeys, `,"k%d":%d`, i, i)
	}
	manyKeys.WriteString("}")
	bomb := gzipped(t, append(append([]byte(`{"name":"OPEN","x":"`), bytes.Repeat([]byte("a"), 64*limit)...), `"}`...))

	tests := []struct {
		name          string
		method        string
		target        string
		contentType   string
		encoding      string
		body          []byte
		chunked       bool  // send without Content-Length
		contentLength int64 // announced length, when not the body's
		want          int
		wantAllow     bool
	}{
		{name: "json", method: "POST", contentType: "application/json", body: install, want: 200},
		{name: "json charset", method: "POST", contentType: "application/json; charset=utf-8", body: install, want: 200},
		{name: "no content type", method: "POST", body: install, want: 200},
		{name: "legacy body", method: "POST", contentType: "application/json", body: fixtures.BodyNamed("legacy-open-referred-false"), want: 200},
		{name: "get query", method: "GET", target: "/branch?ev=OPEN&id=12&ts=1717433000222", want: 200},
		{name: "form post", method: "POST", contentType: "application/x-www-form-urlencoded", body: []byte("name=OPEN&id=5&uid=user-1"), want: 200},
		{name: "gzip body", method: "POST", contentType: "application/json", encoding: "gzip", body: gzipped(t, install), want: 200},
		{name: "at limit", method: "POST", contentType: "application/json", body: atLimit, want: 200},
		{name: "over limit", method: "POST", contentType: "application/json", body: overLimit, want: 413},
		{name: "over limit chunked", method: "POST", contentType: "application/json", body: overLimit, chunked: true, want: 413},
		{name: "announced over limit", method: "POST", contentType: "application/json", body: []byte(`{}`), contentLength: limit + 1, want: 413},
		{name: "gzip over limit", method: "POST", contentType: "application/json", encoding: "gzip", body: bomb, want: 413},
		{name: "shorter than announced", method: "POST", contentType: "application/json", body: install, contentLength: int64(len(install)) + 10, want: 400},
		{name: "corrupt gzip", method: "POST", contentType: "application/json", encoding: "gzip", body: []byte("not gzip at all"), want: 400},
		{name: "truncated gzip", method: "POST", contentType: "application/json", encoding: "gzip", body: gzipped(t, install)[:40], want: 400},
		{name: "brotli", method: "POST", contentType: "application/json", encoding: "br", body: install, want: 415},
		{name: "xml", method: "POST", contentType: "text/xml", body: []byte("<a/>"), want: 415},
		{name: "bad content type", method: "POST", contentType: ";;", body: install, want: 415},
		{name: "array", method: "POST", contentType: "application/json", body: []byte(`[{"name":"OPEN"}]`), want: 400},
		{name: "scalar", method: "POST", contentType: "application/json", body: []byte(`42`), want: 400},
		{name: "invalid json", method: "POST", contentType: "application/json", body: []byte(`{"name":`), want: 400},
		{name: "empty body", method: "POST", contentType: "application/json", want: 400},
		{name: "no event name", method: "POST", contentType: "application/json", body: []byte(`{"id":1}`), want: 400},
		{name: "get without event", method: "GET", target: "/branch?id=12", want: 400},
		{name: "many keys", method: "POST", contentType: "application/json", body: []byte(manyKeys.String()), want: 200},
		{name: "invalid utf-8", method: "POST", contentType: "application/json", body: []byte("{\"name\":\"OPEN\",\"id\":\"u1\",\"x\":\"\xff\xfe\"}"), want: 200},
		{name: "duplicate keys", method: "POST", contentType: "application/json", body: []byte(`{"name":"OPEN","id":"d1","name":"CLOSE"}`), want: 200},
		{name: "huge numbers", method: "POST", contentType: "application/json", body: []byte(`{"name":"OPEN","id":"h1","x":1e400,"y":123456789012345678901234567890}`), want: 200},
		{name: "head", method: "HEAD", target: "/branch?ev=OPEN&id=12", want: 200},
		{name: "put", method: "PUT", body: install, want: 405, wantAllow: true},
		{name: "delete", method: "DELETE", want: 405, wantAllow: true},
		{name: "options", method: "OPTIONS", want: 204, wantAllow: true},
	}

	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.MaxBodyBytes = limit
	b := newBridge(t, cfg)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.target
			if target == "" {
				target = "/branch"
			}
			var body io.Reader = bytes.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length from NewRequest
			}
			req := httptest.NewRequest(tt.method, target, body)
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			if tt.chunked {
				req.ContentLength = -1
			}
			if tt.contentLength != 0 {
				req.ContentLength = tt.contentLength
			}
			rec := httptest.NewRecorder()
			b.ServeHTTP(rec, req)

			if rec.Code != tt.want {
				t.Errorf("status: got %d, want %d (body %q)", rec.Code, tt.want, rec.Body.String())
			}
			allow := rec.Header().Get("Allow")
			if tt.wantAllow && allow != "GET, HEAD, POST, OPTIONS" {
				t.Errorf("Allow: got %q, want %q", allow, "GET, HEAD, POST, OPTIONS")
			}
		})
	}
}

func TestDeepNestingRejected(t *testing.T) {
	// encoding/json stops at 10000 levels; the body stays under 1 MiB.
	deep := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	b := newBridge(t, testConfig(startMixpanel(t)))
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("POST", "/branch", strings.NewReader(`{"name":"OPEN","x":`+deep+`}`)))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("status: got %d, want 400", rec.Code)
	}
}

func TestServeHTTPCountsRejections(t *testing.T) {
	b := newBridge(t, testConfig(startMixpanel(t)))
	send := func(method, contentType, body string) {
		req := httptest.NewRequest(method, "/branch", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		b.ServeHTTP(httptest.NewRecorder(), req)
	}
	send("POST", "application/json", `{"name":"OPEN","id":1}`)
	send("POST", "application/json", `[]`)
	send("PATCH", "application/json", `{}`)
	send("POST", "image/png", `x`)

	s := b.Stats()
	if s.Accepted != 1 {
		t.Errorf("Accepted: got %d, want 1", s.Accepted)
	}
	if s.BadRequest != 1 {
		t.Errorf("BadRequest: got %d, want 1", s.BadRequest)
	}
	if s.MethodNotAllowed != 1 {
		t.Errorf("MethodNotAllowed: got %d, want 1", s.MethodNotAllowed)
	}
	if s.UnsupportedMedia != 1 {
		t.Errorf("UnsupportedMedia: got %d, want 1", s.UnsupportedMedia)
	}
}

func TestFullSpoolGets503(t *testing.T) {
	mp := startMixpanel(t)
	release := make(chan struct{})
	cfg := testConfig(mp)
	cfg.Workers = 1
	cfg.QueueCapacity = 2
	cfg.Resolver = identity.ResolverFunc(func(ctx context.Context, ids identity.Identifiers) (identity.Identity, error) {
		<-release
		return identity.Identity{}, nil
	})
	b := newBridge(t, cfg)

	// The resolver holds the first event in the only worker; the spool
	// holds two undelivered events, so the rest get 503 without waiting.
	statuses := map[int]int{}
	for i := range 6 {
		req := httptest.NewRequest("GET", fmt.Sprintf("/branch?ev=OPEN&id=%d", i+1), nil)
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, req)
		statuses[rec.Code]++
	}
	close(release)

	if statuses[200] != 2 {
		t.Errorf("200 responses: got %d, want 2 (all: %v)", statuses[200], statuses)
	}
	if statuses[503] != 4 {
		t.Errorf("503 responses: got %d, want 4 (all: %v)", statuses[503], statuses)
	}
	if got := b.Stats().Unavailable; got != 4 {
		t.Errorf("Unavailable: got %d, want 4", got)
	}
	shutdown(t, b)
	if got := len(mp.Events()); got != 2 {
		t.Errorf("events delivered: got %d, want 2", got)
	}
}

func TestShutdownThenWebhookGets503(t *testing.T) {
	b := newBridge(t, testConfig(startMixpanel(t)))
	shutdown(t, b)
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/branch?ev=OPEN", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status: got %d, want 503", rec.Code)
	}
	if err := b.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: got %v, want nil", err)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	tests := []struct {
		name      string
		give      Config
		wantField string
	}{
		{"missing token", Config{}, "Token"},
		{"blank token", Config{Token: "  "}, "Token"},
		{"bad residency", Config{Token: "t", Residency: "MARS"}, "Residency"},
		{"relative base url", Config{Token: "t", BaseURL: "127.0.0.1:8080"}, "BaseURL"},
		{"ftp base url", Config{Token: "t", BaseURL: "ftp://127.0.0.1"}, "BaseURL"},
		{"path without slash", Config{Token: "t", Path: "branch"}, "Path"},
		{"negative workers", Config{Token: "t", Workers: -1}, "Workers"},
		{"batch over limit", Config{Token: "t", BatchSize: 2001}, "BatchSize"},
		{"negative timeout", Config{Token: "t", Timeout: -time.Second}, "Timeout"},
		{"incomplete service account", Config{Token: "t", ServiceAccount: &ServiceAccount{Username: "u"}}, "ServiceAccount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.give)
			if err == nil {
				b.Shutdown(context.Background())
				t.Fatal("got nil error, want one")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("got %v, want an error wrapping ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.wantField) {
				t.Errorf("error %q does not name the field %s", err, tt.wantField)
			}
		})
	}
}

func TestConfigErrorHidesSecrets(t *testing.T) {
	_, err := New(Config{Token: "secret-token-value", APISecret: "secret-api-value", Residency: "XX"})
	if err == nil {
		t.Fatal("got nil error, want one")
	}
	for _, secret := range []string{"secret-token-value", "secret-api-value"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q contains a secret", err)
		}
	}
}

func TestHandlerPanicsNamingField(t *testing.T) {
	defer func() {
		r := recover()
		msg, _ := r.(string)
		if !strings.Contains(msg, "Token") {
			t.Errorf("panic: got %v, want a message naming Token", r)
		}
	}()
	Handler(Config{})
	t.Error("Handler returned, want a panic")
}

func TestMiddlewareRoutesWebhookPath(t *testing.T) {
	b := newBridge(t, testConfig(startMixpanel(t)))
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})
	h := b.Middleware(next)

	tests := []struct {
		target string
		want   int
	}{
		{"/branch?ev=OPEN&id=1", http.StatusOK},
		{"/other", http.StatusTeapot},
		{"/branch/extra", http.StatusTeapot},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tt.target, nil))
		if rec.Code != tt.want {
			t.Errorf("%s: got %d, want %d", tt.target, rec.Code, tt.want)
		}
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
