package branchmp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/branchmp/branchmp/internal/fixtures"
)

// BenchmarkServeHTTP measures the ack path: check, decode, store in the
// spool and respond. Delivery runs meanwhile into a loopback stand-in.
func BenchmarkServeHTTP(b *testing.B) {
	for _, durable := range []bool{false, true} {
		name := map[bool]string{false: "memory", true: "spool"}[durable]
		b.Run(name, func(b *testing.B) {
			bridge := newBenchBridge(b, durable)

			body := fixtures.BodyNamed("purchase-android")
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			i := 0
			for b.Loop() {
				i++
				// A unique id per request, so dedup lets every one in.
				data := bytes.Replace(body, []byte(`"1234567890123456790"`), fmt.Appendf(nil, `"%d"`, i), 1)
				rec := httptest.NewRecorder()
				bridge.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/branch", bytes.NewReader(data)))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}

// BenchmarkServeHTTPParallel is BenchmarkServeHTTP with concurrent
// requests, as many as GOMAXPROCS, where the spool's group commit shares
// one fsync among them.
func BenchmarkServeHTTPParallel(b *testing.B) {
	for _, durable := range []bool{false, true} {
		name := map[bool]string{false: "memory", true: "spool"}[durable]
		b.Run(name, func(b *testing.B) {
			bridge := newBenchBridge(b, durable)

			body := fixtures.BodyNamed("purchase-android")
			var seq atomicCounter
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					data := bytes.Replace(body, []byte(`"1234567890123456790"`), fmt.Appendf(nil, `"%d"`, seq.next()), 1)
					rec := httptest.NewRecorder()
					bridge.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/branch", bytes.NewReader(data)))
					if rec.Code != http.StatusOK {
						b.Errorf("status %d", rec.Code)
						return
					}
				}
			})
		})
	}
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) next() int64 { return c.n.Add(1) }

// startMixpanelB starts a loopback server that accepts every request and
// discards it, so that its own work does not weigh on the measurement.
func startMixpanelB(b *testing.B) *httptest.Server {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/engage" {
			io.WriteString(w, "1")
			return
		}
		io.WriteString(w, `{"code":200,"status":1}`)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// newBenchBridge starts a bridge that accepts a whole benchmark run, with
// the spool on disk when durable, and shuts it down when the benchmark
// ends.
func newBenchBridge(b *testing.B, durable bool) *Bridge {
	b.Helper()
	mp := startMixpanelB(b)
	cfg := Config{Token: "t", BaseURL: mp.URL, QueueCapacity: 1 << 20, QueueMaxBytes: 4 << 30}
	if durable {
		cfg.SpoolDir = b.TempDir()
	}
	bridge, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bridge.Shutdown(context.Background()) })
	return bridge
}
