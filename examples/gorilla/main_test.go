package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/branchmp/branchmp/internal/fixtures"
	"github.com/branchmp/branchmp/internal/mptest"
	branchmp "github.com/branchmp/branchmp/middleware"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// app is one run of the app on loopback, with mptest as Mixpanel.
type app struct {
	baseURL  string
	mixpanel *mptest.Server
	client   *http.Client

	// stop cancels run's context and returns run's result. Only the first
	// call waits for run.
	stop func() error
}

// startApp runs the app on 127.0.0.1 with a random port and the given
// mount form. A cleanup stops the app and the stand-in.
func startApp(t *testing.T, mount string) *app {
	t.Helper()
	mixpanel, err := mptest.Start()
	if err != nil {
		t.Fatalf("start Mixpanel stand-in: %v", err)
	}
	t.Cleanup(func() { mixpanel.Close() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg := config{
		token:  "test-token",
		apiURL: mixpanel.URL,
		listen: ln.Addr().String(),
		mount:  mount,
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := zaptest.NewLogger(t)
	go func() { done <- run(ctx, ln, cfg, logger) }()

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	a := &app{
		baseURL:  "http://" + ln.Addr().String(),
		mixpanel: mixpanel,
		client:   client,
	}
	a.stop = sync.OnceValue(func() error {
		cancel()
		defer client.CloseIdleConnections()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("run did not return within 30s of cancel")
		}
	})
	// Tests check stop's result themselves. This cleanup only stops the
	// app when a test ends early.
	t.Cleanup(func() { a.stop() })
	return a
}

// get sends a GET request and returns the status and body.
func (a *app) get(t *testing.T, target string) (int, string) {
	t.Helper()
	resp, err := a.client.Get(a.baseURL + target)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return readResponse(t, resp)
}

// postJSON posts body to target and returns the status and response body.
func (a *app) postJSON(t *testing.T, target string, body []byte) (int, string) {
	t.Helper()
	resp, err := a.client.Post(a.baseURL+target, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", target, err)
	}
	return readResponse(t, resp)
}

func readResponse(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp.StatusCode, string(body)
}

func TestRunDeliversEveryWebhook(t *testing.T) {
	for _, mount := range []string{mountRoute, mountMiddleware} {
		t.Run(mount, func(t *testing.T) {
			a := startApp(t, mount)

			if status, body := a.get(t, "/healthz"); status != http.StatusOK || body != "ok\n" {
				t.Errorf("GET /healthz: got %d %q, want 200 %q", status, body, "ok\n")
			}
			if status, _ := a.get(t, "/api/hello"); status != http.StatusOK {
				t.Errorf("GET /api/hello: got %d, want 200", status)
			}
			if status, _ := a.get(t, "/no-such-route"); status != http.StatusNotFound {
				t.Errorf("GET /no-such-route: got %d, want 404", status)
			}

			sent := 0
			for _, body := range fixtures.Bodies() {
				status, _ := a.postJSON(t, webhookPath, body.Data)
				if status != http.StatusOK {
					t.Errorf("POST %s: got %d, want 200", body.Name, status)
				}
				sent++
			}
			for _, target := range fixtures.GetRequests() {
				status, _ := a.get(t, target)
				if status != http.StatusOK {
					t.Errorf("GET %s: got %d, want 200", target, status)
				}
				sent++
			}

			if err := a.stop(); err != nil {
				t.Fatalf("run: %v", err)
			}
			if got := len(a.mixpanel.Events()); got != sent {
				t.Errorf("Mixpanel received %d events, want %d", got, sent)
			}
			if got := a.mixpanel.UniqueEvents(); got != sent {
				t.Errorf("Mixpanel received %d distinct $insert_id values, want %d", got, sent)
			}
		})
	}
}

func TestRunWebhookMethods(t *testing.T) {
	tests := []struct {
		method string
		want   int
	}{
		{http.MethodOptions, http.StatusNoContent},
		// The bridge, not gorilla/mux, responds 405 in both forms.
		{http.MethodPut, http.StatusMethodNotAllowed},
	}
	for _, mount := range []string{mountRoute, mountMiddleware} {
		t.Run(mount, func(t *testing.T) {
			a := startApp(t, mount)
			for _, tt := range tests {
				req, err := http.NewRequest(tt.method, a.baseURL+webhookPath, nil)
				if err != nil {
					t.Fatalf("new request: %v", err)
				}
				resp, err := a.client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", tt.method, webhookPath, err)
				}
				allow := resp.Header.Get("Allow")
				status, _ := readResponse(t, resp)
				if status != tt.want {
					t.Errorf("%s %s: got %d, want %d", tt.method, webhookPath, status, tt.want)
				}
				if allow != "GET, HEAD, POST, OPTIONS" {
					t.Errorf("%s %s: Allow %q, want %q", tt.method, webhookPath, allow, "GET, HEAD, POST, OPTIONS")
				}
			}
			if err := a.stop(); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
}

// TestRouterUseMissesWebhook checks the pitfall that newHandler's comment
// describes: router.Use middleware never receives a path with no route.
func TestRouterUseMissesWebhook(t *testing.T) {
	mixpanel, err := mptest.Start()
	if err != nil {
		t.Fatalf("start Mixpanel stand-in: %v", err)
	}
	defer mixpanel.Close()
	bridge, err := branchmp.New(branchmp.Config{Token: "test-token", BaseURL: mixpanel.URL})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer bridge.Shutdown(context.Background())

	body := fixtures.BodyNamed("purchase-android")
	post := func(h http.Handler) int {
		req := httptest.NewRequest(http.MethodPost, webhookPath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}

	usedRouter := mux.NewRouter()
	usedRouter.HandleFunc("/healthz", handleHealth)
	usedRouter.Use(bridge.Middleware)
	if got := post(usedRouter); got != http.StatusNotFound {
		t.Errorf("router.Use(bridge.Middleware): got %d, want 404", got)
	}

	wrappedRouter := mux.NewRouter()
	wrappedRouter.HandleFunc("/healthz", handleHealth)
	if got := post(bridge.Middleware(wrappedRouter)); got != http.StatusOK {
		t.Errorf("bridge.Middleware(router): got %d, want 200", got)
	}
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr string
	}{
		{
			name: "defaults",
			env:  map[string]string{"MIXPANEL_TOKEN": "tok"},
			want: config{token: "tok", listen: defaultListen, mount: mountRoute},
		},
		{
			name: "every setting",
			args: []string{"-mount", "middleware"},
			env: map[string]string{
				"MIXPANEL_TOKEN":   "tok",
				"MIXPANEL_API_URL": "http://127.0.0.1:8081",
				"BRANCHMP_LISTEN":  "127.0.0.1:9090",
			},
			want: config{
				token:  "tok",
				apiURL: "http://127.0.0.1:8081",
				listen: "127.0.0.1:9090",
				mount:  mountMiddleware,
			},
		},
		{
			name:    "missing token",
			env:     map[string]string{"MIXPANEL_TOKEN": "  "},
			wantErr: "MIXPANEL_TOKEN is missing",
		},
		{
			name:    "relative API URL",
			env:     map[string]string{"MIXPANEL_TOKEN": "tok", "MIXPANEL_API_URL": "127.0.0.1:8081"},
			wantErr: `MIXPANEL_API_URL "127.0.0.1:8081" is invalid`,
		},
		{
			name:    "unknown mount",
			args:    []string{"-mount", "use"},
			env:     map[string]string{"MIXPANEL_TOKEN": "tok"},
			wantErr: `-mount "use" is invalid`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(tt.args, func(key string) string { return tt.env[key] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want nil", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
