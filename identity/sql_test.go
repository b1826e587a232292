package identity_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver

	"github.com/branchmp/branchmp/identity"
)

// defaultPostgresDSN is the PostgreSQL server of the development and CI
// machines. BRANCHMP_TEST_POSTGRES_DSN replaces it.
const defaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// sqlDialect is what differs between the databases under test.
type sqlDialect struct {
	// placeholder returns the n-th positional placeholder, from 1.
	placeholder func(n int) string
	// sleepQuery returns a query that takes one argument and runs for
	// longer than any test.
	sleepQuery func(table string) string
}

var (
	postgresDialect = sqlDialect{
		placeholder: func(n int) string { return fmt.Sprintf("$%d", n) },
		sleepQuery: func(table string) string {
			return "SELECT id FROM " + table + ", pg_sleep(30) WHERE developer_identity = $1"
		},
	}
	sqliteDialect = sqlDialect{
		placeholder: func(int) string { return "?" },
		// SQLite has no sleep function, so the query counts to 10^9 instead.
		// Without an interrupt that takes minutes.
		sleepQuery: func(table string) string {
			return `WITH RECURSIVE counter(n) AS (
					SELECT 1 UNION ALL SELECT n + 1 FROM counter WHERE n < 1000000000)
				SELECT id FROM ` + table + ` WHERE developer_identity = ? AND (SELECT max(n) FROM counter) > 0`
		},
	}
)

func TestSQLResolverPostgres(t *testing.T) {
	dsn := os.Getenv("BRANCHMP_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = defaultPostgresDSN
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("open PostgreSQL: %v", err)
	}
	t.Cleanup(func() { db.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		msg := fmt.Sprintf("PostgreSQL at %s is not reachable: %v", redactDSN(dsn), err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + ". CI is set, so this test fails instead of skipping")
		}
		t.Skip(msg + ". Start PostgreSQL or set BRANCHMP_TEST_POSTGRES_DSN to run this test")
	}
	testSQLResolver(t, db, postgresDialect)
}

func TestSQLResolverSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("open SQLite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	testSQLResolver(t, db, sqliteDialect)
}

// testSQLResolver runs the SQL resolver's cases against db, in a table of
// its own that it drops at the end.
func testSQLResolver(t *testing.T, db *sql.DB, d sqlDialect) {
	table := createUsersTable(t, db)
	p := d.placeholder
	byDevOrIDFV := fmt.Sprintf(`SELECT id, email AS "$email", plan, visits FROM %s
		WHERE developer_identity = %s OR idfv = %s ORDER BY id`, table, p(1), p(2))
	twoArgs := identity.SQLOptions{Args: []string{identity.FieldDeveloperIdentity, identity.FieldIDFV}}

	tests := []struct {
		name    string
		query   string
		opts    identity.SQLOptions
		ids     identity.Identifiers
		want    identity.Identity
		wantErr error // nil, ErrNotFound, or errTransient for any other error
	}{
		{
			name:  "found by developer identity",
			query: byDevOrIDFV, opts: twoArgs,
			ids: identity.Identifiers{DeveloperIdentity: "dev-1", IDFA: "ignored"},
			want: identity.Identity{UserID: "u-1", Properties: map[string]any{
				"$email": "one@example.com", "plan": "pro", "visits": int64(7),
			}},
		},
		{
			name:  "found by second argument",
			query: byDevOrIDFV, opts: twoArgs,
			ids: identity.Identifiers{IDFV: "idfv-2"},
			want: identity.Identity{UserID: "u-2", Properties: map[string]any{
				"$email": "two@example.com",
			}},
		},
		{
			name:  "empty identifier is NULL",
			query: byDevOrIDFV, opts: twoArgs,
			ids:     identity.Identifiers{DeveloperIdentity: "dev-unknown"},
			wantErr: identity.ErrNotFound,
		},
		{
			name:  "default argument",
			query: fmt.Sprintf("SELECT id FROM %s WHERE developer_identity = %s", table, p(1)),
			ids:   identity.Identifiers{DeveloperIdentity: "dev-1"},
			want:  identity.Identity{UserID: "u-1"},
		},
		{
			name:  "integer user id",
			query: fmt.Sprintf("SELECT visits FROM %s WHERE developer_identity = %s", table, p(1)),
			ids:   identity.Identifiers{DeveloperIdentity: "dev-1"},
			want:  identity.Identity{UserID: "7"},
		},
		{
			name:    "unknown user",
			query:   byDevOrIDFV,
			opts:    twoArgs,
			ids:     identity.Identifiers{DeveloperIdentity: "dev-9", IDFV: "idfv-9"},
			wantErr: identity.ErrNotFound,
		},
		{
			name:    "NULL user id",
			query:   fmt.Sprintf("SELECT id, email FROM %s WHERE developer_identity = %s", table, p(1)),
			ids:     identity.Identifiers{DeveloperIdentity: "dev-null"},
			wantErr: identity.ErrNotFound,
		},
		{
			name:    "empty user id",
			query:   fmt.Sprintf("SELECT plan FROM %s WHERE developer_identity = %s", table, p(1)),
			ids:     identity.Identifiers{DeveloperIdentity: "dev-null"},
			wantErr: identity.ErrNotFound,
		},
		{
			name:    "all arguments empty",
			query:   "SELECT no_such_column FROM no_such_table",
			opts:    twoArgs,
			ids:     identity.Identifiers{IDFA: "idfa-1", OS: "IOS"},
			wantErr: identity.ErrNotFound,
		},
		{
			name:    "broken query",
			query:   fmt.Sprintf("SELECT no_such_column FROM %s WHERE developer_identity = %s", table, p(1)),
			ids:     identity.Identifiers{DeveloperIdentity: "dev-1"},
			wantErr: errTransient,
		},
		{
			name:    "missing table",
			query:   fmt.Sprintf("SELECT id FROM %s_missing WHERE developer_identity = %s", table, p(1)),
			ids:     identity.Identifiers{DeveloperIdentity: "dev-1"},
			wantErr: errTransient,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := identity.NewSQLResolver(db, tt.query, tt.opts)
			if err != nil {
				t.Fatalf("NewSQLResolver: %v", err)
			}
			got, err := r.Resolve(context.Background(), tt.ids)
			checkSQLError(t, err, tt.wantErr)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("identity (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("canceled context", func(t *testing.T) {
		query := fmt.Sprintf("SELECT id FROM %s WHERE developer_identity = %s", table, p(1))
		r := mustSQLResolver(t, db, query)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := r.Resolve(ctx, identity.Identifiers{DeveloperIdentity: "dev-1"})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err: got %v, want context.Canceled", err)
		}
	})

	t.Run("deadline during query", func(t *testing.T) {
		r := mustSQLResolver(t, db, d.sleepQuery(table))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := r.Resolve(ctx, identity.Identifiers{DeveloperIdentity: "dev-1"})
		if err == nil || errors.Is(err, identity.ErrNotFound) {
			t.Errorf("err: got %v, want a transient error", err)
		}
		if elapsed := time.Since(start); elapsed > 10*time.Second {
			t.Errorf("Resolve took %v, want it to stop soon after the 100ms deadline", elapsed)
		}
	})
}

