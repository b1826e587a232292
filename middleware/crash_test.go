package branchmp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/branchmp/branchmp/internal/mptest"
)

// Environment of the crash test's child process.
const (
	envCrashSpool = "BRANCHMP_CRASH_SPOOL"
	envCrashMP    = "BRANCHMP_CRASH_MIXPANEL"
)

// TestCrashChild is the server that TestCrashRecovery runs as a child
// process and kills. It does nothing in a normal test run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashSpool)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashRecovery")
	}
	b, err := New(Config{
		Token:           "test-token",
		BaseURL:         os.Getenv(envCrashMP),
		SpoolDir:        dir,
		FlushInterval:   20 * time.Millisecond,
		RetryBackoff:    5 * time.Millisecond,
		RetryMaxBackoff: 20 * time.Millisecond,
		MaxAttempts:     1_000_000,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: b, ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	fmt.Printf("ADDR %s\n", ln.Addr())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// crashChild is a running child server.
type crashChild struct {
	cmd  *exec.Cmd
	addr string
}

func startCrashChild(t *testing.T, spoolDir, mixpanelURL string) *crashChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashSpool+"="+spoolDir, envCrashMP+"="+mixpanelURL)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return &crashChild{cmd: cmd, addr: a}
	case <-exited:
		cmd.Wait()
		t.Fatal("child server exited before it listened")
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child server did not start within 30s")
	}
	return nil
}

// load posts webhooks with increasing ids from several goroutines to the
// address that target returns, until stop is closed or maxPosts were
// sent. It records every id that got 200.
type load struct {
	next     atomic.Int64
	mu       sync.Mutex
	accepted map[int64]bool
	failed   atomic.Int64
}

func (l *load) run(target func() string, stop <-chan struct{}, maxPosts int64) {
	client := &http.Client{Timeout: 2 * time.Second}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := l.next.Add(1)
				if id > maxPosts {
					return
				}
				url := fmt.Sprintf("http://%s/branch?ev=OPEN&id=%d&ts=1717433000000&uid=user-%d", target(), id, id%7)
				resp, err := client.Get(url)
				if err != nil {
					l.failed.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					l.mu.Lock()
					l.accepted[id] = true
					l.mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
}

func (l *load) acceptedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	mp := startMixpanel(t)
	// A slow Mixpanel keeps events in flight when the child is killed.
	mp.SetFault(func(string) *mptest.Response {
		time.Sleep(10 * time.Millisecond)
		return nil
	})
	spoolDir := t.TempDir()

	var addr atomic.Value
	child := startCrashChild(t, spoolDir, mp.URL)
	addr.Store(child.addr)

	l := &load{accepted: map[int64]bool{}}
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		l.run(func() string { return addr.Load().(string) }, stop, 3000)
		close(loadDone)
	}()

	// Kill the child with SIGKILL mid-load, then restart it on the same
	// spool while the load goes on.
	waitFor(t, func() bool { return l.next.Load() > 300 })
	if err := child.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.cmd.Wait()
	acceptedAtKill := l.acceptedCount()

	// Counted in webhooks accepted, not posted: while the child restarts,
	// posts fail fast with connection errors.
	child = startCrashChild(t, spoolDir, mp.URL)
	addr.Store(child.addr)
	waitFor(t, func() bool { return l.acceptedCount() > acceptedAtKill+300 })
	close(stop)
	<-loadDone

	// SIGTERM drains the restarted child.
	child.cmd.Process.Signal(syscall.SIGTERM)
	if err := child.cmd.Wait(); err != nil {
		t.Fatalf("child after SIGTERM: %v", err)
	}

	delivered := map[string][]string{} // branch event id -> each record's JSON
	for _, ev := range mp.Events() {
		data, _ := json.Marshal(ev)
		id := fmt.Sprint(props(ev)["branch_event_id"])
		delivered[id] = append(delivered[id], string(data))
	}
	lost, duplicates := 0, 0
	for id := range l.accepted {
		copies := delivered[fmt.Sprint(id)]
		if len(copies) == 0 {
			lost++
			continue
		}
		for _, c := range copies[1:] {
			duplicates++
			if c != copies[0] {
				t.Errorf("event %d: duplicate with another dedup tuple:\n%s\n%s", id, copies[0], c)
			}
		}
	}
	t.Logf("posted %d, accepted %d, connection errors %d, delivered %d distinct, duplicates %d (same tuple), lost %d",
		l.next.Load(), len(l.accepted), l.failed.Load(), len(delivered), duplicates, lost)
	if lost > 0 {
		t.Errorf("%d webhooks got 200 but never reached Mixpanel", lost)
	}
	if len(l.accepted) < 500 {
		t.Errorf("accepted %d webhooks, want at least 500 for a meaningful run", len(l.accepted))
	}
}
