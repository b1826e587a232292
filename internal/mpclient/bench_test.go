package mpclient

import (
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
func batchOf2000(b *testing.B) []mapping.Event {
	b.Helper()
	bodies := fixtures.Bodies()
	events := make([]mapping.Event, 2000)
	for i := range events {
		ev, err := branch.Decode(bodies[i%len(bodies)].Data)
		if err != nil {
			b.Fatal(err)
		}
		ev.ID = ""
		ev.Timestamp = 1717430400000 + int64(i)
		rec := mapping.Map(ev, identity.Identity{UserID: ev.User.DeveloperIdentity}, mapping.Options{ReceivedAt: time.Unix(1717430400, 0)})
		events[i] = rec.Event
	}
	return events
}

// BenchmarkImport2000 sends a batch of 2000 events through mixpanel-go to a
// loopback server that discards the body: JSON encoding, gzip and HTTP.
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
