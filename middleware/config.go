package branchmp

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/branchmp/branchmp/identity"
)

// Residency is the region of a Mixpanel project's data.
type Residency string

// Mixpanel data residencies.
const (
	ResidencyUS Residency = "US"
	ResidencyEU Residency = "EU"
	ResidencyIN Residency = "IN"
)

// ServiceAccount authenticates /import requests with a Mixpanel service
// account instead of the project token or API secret.
type ServiceAccount struct {
	ProjectID int
	Username  string
	Secret    string
}

// Config configures a Bridge. Token is required; the zero value of every
// other field means the default given in its comment.
type Config struct {
	// Token is the Mixpanel project token. It authenticates /import when
	// neither APISecret nor ServiceAccount is set, and /engage always.
	Token string

	// APISecret is the project's API secret, used for /import when set.
	APISecret string

	// ServiceAccount is used for /import when set, before APISecret.
	ServiceAccount *ServiceAccount

	// Residency selects Mixpanel's US (default), EU or IN endpoints.
	Residency Residency

	// BaseURL replaces the residency's endpoint, for a proxy or a local
	// test server, for example "http://127.0.0.1:8081".
	BaseURL string

	// Path is the webhook path that Middleware catches. Default "/branch".
	// Handler and ServeHTTP respond on whatever path they are mounted at.
	Path string

	// Resolver maps Branch identifiers to the app's user. Default
	// identity.DeveloperIdentity().
	Resolver identity.Resolver

	// ResolverTimeout bounds one Resolve call. Default 5s.
	ResolverTimeout time.Duration

	// Logger receives the bridge's logs. Nil means no logs.
	Logger *zap.Logger

	// Workers is the number of goroutines that resolve and map events, and
	// also the number of batches sent at once: each sends its /import
	// request, then up to two /engage requests together. Default 4.
	Workers int

	// QueueCapacity is the number of accepted events that the in-memory
	// spool holds until Mixpanel confirms them. When it is full, webhooks
	// get 503. It does not apply with SpoolDir. Default 10000.
	QueueCapacity int

	// QueueMaxBytes bounds the memory of the in-memory spool's events: their
	// bodies, mapped records and an estimate of their decoded form (20
	// times the body). Beyond it webhooks get 503. In-memory dead letters
	// may take a quarter of it on top. With SpoolDir it bounds the events
	// that the workers hold at once instead. Default 256 MiB.
	QueueMaxBytes int64

	// SpoolDir makes the bridge durable: every accepted event is written
	// to a log file in this directory and flushed to disk before the
	// webhook gets 200, and stays in the directory (the log, then a bbolt
	// file) until Mixpanel confirmed it, across crashes and restarts.
	// Empty means an in-memory spool that a crash loses.
	SpoolDir string

	// SpoolMaxBytes bounds the pending events in SpoolDir, at least 1 MiB;
	// beyond it webhooks get 503. Dead letters may take a quarter of it on
	// top, the oldest deleted first. Default 1 GiB.
	SpoolMaxBytes int64

	// DedupWindow is how long an event's $insert_id is remembered, so a
	// redelivery of the same Branch event gets 200 and is not sent again.
	// Default 24h. A negative value turns deduplication off.
	DedupWindow time.Duration

	// BatchSize is the maximum number of events in one /import request,
	// at most 2000. Default 2000.
	BatchSize int

	// MaxBatchBytes is the maximum uncompressed JSON size of one /import
	// request. Default 2,000,000 bytes.
	MaxBatchBytes int

	// FlushInterval is the longest an event waits for its batch to fill
	// before the batch is sent anyway. Default 1s.
	FlushInterval time.Duration

	// HTTPClient sends requests to Mixpanel. Default: a client with
	// Timeout. A client whose own Timeout is 0 gets Timeout too, so no
	// request can hang forever.
	HTTPClient *http.Client

	// Timeout bounds one Mixpanel request. Default 30s.
	Timeout time.Duration

	// EventName returns the Mixpanel event name for a Branch event name;
	// standard reports whether Branch defines the event. Default
	// DefaultEventName.
	EventName func(name string, standard bool) string

	// MaxBodyBytes is the largest webhook body accepted; larger bodies get
	// 413. Default 1 MiB.
	MaxBodyBytes int64

	// QueryParams maps GET query parameter names to event fields, on top
	// of the defaults listed by DefaultQueryParams. A value is a field of
	// an event-ontology body: "name", "id", "timestamp", or
	// "user_data.KEY", "last_attributed_touch_data.KEY", "event_data.KEY",
	// "custom_data.KEY". Unmapped parameters become custom properties.
	QueryParams map[string]string

	// WebhookSecret is a shared secret that every webhook must carry; a
	// webhook without it gets 401. Branch signs nothing, so without a
	// secret (the default) anyone with the URL can post events. A
	// webhook may carry it in the query parameter SecretParam, the header
	// SecretHeader, as the basic auth password, or as the last segment of
	// the URL path, such as /branch/SECRET.
	WebhookSecret string

	// SecretParam is the query parameter that carries the secret. It is
	// removed before the webhook is stored. Default "secret".
	SecretParam string

	// SecretHeader is the request header that carries the secret. Default
	// "X-Webhook-Secret".
	SecretHeader string

	// SecretUser, when set, is the only basic auth user name accepted with
	// the secret as password. Empty accepts any user name.
	SecretUser string

	// AllowedIPs lists the addresses and CIDR prefixes that may send
	// webhooks; others get 403. Nil accepts every address.
	// BranchWebhookIPs returns Branch's published list.
	AllowedIPs []string

	// TrustedProxies lists the proxies, as addresses or CIDR prefixes,
	// whose ForwardedHeader names the client for AllowedIPs. A request
	// from any other peer is judged by its own address.
	TrustedProxies []string

	// ForwardedHeader is the header that the trusted proxies write:
	// "X-Forwarded-For" (default) or "Forwarded". Only this header is
	// read, because a proxy passes the client's other headers through.
	ForwardedHeader string

	// KeepRobots delivers events that Branch marks as robot traffic (an
	// os or platform of ROBOT). By default they get 200 and are dropped.
	KeepRobots bool

	// IPAddresses and DeviceIDs set the treatment of the user's IP address
	// and device ids before they reach Mixpanel: PrivacyKeep (default), PrivacyDrop or
	// PrivacyHash. A dropped or hashed IP address is not geolocated.
	IPAddresses Privacy
	DeviceIDs   Privacy

	// HashKey is the HMAC-SHA256 key for PrivacyHash, at least 16 bytes.
	// Keep it secret and stable: the same id must hash the same way across
	// restarts.
	HashKey string

	// MaxConcurrentDecodes bounds how many webhook bodies are decoded at
	// once, which bounds the memory a flood of large bodies can take.
	// Requests beyond it wait for a slot. Default 4 per CPU.
	MaxConcurrentDecodes int

	// Metrics, when set, receives the bridge's Prometheus metrics, named
	// branchmp_*. Pass your own registry. For several bridges on one
	// registry, wrap it for each of them with prometheus.WrapRegistererWith
	// and a distinguishing label. Nil exports nothing.
	Metrics prometheus.Registerer

	// MaxAttempts is how often a batch is sent before its events are
	// dead-lettered. Default 12.
	MaxAttempts int

	// MaxRetryAge is how long a batch is retried before its events are
	// dead-lettered. Default 30m.
	MaxRetryAge time.Duration

	// RetryBackoff is the first retry's backoff window. Later windows
	// double up to RetryMaxBackoff, and each wait is a random point in its
	// window. Defaults 2s and 60s.
	RetryBackoff    time.Duration
	RetryMaxBackoff time.Duration

	// MaxDeadLetters is how many dead letters are kept; older ones are
	// deleted. Default 10000.
	MaxDeadLetters int
}

