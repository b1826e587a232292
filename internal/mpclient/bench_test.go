package mpclient

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/fixtures"
	"github.com/branchmp/branchmp/internal/mapping"
)

// batchOf2000 maps the fixtures round-robin into a full /import batch.
func batchOf2000(b *testing.B) [][]byte {
	b.Helper()
	bodies := fixtures.Bodies()
	events := make([][]byte, 2000)
	for i := range events {
		ev, err := branch.Decode(bodies[i%len(bodies)].Data)
		if err != nil {
			b.Fatal(err)
		}
		ev.ID = ""
		ev.Timestamp = 1717430400000 + int64(i)
		rec := mapping.Map(ev, identity.Identity{UserID: ev.User.DeveloperIdentity}, mapping.Options{ReceivedAt: time.Unix(1717430400, 0), EncodeOnly: true})
		events[i] = rec.JSON
	}
	return events
}

// BenchmarkImport2000 sends a batch of 2000 encoded events to a loopback
// server that discards the body: gzip and HTTP.
func BenchmarkImport2000(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"code":200,"num_records_imported":2000,"status":1}`)
	}))
	defer srv.Close()
	c := New(Config{Token: "t", BaseURL: srv.URL, HTTPClient: srv.Client()})
	events := batchOf2000(b)

	b.ReportAllocs()
	for b.Loop() {
		if res := c.Import(context.Background(), events); res.Outcome != OK {
			b.Fatalf("import: %v %v", res.Outcome, res.Err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
}

// BenchmarkGzipLevel compresses the JSON of a batch of 2000 events at the
// level Import uses and at the default level, and reports the size ratio.
func BenchmarkGzipLevel(b *testing.B) {
	raw := bytes.Join(batchOf2000(b), []byte(","))
	for _, level := range []struct {
		name  string
		level int
	}{{"import", gzipLevel}, {"default", gzip.DefaultCompression}} {
		b.Run(level.name, func(b *testing.B) {
			var out bytes.Buffer
			zw, err := gzip.NewWriterLevel(&out, level.level)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				out.Reset()
				zw.Reset(&out)
				zw.Write(raw)
				zw.Close()
			}
			b.ReportMetric(float64(out.Len())/float64(len(raw)), "size/json")
		})
	}
}
