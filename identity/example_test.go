package identity_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/branchmp/branchmp/identity"
)

func ExampleNewCache() {
	calls := 0
	lookup := identity.ResolverFunc(func(_ context.Context, ids identity.Identifiers) (identity.Identity, error) {
		calls++ // this example resolves from one goroutine only
		if ids.DeveloperIdentity == "dev-42" {
			return identity.Identity{UserID: "user-42"}, nil
		}
		return identity.Identity{}, identity.ErrNotFound
	})
	cache, err := identity.NewCache(lookup, identity.CacheOptions{})
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	for _, dev := range []string{"dev-42", "dev-42", "dev-7", "dev-7"} {
		user, err := cache.Resolve(ctx, identity.Identifiers{DeveloperIdentity: dev})
		fmt.Printf("%s: user %q, err %v\n", dev, user.UserID, err)
	}
	stats := cache.Stats()
	fmt.Printf("calls %d, hits %d, negative hits %d, misses %d\n",
		calls, stats.Hits, stats.NegativeHits, stats.Misses)
	// Output:
	// dev-42: user "user-42", err <nil>
	// dev-42: user "user-42", err <nil>
	// dev-7: user "", err identity: user not found
	// dev-7: user "", err identity: user not found
	// calls 2, hits 1, negative hits 1, misses 2
}

func ExampleNewHTTPResolver() {
	// A stand-in for the app's endpoint, with one user.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ids struct {
			DeveloperIdentity string `json:"developer_identity"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ids); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if ids.DeveloperIdentity != "dev-42" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"user_id": "user-42", "properties": {"$email": "ada@example.com"}}`)
	}))
	defer app.Close()

	lookup, err := identity.NewHTTPResolver(app.URL+"/internal/branch-user", identity.HTTPOptions{
		Header: http.Header{"Authorization": {"Bearer app-token"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	cached, err := identity.NewCache(lookup, identity.CacheOptions{})
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	user, err := cached.Resolve(ctx, identity.Identifiers{DeveloperIdentity: "dev-42", OS: "IOS"})
	fmt.Println(user.UserID, user.Properties["$email"], err)
	_, err = cached.Resolve(ctx, identity.Identifiers{DeveloperIdentity: "dev-7"})
	fmt.Println(err)
	// Output:
	// user-42 ada@example.com <nil>
	// identity: user not found
}

func ExampleNewSQLResolver() {
	// An in-memory SQLite database exists once per connection, so this
	// example keeps to one connection.
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	_, err = db.Exec(`CREATE TABLE users (
			id TEXT, branch_identity TEXT, idfv TEXT, email TEXT, plan TEXT);
		INSERT INTO users VALUES ('user-42', 'dev-42', 'idfv-42', 'ada@example.com', NULL)`)
	if err != nil {
		log.Fatal(err)
	}

	lookup, err := identity.NewSQLResolver(db,
		`SELECT id, email AS "$email", plan FROM users WHERE branch_identity = ? OR idfv = ?`,
		identity.SQLOptions{Args: []string{identity.FieldDeveloperIdentity, identity.FieldIDFV}})
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	user, err := lookup.Resolve(ctx, identity.Identifiers{IDFV: "idfv-42"})
	fmt.Println(user.UserID, user.Properties, err)
	_, err = lookup.Resolve(ctx, identity.Identifiers{DeveloperIdentity: "dev-7"})
	fmt.Println(err)
	// Output:
	// user-42 map[$email:ada@example.com] <nil>
	// identity: user not found
}