// Privacy is the treatment of a personal identifier before it reaches
// Mixpanel.
type Privacy string

// Privacy settings.
const (
	PrivacyKeep Privacy = "keep" // send it as it is (the default)
	PrivacyDrop Privacy = "drop" // leave it out
	PrivacyHash Privacy = "hash" // send its HMAC-SHA256 with HashKey
)

// minHashKey is the shortest HashKey accepted, so that hashed ids cannot
// be recovered by trying every IPv4 address or device id with a guessed key.
const minHashKey = 16

// Defaults.
const (
	DefaultPath            = "/branch"
	DefaultWorkers         = 4
	DefaultQueueCapacity   = 10000
	DefaultBatchSize       = 2000
	DefaultMaxBatchBytes   = 2_000_000
	DefaultFlushInterval   = time.Second
	DefaultTimeout         = 30 * time.Second
	DefaultResolverTimeout = 5 * time.Second
	DefaultMaxBodyBytes    = 1 << 20
	DefaultMaxAttempts     = 12
	DefaultMaxRetryAge     = 30 * time.Minute
	DefaultRetryBackoff    = 2 * time.Second
	DefaultRetryMaxBackoff = 60 * time.Second
	DefaultMaxDeadLetters  = 10000
	DefaultSpoolMaxBytes   = 1 << 30
	DefaultQueueMaxBytes   = 256 << 20
	DefaultDedupWindow     = 24 * time.Hour
)

