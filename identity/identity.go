// Package identity maps the identifiers in a Branch webhook to the host
// application's own user.
//
// Branch identifies a user by the developer identity that the app sets with the
// Branch SDK, by device identifiers and by its own tokens. Mixpanel reports
// are only useful when events carry the app's user id, so the bridge asks a
// Resolver for it on a background worker, never on the webhook request path.
package identity

import (
	"context"
	"errors"
)

// ErrNotFound may be returned by a Resolver that does not know the user. The
// bridge treats it like an empty Identity: the event stays anonymous.
var ErrNotFound = errors.New("identity: user not found")

// Identifiers are the user and device identifiers of one Branch event.
// Placeholder values such as an all-zero advertising id are already removed,
// so an empty field means the identifier is absent.
type Identifiers struct {
	// DeveloperIdentity is the id the app passed to Branch's setIdentity.
	DeveloperIdentity string

	// IDFV is Apple's identifier for vendor.
	IDFV string
	// IDFA is Apple's advertising identifier.
	IDFA string
	// AAID is Google's advertising identifier.
	AAID string
	// AndroidID is the Android device id.
	AndroidID string
	// BrowserID is Branch's browser fingerprint id for web events.
	BrowserID string

	// BranchID is Branch's per-install token (randomized_bundle_token,
	// formerly identity_id).
	BranchID string
	// BranchDeviceID is Branch's per-device token (randomized_device_token,
	// formerly device_fingerprint_id).
	BranchDeviceID string

	// OS is the operating system as Branch names it, for example "IOS".
	OS string
}

// Identity is the app's view of the user behind an event.
type Identity struct {
	// UserID is the app's user id. Empty means the user is unknown and the
	// event is sent as an anonymous device event.
	UserID string

	// Properties are profile properties sent with Mixpanel's $set for a known
	// user, for example {"$email": "a@example.com", "plan": "pro"}. They are
	// ignored when UserID is empty.
	Properties map[string]any
}

// Resolver maps Branch identifiers to the app's user.
//
// Resolve is called from several worker goroutines at once, so
// implementations must be safe for concurrent use. It should honour ctx,
// which carries the bridge's resolver timeout. An unknown user is reported
// as an empty Identity or ErrNotFound. Any other error is treated as
// transient: the event is retried later and is not sent with a wrong
// identity.
type Resolver interface {
	Resolve(ctx context.Context, ids Identifiers) (Identity, error)
}

// ResolverFunc adapts a function to the Resolver interface.
type ResolverFunc func(ctx context.Context, ids Identifiers) (Identity, error)

// Resolve calls f(ctx, ids).
func (f ResolverFunc) Resolve(ctx context.Context, ids Identifiers) (Identity, error) {
	return f(ctx, ids)
}

// DeveloperIdentity returns a Resolver that uses Branch's developer identity
// as the user id. It is the bridge's default, right for apps that call
// setIdentity with their own user id.
func DeveloperIdentity() Resolver {
	return ResolverFunc(func(_ context.Context, ids Identifiers) (Identity, error) {
		return Identity{UserID: ids.DeveloperIdentity}, nil
	})
}

// Chain returns a Resolver that calls each resolver in order and returns the
// first identity with a user id. A resolver that returns ErrNotFound is
// skipped. Any other error stops the chain and is returned, because a later
// resolver's result could differ from the one that failed. When no resolver
// knows the user, Chain returns an empty Identity.
func Chain(resolvers ...Resolver) Resolver {
	rs := append([]Resolver(nil), resolvers...)
	return ResolverFunc(func(ctx context.Context, ids Identifiers) (Identity, error) {
		for _, r := range rs {
			id, err := r.Resolve(ctx, ids)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return Identity{}, err
			}
			if id.UserID != "" {
				return id, nil
			}
		}
		return Identity{}, nil
	})
}
