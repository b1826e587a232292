package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Identifier names, as used in SQLOptions.Args and in the JSON body of
// NewHTTPResolver.
const (
	FieldDeveloperIdentity = "developer_identity"
	FieldIDFV              = "idfv"
	FieldIDFA              = "idfa"
	FieldAAID              = "aaid"
	FieldAndroidID         = "android_id"
	FieldBrowserID         = "browser_id"
	FieldBranchID          = "branch_id"
	FieldBranchDeviceID    = "branch_device_id"
	FieldOS                = "os"
)

// identifierNames returns the Field constants in the order of the fields of
// Identifiers.
func identifierNames() []string {
	return []string{
		FieldDeveloperIdentity, FieldIDFV, FieldIDFA, FieldAAID, FieldAndroidID,
		FieldBrowserID, FieldBranchID, FieldBranchDeviceID, FieldOS,
	}
}

// identifierValue returns the identifier of ids that name selects, and
// false when name is not one of the Field constants.
func identifierValue(ids Identifiers, name string) (string, bool) {
	switch name {
	case FieldDeveloperIdentity:
		return ids.DeveloperIdentity, true
	case FieldIDFV:
		return ids.IDFV, true
	case FieldIDFA:
		return ids.IDFA, true
	case FieldAAID:
		return ids.AAID, true
	case FieldAndroidID:
		return ids.AndroidID, true
	case FieldBrowserID:
		return ids.BrowserID, true
	case FieldBranchID:
		return ids.BranchID, true
	case FieldBranchDeviceID:
		return ids.BranchDeviceID, true
	case FieldOS:
		return ids.OS, true
	}
	return "", false
}

// SQLOptions configures NewSQLResolver. The zero value passes the developer
// identity as the only query argument.
type SQLOptions struct {
	// Args names the identifiers passed as the query's positional
	// arguments, in order: the first is $1 (PostgreSQL) or the first ?
	// (SQLite, MySQL). A name may appear more than once. The names are the
	// Field constants, for example "developer_identity" or "idfv". Empty
	// means []string{"developer_identity"}.
	Args []string
}

// sqlResolver looks users up with one query against the host's database.
type sqlResolver struct {
	db    *sql.DB
	query string
	args  []string
}

// NewSQLResolver returns a Resolver that runs query against db to find the
// user behind a Branch event. The Resolver is safe for concurrent use, as
// *sql.DB is. Wrap it in NewCache to save a query per event.
//
// The query gets the identifiers named in opts.Args as positional
// arguments. An empty identifier is passed as NULL, so a condition such as
// idfv = $2 never matches a row on an absent identifier. When every
// argument is empty, the query is not run and the user is unknown.
//
// The first column of the first row is the user id. Add ORDER BY when
// several rows can match. Every further column becomes a profile property
// named by its column name, so the query SELECT id, email AS "$email" sets
// Mixpanel's $email. NULL values are left out, and []byte values become
// strings. No row, or a NULL or empty user id, is an unknown user, returned
// as ErrNotFound. Every other error, including a canceled context, is
// transient.
//
// NewSQLResolver returns an error when db is nil, query is empty or
// opts.Args names an unknown identifier. It does not contact the database.
func NewSQLResolver(db *sql.DB, query string, opts SQLOptions) (Resolver, error) {
	if db == nil {
		return nil, errors.New("identity: NewSQLResolver: db is nil")
	}
	if strings.TrimSpace(query) == "" {
		return nil, errors.New("identity: NewSQLResolver: query is empty")
	}

	args := []string{FieldDeveloperIdentity}
	if len(opts.Args) > 0 {
		args = append([]string(nil), opts.Args...)
	}
	for i, name := range args {
		if _, ok := identifierValue(Identifiers{}, name); !ok {
			return nil, fmt.Errorf("identity: SQLOptions.Args[%d] is %q, want one of %s",
				i, name, strings.Join(identifierNames(), ", "))
		}
	}
	return &sqlResolver{db: db, query: query, args: args}, nil
}

// Resolve runs the query with the identifiers of ids.
func (r *sqlResolver) Resolve(ctx context.Context, ids Identifiers) (Identity, error) {
	args, ok := r.queryArgs(ids)
	if !ok {
		return Identity{}, ErrNotFound
	}

	rows, err := r.db.QueryContext(ctx, r.query, args...)
	if err != nil {
		return Identity{}, fmt.Errorf("identity: run user query: %w", err)
	}
	defer rows.Close()

	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Identity{}, fmt.Errorf("identity: run user query: %w", err)
		}
		return Identity{}, ErrNotFound
	}
	id, err := scanIdentity(rows)
	if err != nil {
		return Identity{}, fmt.Errorf("identity: read user query row: %w", err)
	}
	if id.UserID == "" {
		return Identity{}, ErrNotFound
	}
	return id, nil
}

// queryArgs returns the query arguments for ids, with NULL for an empty
// identifier, and false when every argument is empty.
func (r *sqlResolver) queryArgs(ids Identifiers) ([]any, bool) {
	args := make([]any, len(r.args))
	present := false
	for i, name := range r.args {
		if v, _ := identifierValue(ids, name); v != "" {
			args[i] = v
			present = true
		}
	}
	return args, present
}

// scanIdentity reads the user id and properties from the current row.
func scanIdentity(rows *sql.Rows) (Identity, error) {
	columns, err := rows.Columns()
	if err != nil {
		return Identity{}, err
	}
	if len(columns) == 0 {
		return Identity{}, errors.New("query returned no columns, but the first must be the user id")
	}

	var userID sql.NullString
	values := make([]any, len(columns)-1)
	dest := make([]any, len(columns))
	dest[0] = &userID
	for i := range values {
		dest[i+1] = &values[i]
	}
	if err := rows.Scan(dest...); err != nil {
		return Identity{}, err
	}

	id := Identity{UserID: userID.String}
	for i, v := range values {
		if v == nil {
			continue
		}
		if b, ok := v.([]byte); ok {
			v = string(b)
		}
		if id.Properties == nil {
			id.Properties = make(map[string]any, len(values))
		}
		id.Properties[columns[i+1]] = v
	}
	return id, nil
}