// maxBatchSize is Mixpanel's limit of events in one /import request.
const maxBatchSize = 2000

// minStoreBytes is the smallest spool or queue size accepted, so that at
// least one webhook of the default size limit fits.
const minStoreBytes = 1 << 20

// ErrInvalidConfig wraps every configuration error returned by New.
var ErrInvalidConfig = errors.New("branchmp: invalid config")

func invalid(field, problem string) error {
	return fmt.Errorf("%w: %s %s", ErrInvalidConfig, field, problem)
}

// validate reports the first invalid field. It runs before defaults are
// applied, so zero values are valid.
func (c *Config) validate() error {
	if strings.TrimSpace(c.Token) == "" {
		return invalid("Token", "is required: set the Mixpanel project token")
	}
	switch Residency(strings.ToUpper(string(c.Residency))) {
	case "", ResidencyUS, ResidencyEU, ResidencyIN:
	default:
		return invalid("Residency", fmt.Sprintf("%q is invalid: use US, EU or IN", c.Residency))
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalid("BaseURL", "must be an absolute http or https URL")
		}
	}
	if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
		return invalid("Path", fmt.Sprintf("%q must start with /", c.Path))
	}
	if sa := c.ServiceAccount; sa != nil && (sa.Username == "" || sa.Secret == "" || sa.ProjectID <= 0) {
		return invalid("ServiceAccount", "needs ProjectID, Username and Secret")
	}
	for _, f := range []struct {
		name  string
		value Privacy
	}{{"IPAddresses", c.IPAddresses}, {"DeviceIDs", c.DeviceIDs}} {
		switch f.value {
		case "", PrivacyKeep, PrivacyDrop:
		case PrivacyHash:
			if len(c.HashKey) < minHashKey {
				return invalid("HashKey", fmt.Sprintf("must have at least %d bytes when %s is %q", minHashKey, f.name, PrivacyHash))
			}
		default:
			return invalid(f.name, fmt.Sprintf("%q is invalid: use keep, drop or hash", f.value))
		}
	}
	if _, err := parsePrefixes("AllowedIPs", c.AllowedIPs); err != nil {
		return err
	}
	if _, err := parsePrefixes("TrustedProxies", c.TrustedProxies); err != nil {
		return err
	}
	switch http.CanonicalHeaderKey(c.ForwardedHeader) {
	case "", "X-Forwarded-For", "Forwarded":
	default:
		return invalid("ForwardedHeader", fmt.Sprintf("%q is invalid: use X-Forwarded-For or Forwarded", c.ForwardedHeader))
	}
	for _, f := range []struct {
		name  string
		value int64
	}{{"SpoolMaxBytes", c.SpoolMaxBytes}, {"QueueMaxBytes", c.QueueMaxBytes}} {
		if f.value != 0 && f.value < minStoreBytes {
			return invalid(f.name, fmt.Sprintf("%d is too small: use at least %d bytes", f.value, minStoreBytes))
		}
	}
	if c.BatchSize > maxBatchSize {
		return invalid("BatchSize", fmt.Sprintf("%d is over Mixpanel's limit of %d", c.BatchSize, maxBatchSize))
	}
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"Workers", int64(c.Workers)},
		{"QueueCapacity", int64(c.QueueCapacity)},
		{"BatchSize", int64(c.BatchSize)},
		{"MaxBatchBytes", int64(c.MaxBatchBytes)},
		{"FlushInterval", int64(c.FlushInterval)},
		{"Timeout", int64(c.Timeout)},
		{"ResolverTimeout", int64(c.ResolverTimeout)},
		{"MaxBodyBytes", c.MaxBodyBytes},
		{"MaxAttempts", int64(c.MaxAttempts)},
		{"MaxRetryAge", int64(c.MaxRetryAge)},
		{"RetryBackoff", int64(c.RetryBackoff)},
		{"RetryMaxBackoff", int64(c.RetryMaxBackoff)},
		{"MaxDeadLetters", int64(c.MaxDeadLetters)},
		{"SpoolMaxBytes", c.SpoolMaxBytes},
		{"QueueMaxBytes", c.QueueMaxBytes},
		{"MaxConcurrentDecodes", int64(c.MaxConcurrentDecodes)},
	} {
		if f.value < 0 {
			return invalid(f.name, "must not be negative")
		}
	}
	return nil
}

