// Command demo runs the bridge end to end on the bundled Branch webhooks.
//
// The app's user table is an in-memory SQLite database, read through
// identity.NewSQLResolver.
//
// It starts a stand-in for Mixpanel and a web server with the bridge at
// /branch, both on 127.0.0.1. It posts every bundled webhook body, sends
// every bundled GET webhook, and shuts the bridge down so that every event
// is delivered. Then it prints what Mixpanel received. Nothing leaves the
// machine.
package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/fixtures"
	"github.com/branchmp/branchmp/internal/mptest"
	branchmp "github.com/branchmp/branchmp/middleware"
)

func main() {
	verbose := flag.Bool("v", false, "also print the bridge's JSON logs to stderr")
	flag.Parse()
	if err := run(os.Stdout, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// openUserStore returns an in-memory SQLite database that plays the host
// app's user table, and a resolver that looks users up in it by Branch's
// developer identity, with a cache in front.
func openUserStore() (*sql.DB, identity.Resolver, error) {
	db, err := sql.Open("sqlite", "file:demo-users?mode=memory&cache=shared")
	if err != nil {
		return nil, nil, err
	}
	const schema = `
		CREATE TABLE users (branch_identity TEXT PRIMARY KEY, id TEXT, name TEXT, plan TEXT);
		INSERT INTO users VALUES
			('user-42', 'user-42', 'Ada Lovelace', 'pro'),
			('user-77', 'user-77', 'Grace Hopper', 'team');`
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, nil, err
	}
	lookup, err := identity.NewSQLResolver(db,
		`SELECT id, name AS "$name", plan FROM users WHERE branch_identity = ?`, identity.SQLOptions{})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	cache, err := identity.NewCache(lookup, identity.CacheOptions{})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, cache, nil
}

func run(out io.Writer, verbose bool) error {
	mixpanel, err := mptest.Start()
	if err != nil {
		return err
	}
	defer mixpanel.Close()

	logger := zap.NewNop()
	if verbose {
		logger, err = zap.NewProduction()
		if err != nil {
			return err
		}
		defer logger.Sync()
	}

	users, resolver, err := openUserStore()
	if err != nil {
		return fmt.Errorf("user store: %w", err)
	}
	defer users.Close()

	bridge, err := branchmp.New(branchmp.Config{
		Token:         "demo-token",
		BaseURL:       mixpanel.URL,
		Resolver:      resolver,
		Logger:        logger,
		FlushInterval: 200 * time.Millisecond,
	})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/branch", bridge)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go server.Serve(ln)
	base := "http://" + ln.Addr().String()

	fmt.Fprintf(out, "Mixpanel stand-in at %s, bridge at %s/branch\n\n", mixpanel.URL, base)
	fmt.Fprintln(out, "Webhooks sent:")
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	sent, errs := sendFixtures(tw, base)
	tw.Flush()

	// Shutdown drains the queue: every accepted event is delivered first.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := server.Shutdown(ctx); err != nil {
		return err
	}
	if err := bridge.Shutdown(ctx); err != nil {
		return err
	}

	printEvents(out, mixpanel.Events())
	printProfiles(out, mixpanel.Profiles())

	stats := bridge.Stats()
	fmt.Fprintf(out, "\nTotals: %d webhooks sent, %d accepted, %d events delivered, %d profile updates, %d dead-lettered\n",
		sent, stats.Accepted, stats.Delivered, len(mixpanel.Profiles()), stats.DeadLettered)
	if errs > 0 || stats.Delivered != stats.Accepted || stats.DeadLettered > 0 {
		return errors.New("not every webhook was delivered")
	}
	return nil
}

// sendFixtures posts every bundled body and sends every bundled GET
// webhook, printing one line each. It returns the number sent and how many
// failed.
func sendFixtures(out io.Writer, base string) (sent, failed int) {
	client := &http.Client{Timeout: 5 * time.Second}
	show := func(label string, resp *http.Response, err error) {
		sent++
		if err != nil {
			failed++
			fmt.Fprintf(out, "  %s\terror: %v\n", label, err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed++
		}
		fmt.Fprintf(out, "  %s\t%s\n", label, resp.Status)
	}

	for _, body := range fixtures.Bodies() {
		resp, err := client.Post(base+"/branch", "application/json", bytes.NewReader(body.Data))
		show("POST "+body.Name+".json", resp, err)
	}
	for _, target := range fixtures.GetRequests() {
		resp, err := client.Get(base + target)
		show("GET "+shorten(target, 60), resp, err)
	}
	return sent, failed
}

// keyProperties are the properties the demo prints for each event.
var keyProperties = []string{
	"$insert_id", "$device_id", "$os", "utm_source", "utm_campaign", "revenue", "currency",
}

func printEvents(out io.Writer, events []map[string]any) {
	fmt.Fprintf(out, "\nMixpanel /import received %d events:\n", len(events))
	sort.SliceStable(events, func(i, j int) bool {
		return fmt.Sprint(prop(events[i], "time")) < fmt.Sprint(prop(events[j], "time"))
	})
	for _, ev := range events {
		fmt.Fprintf(out, "  %-20v distinct_id=%q time=%v\n", ev["event"], prop(ev, "distinct_id"), prop(ev, "time"))
		var parts []string
		for _, key := range keyProperties {
			if v := prop(ev, key); v != nil {
				parts = append(parts, fmt.Sprintf("%s=%v", key, v))
			}
		}
		props, _ := ev["properties"].(map[string]any)
		fmt.Fprintf(out, "      %s (%d properties)\n", strings.Join(parts, " "), len(props))
	}
}

func printProfiles(out io.Writer, profiles []map[string]any) {
	fmt.Fprintf(out, "\nMixpanel /engage received %d profile updates:\n", len(profiles))
	for _, p := range profiles {
		op, values := "$set", p["$set"]
		if v, ok := p["$set_once"]; ok {
			op, values = "$set_once", v
		}
		fmt.Fprintf(out, "  %-9s distinct_id=%q $ip=%v %v\n", op, p["$distinct_id"], p["$ip"], values)
	}
}

func prop(ev map[string]any, key string) any {
	props, _ := ev["properties"].(map[string]any)
	return props[key]
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
