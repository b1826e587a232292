package branchmp

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Default names under which a webhook may carry the shared secret.
const (
	DefaultSecretParam  = "secret"
	DefaultSecretHeader = "X-Webhook-Secret"
)

// authenticator checks the shared secret of a webhook. The zero value
// accepts every request.
type authenticator struct {
	secretHash [sha256.Size]byte
	enabled    bool
	param      string
	header     string
	user       string // basic auth user name; empty accepts any
}

func newAuthenticator(cfg Config) authenticator {
	if cfg.WebhookSecret == "" {
		return authenticator{}
	}
	return authenticator{
		secretHash: sha256.Sum256([]byte(cfg.WebhookSecret)),
		enabled:    true,
		param:      cfg.SecretParam,
		header:     cfg.SecretHeader,
		user:       cfg.SecretUser,
	}
}

// check reports whether r carries the secret in any accepted place: the
// query parameter, the header, the basic auth password, or the last
// segment of the URL path. Each candidate is compared in constant time
// through its SHA-256, so neither its content nor its length leaks
// through timing.
func (a *authenticator) check(r *http.Request) bool {
	if !a.enabled {
		return true
	}
	ok := false
	try := func(candidate string) {
		if candidate == "" {
			return
		}
		sum := sha256.Sum256([]byte(candidate))
		if subtle.ConstantTimeCompare(sum[:], a.secretHash[:]) == 1 {
			ok = true
		}
	}
	try(r.URL.Query().Get(a.param))
	try(r.Header.Get(a.header))
	if user, password, has := r.BasicAuth(); has && (a.user == "" || a.user == user) {
		try(password)
	}
	try(lastSegment(r.URL.Path))
	return ok
}

func lastSegment(path string) string {
	path = strings.TrimSuffix(path, "/")
	return path[strings.LastIndexByte(path, '/')+1:]
}

// ipFilter rejects webhooks from addresses outside an allowlist. The zero
// value accepts every address.
type ipFilter struct {
	allowed []netip.Prefix // nil disables the filter
	trusted []netip.Prefix // proxies whose forwarding header is believed
	header  string         // the header the trusted proxies write
}

func parsePrefixes(field string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return nil, invalid(field, fmt.Sprintf("entry %q is not an IP address or CIDR prefix", s))
		}
		out = append(out, netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
	}
	return out, nil
}

func contains(prefixes []netip.Prefix, addr netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// allow reports whether the client of r is allowed.
func (f *ipFilter) allow(r *http.Request) bool {
	if f.allowed == nil {
		return true
	}
	client, ok := f.clientAddr(r)
	return ok && contains(f.allowed, client)
}

// clientAddr returns the address of the client: the direct peer, or, when
// the peer is a trusted proxy, the nearest address in the configured
// forwarding header that is not itself a trusted proxy. Only that header is
// read: a proxy passes other headers from the client through unchanged, so
// they could name any address.
func (f *ipFilter) clientAddr(r *http.Request) (netip.Addr, bool) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr := peer.Addr().Unmap()
	if !contains(f.trusted, addr) {
		return addr, true
	}
	hops := forwardedFor(r.Header, f.header)
	// Walk from the nearest hop outwards: every address a trusted proxy
	// added is believed, the first untrusted one is the client.
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(hops[i])
		if err != nil {
			return netip.Addr{}, false
		}
		hop = hop.Unmap()
		if !contains(f.trusted, hop) {
			return hop, true
		}
	}
	return addr, true
}

// forwardedFor returns the client addresses in header, outermost first:
// the "for" values of Forwarded, or the list of X-Forwarded-For.
func forwardedFor(h http.Header, header string) []string {
	var hops []string
	if strings.EqualFold(header, "Forwarded") {
		for _, v := range h.Values("Forwarded") {
			for _, element := range strings.Split(v, ",") {
				for _, pair := range strings.Split(element, ";") {
					key, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
					if ok && strings.EqualFold(key, "for") {
						hops = append(hops, forwardedNode(value))
					}
				}
			}
		}
		return hops
	}
	for _, v := range h.Values(header) {
		for _, hop := range strings.Split(v, ",") {
			hops = append(hops, strings.TrimSpace(hop))
		}
	}
	return hops
}

// forwardedNode strips the quotes, brackets and port of a Forwarded "for"
// value such as "[2001:db8::1]:4711".
func forwardedNode(v string) string {
	v = strings.Trim(strings.TrimSpace(v), `"`)
	if strings.HasPrefix(v, "[") {
		if end := strings.IndexByte(v, ']'); end > 0 {
			return v[1:end]
		}
	}
	if host, _, ok := strings.Cut(v, ":"); ok && strings.Count(v, ":") == 1 {
		return host
	}
	return v
}