// withDefaults returns a copy of c with every zero optional field set.
func (c Config) withDefaults() Config {
	c.Residency = Residency(strings.ToUpper(string(c.Residency)))
	if c.Residency == "" {
		c.Residency = ResidencyUS
	}
	setDefault(&c.Path, DefaultPath)
	if c.Resolver == nil {
		c.Resolver = identity.DeveloperIdentity()
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.EventName == nil {
		c.EventName = DefaultEventName
	}
	setDefault(&c.ResolverTimeout, DefaultResolverTimeout)
	setDefault(&c.Workers, DefaultWorkers)
	setDefault(&c.QueueCapacity, DefaultQueueCapacity)
	setDefault(&c.BatchSize, DefaultBatchSize)
	setDefault(&c.MaxBatchBytes, DefaultMaxBatchBytes)
	setDefault(&c.FlushInterval, DefaultFlushInterval)
	setDefault(&c.Timeout, DefaultTimeout)
	setDefault(&c.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&c.MaxAttempts, DefaultMaxAttempts)
	setDefault(&c.MaxRetryAge, DefaultMaxRetryAge)
	setDefault(&c.RetryBackoff, DefaultRetryBackoff)
	setDefault(&c.RetryMaxBackoff, DefaultRetryMaxBackoff)
	setDefault(&c.MaxDeadLetters, DefaultMaxDeadLetters)
	setDefault(&c.SpoolMaxBytes, DefaultSpoolMaxBytes)
	setDefault(&c.QueueMaxBytes, DefaultQueueMaxBytes)
	setDefault(&c.SecretParam, DefaultSecretParam)
	setDefault(&c.ForwardedHeader, "X-Forwarded-For")
	setDefault(&c.SecretHeader, DefaultSecretHeader)
	setDefault(&c.IPAddresses, PrivacyKeep)
	setDefault(&c.DeviceIDs, PrivacyKeep)
	setDefault(&c.MaxConcurrentDecodes, 4*runtime.GOMAXPROCS(0))
	setDefault(&c.DedupWindow, DefaultDedupWindow)
	if c.RetryMaxBackoff < c.RetryBackoff {
		c.RetryMaxBackoff = c.RetryBackoff
	}

	if c.HTTPClient == nil {
		// An own transport, so closing its idle connections at Shutdown
		// leaves the host's other clients alone.
		transport := http.DefaultTransport.(*http.Transport).Clone()
		// One idle connection for each request that may be in flight: the
		// workers' imports and their two profile updates.
		transport.MaxIdleConnsPerHost = 3 * c.Workers
		c.HTTPClient = &http.Client{Timeout: c.Timeout, Transport: transport}
	} else if c.HTTPClient.Timeout == 0 {
		hc := *c.HTTPClient
		hc.Timeout = c.Timeout
		c.HTTPClient = &hc
	}
	return c
}

func setDefault[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}
