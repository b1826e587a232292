package identity_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/branchmp/branchmp/identity"
)

// respond returns a handler that writes status and body.
func respond(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func newHTTPResolver(t *testing.T, handler http.Handler, opts identity.HTTPOptions) identity.Resolver {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	r, err := identity.NewHTTPResolver(srv.URL+"/internal/branch-user", opts)
	if err != nil {
		t.Fatalf("NewHTTPResolver: %v", err)
	}
	return r
}

// newStallingResolver returns a resolver whose server reads the request,
// calls prefix when it is not nil, and then stalls until the client gives
// up or the test ends.
func newStallingResolver(t *testing.T, prefix http.HandlerFunc, opts identity.HTTPOptions) identity.Resolver {
	t.Helper()
	testEnded := make(chan struct{})
	stall := func(w http.ResponseWriter, r *http.Request) {
		// The server notices a closed connection only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		if prefix != nil {
			prefix(w, r)
		}
		select {
		case <-r.Context().Done():
		case <-testEnded:
		}
	}
	r := newHTTPResolver(t, http.HandlerFunc(stall), opts)
	// Cleanups run last first, so the handler returns before the server's
	// Close waits for it.
	t.Cleanup(func() { close(testEnded) })
	return r
}

func TestHTTPResolverResponses(t *testing.T) {
	const (
		notObject = "not a JSON object"
		badUserID = "must be a string or an integer"
	)
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		want      identity.Identity
		wantErr   error  // checked with errors.Is
		wantInErr string // a transient error containing this text
	}{
		{
			name: "known user with properties",
			handler: respond(200, `{"user_id": "u-42",
				"properties": {"$email": "a@example.com", "visits": 9007199254740993}}`),
			want: identity.Identity{UserID: "u-42", Properties: map[string]any{
				"$email": "a@example.com", "visits": json.Number("9007199254740993"),
			}},
		},
		{
			name:    "integer user id",
			handler: respond(200, ` {"user_id": 42, "extra": [1, 2]} `),
			want:    identity.Identity{UserID: "42"},
		},
		{name: "404", handler: respond(404, "no such user"), wantErr: identity.ErrNotFound},
		{name: "empty user id", handler: respond(200, `{"user_id":""}`), wantErr: identity.ErrNotFound},
		{name: "null user id", handler: respond(200, `{"user_id":null}`), wantErr: identity.ErrNotFound},
		{name: "no user id", handler: respond(200, `{}`), wantErr: identity.ErrNotFound},
		{name: "500", handler: respond(500, `{"user_id":"u-42"}`), wantInErr: "unexpected status 500"},
		{name: "503", handler: respond(503, ""), wantInErr: "unexpected status 503"},
		{name: "400", handler: respond(400, ""), wantInErr: "unexpected status 400"},
		{name: "malformed JSON", handler: respond(200, `{"user_id":"u-4`), wantInErr: "invalid response"},
		{name: "JSON array", handler: respond(200, `[{"user_id":"u-42"}]`), wantInErr: notObject},
		{name: "JSON string", handler: respond(200, `"u-42"`), wantInErr: notObject},
		{name: "empty 200", handler: respond(200, ""), wantInErr: notObject},
		{
			name:      "data after object",
			handler:   respond(200, `{"user_id":"a"}{"user_id":"b"}`),
			wantInErr: "after the JSON object",
		},
		{name: "fractional user id", handler: respond(200, `{"user_id":4.2}`), wantInErr: badUserID},
		{name: "boolean user id", handler: respond(200, `{"user_id":true}`), wantInErr: badUserID},
		{
			name:      "properties not object",
			handler:   respond(200, `{"user_id":"u","properties":[1]}`),
			wantInErr: "invalid response",
		},
		{
			name: "redirect not followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
			},
			wantInErr: "unexpected status 307",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newHTTPResolver(t, tt.handler, identity.HTTPOptions{})
			got, err := r.Resolve(context.Background(), dev("dev-42"))

			switch {
			case tt.wantInErr != "":
				if err == nil || errors.Is(err, identity.ErrNotFound) {
					t.Fatalf("err: got %v, want a transient error", err)
				}
				if !strings.Contains(err.Error(), tt.wantInErr) {
					t.Errorf("err: got %q, want it to contain %q", err, tt.wantInErr)
				}
			case !errors.Is(err, tt.wantErr):
				t.Fatalf("err: got %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("identity (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPResolverRequest(t *testing.T) {
	type request struct {
		Method, Path, ContentType, Accept, Authorization string
		Body                                             map[string]string
	}
	seen := make(chan request, 1)
	handler := func(w http.ResponseWriter, r *http.Request) {
		req := request{
			Method:        r.Method,
			Path:          r.URL.Path,
			ContentType:   r.Header.Get("Content-Type"),
			Accept:        r.Header.Get("Accept"),
			Authorization: r.Header.Get("Authorization"),
		}
		if err := json.NewDecoder(r.Body).Decode(&req.Body); err != nil {
			t.Errorf("request body: %v", err)
		}
		seen <- req
		respond(200, `{"user_id":"u-1"}`)(w, r)
	}
	header := http.Header{"Authorization": {"Bearer s3cret"}, "Content-Type": {"text/plain"}}
	r := newHTTPResolver(t, http.HandlerFunc(handler), identity.HTTPOptions{Header: header})

	ids := identity.Identifiers{
		DeveloperIdentity: "dev-1", IDFV: "idfv-1", IDFA: "idfa-1", AAID: "aaid-1",
		AndroidID: "android-1", BrowserID: "browser-1", BranchID: "branch-1",
		BranchDeviceID: "device-1", OS: "IOS",
	}
	if _, err := r.Resolve(context.Background(), ids); err != nil {
		t.Fatal(err)
	}

	want := request{
		Method: "POST", Path: "/internal/branch-user",
		ContentType: "application/json", Accept: "application/json",
		Authorization: "Bearer s3cret",
		Body: map[string]string{
			identity.FieldDeveloperIdentity: "dev-1",
			identity.FieldIDFV:              "idfv-1",
			identity.FieldIDFA:              "idfa-1",
			identity.FieldAAID:              "aaid-1",
			identity.FieldAndroidID:         "android-1",
			identity.FieldBrowserID:         "browser-1",
			identity.FieldBranchID:          "branch-1",
			identity.FieldBranchDeviceID:    "device-1",
			identity.FieldOS:                "IOS",
		},
	}
	if diff := cmp.Diff(want, <-seen); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}

	// Empty identifiers are left out of the body.
	if _, err := r.Resolve(context.Background(), identity.Identifiers{IDFV: "idfv-2"}); err != nil {
		t.Fatal(err)
	}
	wantBody := map[string]string{identity.FieldIDFV: "idfv-2"}
	if diff := cmp.Diff(wantBody, (<-seen).Body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
}

func TestHTTPResolverSkipsEmptyIdentifiers(t *testing.T) {
	var requests atomic.Int32
	handler := func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		respond(200, `{"user_id":"u-1"}`)(w, r)
	}
	r := newHTTPResolver(t, http.HandlerFunc(handler), identity.HTTPOptions{})

	for _, ids := range []identity.Identifiers{{}, {OS: "IOS"}} {
		if _, err := r.Resolve(context.Background(), ids); !errors.Is(err, identity.ErrNotFound) {
			t.Errorf("%+v: err: got %v, want ErrNotFound", ids, err)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("requests: got %d, want 0", n)
	}
}

func TestHTTPResolverTimeout(t *testing.T) {
	partialBody := func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"user_id":`)
		w.(http.Flusher).Flush()
	}
	tests := []struct {
		name   string
		prefix http.HandlerFunc
	}{
		{"no headers", nil},
		{"partial body", partialBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := identity.HTTPOptions{Timeout: 50 * time.Millisecond}
			r := newStallingResolver(t, tt.prefix, opts)

			start := time.Now()
			_, err := r.Resolve(context.Background(), dev("dev-1"))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err: got %v, want context.DeadlineExceeded", err)
			}
			if !strings.Contains(err.Error(), "timed out after 50ms") {
				t.Errorf("err: got %q, want it to name the 50ms timeout", err)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Resolve took %v, want about 50ms", elapsed)
			}
		})
	}
}

func TestHTTPResolverCallerContext(t *testing.T) {
	r := newStallingResolver(t, nil, identity.HTTPOptions{Timeout: time.Minute})

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := r.Resolve(ctx, dev("dev-1"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err: got %v, want context.Canceled", err)
	}
}

func TestHTTPResolverBoundsResponse(t *testing.T) {
	const limit = 64
	exact := `{"user_id":"u-1","properties":{"k":"` + strings.Repeat("x", limit-39) + `"}}`
	if len(exact) != limit {
		t.Fatalf("test body is %d bytes, want %d", len(exact), limit)
	}
	huge := `{"user_id":"u-1","properties":{"k":"` + strings.Repeat("x", 8<<20) + `"}}`
	tests := []struct {
		name    string
		body    string
		opts    identity.HTTPOptions
		wantErr bool
	}{
		{"at MaxResponseBytes", exact, identity.HTTPOptions{MaxResponseBytes: limit}, false},
		{"one byte over", exact + " ", identity.HTTPOptions{MaxResponseBytes: limit}, true},
		{"8 MiB over the default", huge, identity.HTTPOptions{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newHTTPResolver(t, respond(200, tt.body), tt.opts)
			got, err := r.Resolve(context.Background(), dev("dev-1"))
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if got.UserID != "u-1" {
					t.Errorf("UserID: got %q, want u-1", got.UserID)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "MaxResponseBytes") {
				t.Errorf("err: got %v, want an error naming MaxResponseBytes", err)
			}
		})
	}
}

func TestHTTPResolverErrorsHideSecrets(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"status", respond(500, "Bearer s3cret")},
		{"timeout", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testEnded := make(chan struct{})
			handler := tt.handler
			if handler == nil {
				handler = func(_ http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					select {
					case <-r.Context().Done():
					case <-testEnded:
					}
				}
			}
			srv := httptest.NewServer(handler)
			defer srv.Close()
			defer close(testEnded)

			rawURL := strings.Replace(srv.URL, "http://", "http://user:pa55word@", 1) + "/users?token=t0ken"
			opts := identity.HTTPOptions{
				Header:  http.Header{"Authorization": {"Bearer s3cret"}},
				Timeout: 50 * time.Millisecond,
			}
			r, err := identity.NewHTTPResolver(rawURL, opts)
			if err != nil {
				t.Fatal(err)
			}

			_, err = r.Resolve(context.Background(), dev("dev-1"))
			if err == nil {
				t.Fatal("err: got nil, want an error")
			}
			for _, secret := range []string{"s3cret", "pa55word", "t0ken"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("err %q contains %q", err, secret)
				}
			}
			if !strings.Contains(err.Error(), srv.URL+"/users") {
				t.Errorf("err: got %q, want it to name %s/users", err, srv.URL)
			}
		})
	}
}

func TestHTTPResolverCustomClient(t *testing.T) {
	var seen atomic.Value
	transport := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		seen.Store(r.URL.String())
		body := io.NopCloser(strings.NewReader(`{"user_id":"u-7"}`))
		return &http.Response{StatusCode: 200, Status: "200 OK", Body: body, Header: http.Header{}}, nil
	})
	opts := identity.HTTPOptions{Client: &http.Client{Transport: transport}}
	r, err := identity.NewHTTPResolver("https://users.invalid/lookup", opts)
	if err != nil {
		t.Fatal(err)
	}

	got, err := r.Resolve(context.Background(), dev("dev-1"))
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != "u-7" {
		t.Errorf("UserID: got %q, want u-7", got.UserID)
	}
	if url := seen.Load(); url != "https://users.invalid/lookup" {
		t.Errorf("request URL: got %v, want https://users.invalid/lookup", url)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNewHTTPResolverRejectsInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		url  string
		opts identity.HTTPOptions
	}{
		{"empty URL", "", identity.HTTPOptions{}},
		{"relative URL", "/users/lookup", identity.HTTPOptions{}},
		{"no host", "http:///lookup", identity.HTTPOptions{}},
		{"ftp scheme", "ftp://127.0.0.1/lookup", identity.HTTPOptions{}},
		{"no scheme", "127.0.0.1:8080/lookup", identity.HTTPOptions{}},
		{"bad escape", "http://127.0.0.1/%zz", identity.HTTPOptions{}},
		{"negative Timeout", "http://127.0.0.1/lookup", identity.HTTPOptions{Timeout: -time.Second}},
		{"negative MaxResponseBytes", "http://127.0.0.1/lookup", identity.HTTPOptions{MaxResponseBytes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := identity.NewHTTPResolver(tt.url, tt.opts); err == nil {
				t.Error("err: got nil, want an error")
			}
		})
	}
}

func TestHTTPResolverWithCache(t *testing.T) {
	var requests atomic.Int32
	handler := func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		respond(200, `{"user_id":"u-1"}`)(w, r)
	}
	lookup := newHTTPResolver(t, http.HandlerFunc(handler), identity.HTTPOptions{})
	c := mustCache(t, lookup, identity.CacheOptions{})

	for range 3 {
		if _, err := c.Resolve(context.Background(), dev("dev-1")); err != nil {
			t.Fatal(err)
		}
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("requests: got %d, want 1", n)
	}
}
