package branchmp_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/fixtures"
	"github.com/branchmp/branchmp/internal/mptest"
	branchmp "github.com/branchmp/branchmp/middleware"
)

// postExampleWebhook posts the named bundled webhook body to h at path and
// returns the response status.
func postExampleWebhook(h http.Handler, path, fixture string) int {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(fixtures.BodyNamed(fixture)))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

// drainBridge drains bridge within 10 seconds.
func drainBridge(bridge *branchmp.Bridge) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bridge.Shutdown(ctx); err != nil {
		fmt.Println("shutdown:", err)
	}
}

// printImportedEvents prints the name and distinct_id of each event that the
// stand-in imported.
func printImportedEvents(mixpanel *mptest.Server) {
	for _, ev := range mixpanel.Events() {
		props, _ := ev["properties"].(map[string]any)
		fmt.Printf("event %q distinct_id=%q\n", ev["event"], props["distinct_id"])
	}
}

func ExampleNew() {
	// mptest is a stand-in for Mixpanel on 127.0.0.1. A real app leaves
	// BaseURL empty.
	mixpanel, err := mptest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mixpanel.Close()

	bridge, err := branchmp.New(branchmp.Config{
		Token:   "project-token",
		BaseURL: mixpanel.URL,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	mux := http.NewServeMux()
	mux.Handle("/branch", bridge)
	fmt.Println("webhook status:", postExampleWebhook(mux, "/branch", "purchase-android"))

	// Shutdown returns once every accepted event is delivered.
	drainBridge(bridge)
	printImportedEvents(mixpanel)
	// Output:
	// webhook status: 200
	// event "[Branch] purchase" distinct_id="user-77"
}

func ExampleHandler() {
	mixpanel, err := mptest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mixpanel.Close()

	// Handler panics on an invalid Config. Keep the Bridge to shut it down.
	bridge := branchmp.Handler(branchmp.Config{
		Token:   "project-token",
		BaseURL: mixpanel.URL,
	})
	router := http.NewServeMux()
	router.Handle("POST /webhooks/branch", bridge)

	fmt.Println("webhook status:", postExampleWebhook(router, "/webhooks/branch", "install-attributed-ios"))
	drainBridge(bridge)
	printImportedEvents(mixpanel)
	// Output:
	// webhook status: 200
	// event "[Branch] install" distinct_id="user-42"
}

func ExampleBridge_Middleware() {
	mixpanel, err := mptest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mixpanel.Close()

	bridge, err := branchmp.New(branchmp.Config{
		Token:   "project-token",
		BaseURL: mixpanel.URL,
		Path:    "/branch",
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The app's router has no route for /branch. The middleware takes
	// that path and passes every other request to the router.
	router := http.NewServeMux()
	router.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	app := bridge.Middleware(router)

	fmt.Println("POST /branch:", postExampleWebhook(app, "/branch", "purchase-android"))
	for _, path := range []string{"/healthz", "/missing"} {
		rec := httptest.NewRecorder()
		app.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Printf("GET %s: %d\n", path, rec.Code)
	}

	drainBridge(bridge)
	printImportedEvents(mixpanel)
	// Output:
	// POST /branch: 200
	// GET /healthz: 200
	// GET /missing: 404
	// event "[Branch] purchase" distinct_id="user-77"
}

func ExampleConfig() {
	mixpanel, err := mptest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mixpanel.Close()

	// accounts is a stand-in for the app's user table, keyed by the developer
	// identity that the app passes to Branch's setIdentity.
	accounts := map[string]identity.Identity{
		"user-42": {UserID: "42", Properties: map[string]any{"plan": "pro"}},
	}
	resolve := func(_ context.Context, ids identity.Identifiers) (identity.Identity, error) {
		account, ok := accounts[ids.DeveloperIdentity]
		if !ok {
			return identity.Identity{}, identity.ErrNotFound
		}
		return account, nil
	}

	bridge, err := branchmp.New(branchmp.Config{
		Token: "project-token",
		// Residency selects Mixpanel's EU endpoints. BaseURL overrides
		// them here so that the example stays on 127.0.0.1.
		Residency: branchmp.ResidencyEU,
		BaseURL:   mixpanel.URL,
		Resolver:  identity.ResolverFunc(resolve),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	fmt.Println("webhook status:", postExampleWebhook(bridge, "/branch", "install-attributed-ios"))
	drainBridge(bridge)
	printImportedEvents(mixpanel)

	// A known user also gets profile updates: $set_once with first-touch
	// attribution and $set with the resolver's properties. The two
	// updates may arrive in either order, so they are sorted.
	shownProperty := map[string]string{"$set_once": "branch_first_campaign", "$set": "plan"}
	var updates []string
	for _, p := range mixpanel.Profiles() {
		for op, key := range shownProperty {
			if values, ok := p[op].(map[string]any); ok {
				updates = append(updates, fmt.Sprintf("%s distinct_id=%q %s=%v",
					op, p["$distinct_id"], key, values[key]))
			}
		}
	}
	slices.Sort(updates)
	fmt.Println(strings.Join(updates, "\n"))
	// Output:
	// webhook status: 200
	// event "[Branch] install" distinct_id="42"
	// $set distinct_id="42" plan=pro
	// $set_once distinct_id="42" branch_first_campaign=summer_sale
}