// errTransient stands for any error other than ErrNotFound in test tables.
var errTransient = errors.New("any transient error")

func checkSQLError(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == errTransient:
		if err == nil || errors.Is(err, identity.ErrNotFound) {
			t.Errorf("err: got %v, want a transient error", err)
		}
	case !errors.Is(err, want):
		t.Errorf("err: got %v, want %v", err, want)
	}
}

func mustSQLResolver(t *testing.T, db *sql.DB, query string) identity.Resolver {
	t.Helper()
	r, err := identity.NewSQLResolver(db, query, identity.SQLOptions{})
	if err != nil {
		t.Fatalf("NewSQLResolver: %v", err)
	}
	return r
}

// createUsersTable creates a users table with a name unique to this test
// run, fills it, and drops it when the test ends.
func createUsersTable(t *testing.T, db *sql.DB) string {
	t.Helper()
	ctx := context.Background()
	table := fmt.Sprintf("branchmp_users_%d_%d", os.Getpid(), time.Now().UnixNano())
	ddl := "CREATE TABLE " + table + ` (
		id TEXT, developer_identity TEXT, idfv TEXT,
		email TEXT, plan TEXT, visits BIGINT)`
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		t.Fatalf("create table: %v", err)
	}
	t.Cleanup(func() {
		if _, err := db.ExecContext(ctx, "DROP TABLE "+table); err != nil {
			t.Errorf("drop table %s: %v", table, err)
		}
	})

	rows := []string{
		`('u-1', 'dev-1', 'idfv-1', 'one@example.com', 'pro', 7)`,
		`('u-2', NULL, 'idfv-2', 'two@example.com', NULL, NULL)`,
		`(NULL, 'dev-null', NULL, 'null@example.com', '', 1)`,
	}
	insert := "INSERT INTO " + table + " (id, developer_identity, idfv, email, plan, visits) VALUES " +
		strings.Join(rows, ", ")
	if _, err := db.ExecContext(ctx, insert); err != nil {
		t.Fatalf("fill table: %v", err)
	}
	return table
}

// redactDSN hides the password of a PostgreSQL URL for messages.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "the configured DSN"
	}
	return u.Redacted()
}

func TestNewSQLResolverRejectsInvalidOptions(t *testing.T) {
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	tests := []struct {
		name  string
		db    *sql.DB
		query string
		opts  identity.SQLOptions
	}{
		{"nil db", nil, "SELECT 1", identity.SQLOptions{}},
		{"empty query", db, " \n", identity.SQLOptions{}},
		{"unknown argument", db, "SELECT 1", identity.SQLOptions{Args: []string{"idfv", "email"}}},
		{"Go field name", db, "SELECT 1", identity.SQLOptions{Args: []string{"DeveloperIdentity"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := identity.NewSQLResolver(tt.db, tt.query, tt.opts); err == nil {
				t.Error("err: got nil, want an error")
			}
		})
	}
}
