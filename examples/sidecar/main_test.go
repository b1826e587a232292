package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/branchmp/branchmp/internal/fixtures"
	"github.com/branchmp/branchmp/internal/mptest"
)

// binDir holds the sidecar binary that the tests share.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "branchmp-sidecar-test")
	if err != nil {
		panic(err)
	}
	binDir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

var (
	buildOnce sync.Once
	buildErr  error
)

// buildSidecar builds the sidecar once as a static binary, as the
// container image does.
func buildSidecar(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "branchmp-sidecar")
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// sidecar is a running sidecar process.
type sidecar struct {
	cmd     *exec.Cmd
	webhook string // base URL of the webhook listener
	admin   string // base URL of the admin listener
	mu      sync.Mutex
	logs    bytes.Buffer
	exited  chan struct{}
}

func (s *sidecar) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// startSidecar runs bin with env and waits for its "sidecar started" line.
func startSidecar(t *testing.T, bin string, env ...string) *sidecar {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sidecar{cmd: cmd, exited: make(chan struct{})}
	started := make(chan map[string]any, 1)
	go func() {
		defer close(s.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.logs.Write(sc.Bytes())
			s.logs.WriteByte('\n')
			s.mu.Unlock()
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "sidecar started" {
				started <- line
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.exited
		cmd.Wait()
	})

	select {
	case line := <-started:
		s.webhook = "http://" + line["webhook_addr"].(string)
		s.admin = "http://" + line["admin_addr"].(string)
		return s
	case <-s.exited:
		t.Fatalf("sidecar exited before it started:\n%s", s.logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("sidecar did not start within 30s:\n%s", s.logText())
	}
	return nil
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSidecarProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the sidecar binary")
	}
	mp, err := mptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()

	const token, secret = "sidecar-token-8a7f", "sidecar-secret-31c9"
	bin := buildSidecar(t)
	sc := startSidecar(t, bin,
		"MIXPANEL_TOKEN="+token,
		"MIXPANEL_API_URL="+mp.URL,
		"BRANCHMP_WEBHOOK_SECRET="+secret,
		"BRANCHMP_LISTEN=127.0.0.1:0",
		"BRANCHMP_ADMIN_LISTEN=127.0.0.1:0",
		"BRANCHMP_SPOOL_DIR="+t.TempDir(),
		"BRANCHMP_FLUSH_INTERVAL=50ms",
		"BRANCHMP_GRACE_PERIOD=10s",
	)

	if code, _ := get(t, sc.admin+"/healthz"); code != 200 {
		t.Errorf("healthz: got %d, want 200", code)
	}
	if code, _ := get(t, sc.webhook+"/healthz"); code != 404 {
		t.Errorf("healthz on the webhook port: got %d, want 404", code)
	}

	sent := 0
	for _, body := range fixtures.Bodies() {
		req, _ := http.NewRequest("POST", sc.webhook+"/branch", bytes.NewReader(body.Data))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Webhook-Secret", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: got %d, want 200", body.Name, resp.StatusCode)
		}
		sent++
	}
	for _, target := range fixtures.GetRequests() {
		code, _ := get(t, sc.webhook+strings.Replace(target, "/branch", "/branch/"+secret, 1))
		if code != 200 {
			t.Fatalf("GET %s: got %d, want 200", target, code)
		}
		sent++
	}
	if code, _ := get(t, sc.webhook+"/branch?ev=OPEN"); code != 401 {
		t.Errorf("webhook without the secret: got %d, want 401", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := mp.WaitEvents(ctx, sent); err != nil {
		t.Fatalf("events delivered: got %d, want %d", len(mp.Events()), sent)
	}

	// The stand-in records an import before the sidecar counts it.
	var metrics string
	waitUntil(t, "delivered count in /metrics", func() bool {
		_, metrics = get(t, sc.admin+"/metrics")
		return strings.Contains(metrics, "branchmp_events_delivered_total 8")
	})
	for _, want := range []string{
		`branchmp_webhooks_total{outcome="accepted",status="200"} 8`,
		`branchmp_webhooks_total{outcome="unauthorized",status="401"} 1`,
		`branchmp_events_delivered_total 8`,
		`branchmp_ready 1`,
		`branchmp_mixpanel_request_duration_seconds_count{endpoint="import",status_class="2xx"}`,
		`go_goroutines`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := get(t, sc.admin+"/readyz"); code != 200 {
		t.Errorf("readyz: got %d, want 200", code)
	}

	// Mixpanel starts rejecting the token: readiness turns false.
	mp.SetFault(func(string) *mptest.Response {
		return &mptest.Response{Status: 401, Body: `{"error":"Invalid credentials"}`}
	})
	code, _ := get(t, sc.webhook+"/branch?ev=OPEN&id=900&secret="+secret)
	if code != 200 {
		t.Fatalf("webhook during the outage: got %d, want 200", code)
	}
	waitUntil(t, "readyz turns 503", func() bool {
		code, _ := get(t, sc.admin+"/readyz")
		return code == 503
	})

	// SIGTERM drains: once the credentials work, the held event goes out
	// and the process exits 0.
	mp.SetFault(nil)
	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-sc.exited
	if err := sc.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, sc.logText())
	}
	if got := mp.UniqueEvents(); got != sent+1 {
		t.Errorf("events after drain: got %d, want %d", got, sent+1)
	}

	logs := sc.logText()
	for _, s := range []string{token, secret} {
		if strings.Contains(logs, s) {
			t.Errorf("sidecar logs contain a secret")
		}
	}
	if !strings.Contains(logs, "sidecar stopped") {
		t.Errorf("no stop line in the logs:\n%s", logs)
	}
}

