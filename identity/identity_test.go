package identity_test

import (
	"context"
	"errors"
	"testing"

	"github.com/branchmp/branchmp/identity"
)

func fixed(userID string, err error) identity.Resolver {
	return identity.ResolverFunc(func(context.Context, identity.Identifiers) (identity.Identity, error) {
		return identity.Identity{UserID: userID}, err
	})
}

func TestChain(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		give    []identity.Resolver
		want    string
		wantErr error
	}{
		{"empty chain", nil, "", nil},
		{"first wins", []identity.Resolver{fixed("a", nil), fixed("b", nil)}, "a", nil},
		{"skips unknown", []identity.Resolver{fixed("", nil), fixed("b", nil)}, "b", nil},
		{"skips not found", []identity.Resolver{fixed("", identity.ErrNotFound), fixed("b", nil)}, "b", nil},
		{"nobody knows", []identity.Resolver{fixed("", nil), fixed("", identity.ErrNotFound)}, "", nil},
		{"error stops", []identity.Resolver{fixed("", boom), fixed("b", nil)}, "", boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := identity.Chain(tt.give...).Resolve(context.Background(), identity.Identifiers{})
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err: got %v, want %v", err, tt.wantErr)
			}
			if got.UserID != tt.want {
				t.Errorf("UserID: got %q, want %q", got.UserID, tt.want)
			}
		})
	}
}

func TestDeveloperIdentity(t *testing.T) {
	got, err := identity.DeveloperIdentity().Resolve(context.Background(), identity.Identifiers{DeveloperIdentity: "user-42", IDFV: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if got.UserID != "user-42" {
		t.Errorf("UserID: got %q, want user-42", got.UserID)
	}
}
