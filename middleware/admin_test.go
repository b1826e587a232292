package branchmp

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/branchmp/branchmp/internal/mptest"
)

func adminRequest(t *testing.T, h http.Handler, method, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Code, rec.Body.String()
}

func TestAdminHandler(t *testing.T) {
	mp := startMixpanel(t)
	mp.SetFault(func(path string) *mptest.Response {
		if path == "/import" {
			return &mptest.Response{Status: 400, Body: "not json"}
		}
		return nil
	})
	b := newBridge(t, testConfig(mp))
	admin := b.AdminHandler()
	for i := range 3 {
		sendEvent(t, b, i+1)
	}
	waitFor(t, func() bool { return b.Stats().DeadLetters == 3 })

	if code, _ := adminRequest(t, admin, "GET", "/healthz"); code != 200 {
		t.Errorf("healthz: got %d, want 200", code)
	}
	if code, _ := adminRequest(t, admin, "GET", "/readyz"); code != 200 {
		t.Errorf("readyz: got %d, want 200", code)
	}

	code, body := adminRequest(t, admin, "GET", "/deadletters?limit=2")
	var listed []deadLetterJSON
	if err := json.Unmarshal([]byte(body), &listed); err != nil || code != 200 {
		t.Fatalf("deadletters: got %d %q, err %v", code, body, err)
	}
	if len(listed) != 2 || listed[0].Stage != "import" || listed[0].Status != 400 || listed[0].EventName != "OPEN" {
		t.Errorf("deadletters: got %+v", listed)
	}

	tests := []struct {
		method, target string
		want           int
		wantBody       string
	}{
		{"GET", "/deadletters?limit=x", 400, "positive integer"},
		{"POST", "/deadletters/replay", 400, "all=true"},
		{"POST", "/deadletters/replay?id=abc", 400, "dead letter id"},
		{"POST", "/deadletters/purge?id=" + itoa(listed[0].ID), 200, `"count":1`},
		{"POST", "/deadletters/purge?id=" + itoa(listed[0].ID), 200, `"count":0`},
		{"GET", "/deadletters/purge", 405, ""},
	}
	for _, tt := range tests {
		code, body := adminRequest(t, admin, tt.method, tt.target)
		if code != tt.want || !strings.Contains(body, tt.wantBody) {
			t.Errorf("%s %s: got %d %q, want %d with %q", tt.method, tt.target, code, body, tt.want, tt.wantBody)
		}
	}

	mp.SetFault(nil)
	if code, body := adminRequest(t, admin, "POST", "/deadletters/replay?all=true"); code != 200 || !strings.Contains(body, `"count":2`) {
		t.Errorf("replay all: got %d %q", code, body)
	}
	shutdown(t, b)
	if got := len(mp.Events()); got != 2 {
		t.Errorf("events after replay: got %d, want 2", got)
	}
	if code, _ := adminRequest(t, admin, "GET", "/readyz"); code != 503 {
		t.Errorf("readyz after shutdown: got %d, want 503", code)
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestDeadLetterIDsWorkForReplayAndPurge(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "memory", true: "bolt"}[durable], func(t *testing.T) {
			mp := startMixpanel(t)
			cfg := testConfig(mp)
			if durable {
				cfg.SpoolDir = t.TempDir()
			}
			b := newBridge(t, cfg)
			// Delivered events first, so spool sequence numbers and dead
			// letter IDs differ.
			for i := range 3 {
				sendEvent(t, b, i+1)
			}
			waitFor(t, func() bool { return b.Stats().Delivered == 3 })
			mp.SetFault(func(path string) *mptest.Response {
				if path == "/import" {
					return &mptest.Response{Status: 400, Body: "not json"}
				}
				return nil
			})
			sendEvent(t, b, 4)
			sendEvent(t, b, 5)
			waitFor(t, func() bool { return b.Stats().DeadLetters == 2 })

			dead := deadLetters(t, b)
			if n, err := b.Purge(dead[0].ID); err != nil || n != 1 {
				t.Fatalf("Purge(%d): got %d, %v, want 1", dead[0].ID, n, err)
			}
			mp.SetFault(nil)
			if n, err := b.Replay(dead[1].ID); err != nil || n != 1 {
				t.Fatalf("Replay(%d): got %d, %v, want 1", dead[1].ID, n, err)
			}
			waitFor(t, func() bool { return b.Stats().Delivered == 4 })
			if got := len(deadLetters(t, b)); got != 0 {
				t.Errorf("dead letters left: got %d, want 0", got)
			}
		})
	}
}
