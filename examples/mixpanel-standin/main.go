// Command mixpanel-standin serves Mixpanel's /import and /engage endpoints
// on a local address, for trying the examples and the sidecar without a
// Mixpanel project. It decodes what it receives like Mixpanel (gzip, JSON
// arrays, basic auth on /import), responds 200, and prints a line per
// request. Point MIXPANEL_API_URL at it.
//
//	go run ./examples/mixpanel-standin -listen 127.0.0.1:8081
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/branchmp/branchmp/internal/mptest"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to listen on")
	status := flag.Int("status", 0, "answer every request with this HTTP status instead of a normal response, to try failures (0 answers normally)")
	flag.Parse()
	if err := run(*listen, *status); err != nil {
		fmt.Fprintln(os.Stderr, "mixpanel-standin:", err)
		os.Exit(1)
	}
}

func run(listen string, status int) error {
	srv, err := mptest.StartAt(listen)
	if err != nil {
		return err
	}
	if status != 0 {
		srv.SetFault(func(string) *mptest.Response {
			return &mptest.Response{Status: status, Body: fmt.Sprintf(`{"error":"stand-in answers %d","status":0}`, status)}
		})
	}
	fmt.Printf("Mixpanel stand-in at %s (MIXPANEL_API_URL=%s)\n", srv.URL, srv.URL)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	seen := 0
	for {
		select {
		case <-ctx.Done():
			fmt.Printf("events imported: %d (%d distinct $insert_id), profile updates: %d\n",
				len(srv.Events()), srv.UniqueEvents(), len(srv.Profiles()))
			return srv.Close()
		case <-time.After(200 * time.Millisecond):
		}
		requests := srv.Requests()
		for _, r := range requests[seen:] {
			fmt.Printf("%s %s %d records -> %d\n", r.At.Format(time.TimeOnly), r.Path, len(r.Records), r.Status)
		}
		seen = len(requests)
	}
}