// TestSidecarExitReportsLostDeadLetters stops a sidecar without a spool
// directory while it keeps a dead letter: the exit must fail and log the
// loss.
func TestSidecarExitReportsLostDeadLetters(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the sidecar binary")
	}
	mp, err := mptest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	mp.SetFault(func(string) *mptest.Response {
		return &mptest.Response{Status: 400, Body: "not json"} // rejected: dead-lettered at once
	})

	sc := startSidecar(t, buildSidecar(t),
		"MIXPANEL_TOKEN=lost-token",
		"MIXPANEL_API_URL="+mp.URL,
		"BRANCHMP_LISTEN=127.0.0.1:0",
		"BRANCHMP_ADMIN_LISTEN=127.0.0.1:0",
		"BRANCHMP_FLUSH_INTERVAL=50ms",
	)
	if code, body := get(t, sc.webhook+"/branch?ev=OPEN&id=77&ts=1717433000777"); code != 200 {
		t.Fatalf("webhook: got %d %s, want 200", code, body)
	}
	waitUntil(t, "dead letter", func() bool {
		_, body := get(t, sc.admin+"/deadletters")
		return strings.Contains(body, `"Stage":"import"`) || strings.Contains(body, `"stage":"import"`)
	})

	if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-sc.exited
	if err := sc.cmd.Wait(); err == nil {
		t.Errorf("exit after SIGTERM with a dead letter in memory: got success, want an error\n%s", sc.logText())
	}
	if logs := sc.logText(); !strings.Contains(logs, "dead letters were kept in memory and are lost") {
		t.Errorf("no line about the lost dead letters:\n%s", logs)
	}
}

func TestSidecarRejectsBadSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the sidecar binary")
	}
	bin := buildSidecar(t)
	spoolFile := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(spoolFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	loopback := []string{"MIXPANEL_TOKEN=t", "BRANCHMP_LISTEN=127.0.0.1:0", "BRANCHMP_ADMIN_LISTEN=127.0.0.1:0"}
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"spool too small", append([]string{"BRANCHMP_SPOOL_DIR=" + t.TempDir(), "BRANCHMP_SPOOL_MAX_BYTES=100"}, loopback...), "BRANCHMP_SPOOL_MAX_BYTES (-spool-max-bytes) is invalid"},
		{"bad spool size", append([]string{"BRANCHMP_SPOOL_MAX_BYTES=lots"}, loopback...), "BRANCHMP_SPOOL_MAX_BYTES"},
		// A directory that cannot be opened is named, but not called
		// invalid: the cause may be a lock or a permission.
		{"spool directory is a file", append([]string{"BRANCHMP_SPOOL_DIR=" + spoolFile}, loopback...), "BRANCHMP_SPOOL_DIR (-spool-dir): branchmp: SpoolDir:"},
		{"no token", nil, "MIXPANEL_TOKEN"},
		{"bad workers", []string{"MIXPANEL_TOKEN=t", "BRANCHMP_WORKERS=many"}, "BRANCHMP_WORKERS"},
		{"bad duration", []string{"MIXPANEL_TOKEN=t", "BRANCHMP_FLUSH_INTERVAL=soon"}, "BRANCHMP_FLUSH_INTERVAL"},
		{"bad residency", []string{"MIXPANEL_TOKEN=t", "BRANCHMP_RESIDENCY=MARS", "BRANCHMP_LISTEN=127.0.0.1:0", "BRANCHMP_ADMIN_LISTEN=127.0.0.1:0"}, "Residency"},
		{"bad allowlist", []string{"MIXPANEL_TOKEN=t", "BRANCHMP_ALLOWED_IPS=nope", "BRANCHMP_LISTEN=127.0.0.1:0", "BRANCHMP_ADMIN_LISTEN=127.0.0.1:0"}, "AllowedIPs"},
		{"bad log level", []string{"MIXPANEL_TOKEN=t", "BRANCHMP_LOG_LEVEL=loud"}, "BRANCHMP_LOG_LEVEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin)
			cmd.Env = tt.env
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("exit 0, want a failure naming %s", tt.want)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("output %q does not name %s", out, tt.want)
			}
		})
	}

	out, err := exec.Command(bin, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"BRANCHMP_LISTEN", "MIXPANEL_TOKEN", "BRANCHMP_SPOOL_DIR", `default ":9090"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-h output lacks %q", want)
		}
	}
}
