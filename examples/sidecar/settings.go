package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// settings is the sidecar's configuration.
type settings struct {
	listen      string
	adminListen string
	path        string

	token           string
	apiSecret       string
	apiURL          string
	residency       string
	saUser          string
	saSecret        string
	saProject       int
	webhookSecret   string
	allowedIPs      []string
	trustedProxies  []string
	forwardedHeader string

	spoolDir      string
	workers       int
	queueCapacity int
	batchSize     int
	flushInterval time.Duration
	maxBodyBytes  int64
	spoolMaxBytes int64
	dedupWindow   time.Duration
	gracePeriod   time.Duration

	ipAddresses string
	deviceIDs   string
	hashKey     string

	resolverURL      string
	resolverHeader   string
	resolverTimeout  time.Duration
	resolverCacheTTL time.Duration

	logLevel  string
	logFormat string
}

// option is one setting: a flag and an environment variable with the same
// meaning. An explicit flag wins over the variable, which wins over def.
type option struct {
	flag, env, def, help string
	secret               bool // never shown as a default or in errors
	parse                func(s *settings, v string) error
}

func str(dst func(*settings) *string) func(*settings, string) error {
	return func(s *settings, v string) error { *dst(s) = v; return nil }
}

func integer(dst func(*settings) *int) func(*settings, string) error {
	return func(s *settings, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errors.New("must be a whole number of 0 or more")
		}
		*dst(s) = n
		return nil
	}
}

func bytesSetting(dst func(*settings) *int64) func(*settings, string) error {
	return func(s *settings, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return errors.New("must be a positive number of bytes")
		}
		*dst(s) = n
		return nil
	}
}

func duration(dst func(*settings) *time.Duration) func(*settings, string) error {
	return func(s *settings, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return errors.New("must be a duration of 0 or more, such as 500ms, 30s or 24h")
		}
		*dst(s) = d
		return nil
	}
}

func list(dst func(*settings) *[]string) func(*settings, string) error {
	return func(s *settings, v string) error {
		var out []string
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
		*dst(s) = out
		return nil
	}
}

var options = []option{
	{flag: "listen", env: "BRANCHMP_LISTEN", def: ":8080", help: "`address` of the public webhook listener",
		parse: str(func(s *settings) *string { return &s.listen })},
	{flag: "admin-listen", env: "BRANCHMP_ADMIN_LISTEN", def: ":9090", help: "`address` of the admin listener: /healthz, /readyz, /metrics, /deadletters",
		parse: str(func(s *settings) *string { return &s.adminListen })},
	{flag: "path", env: "BRANCHMP_PATH", def: "/branch", help: "URL `path` of the webhook",
		parse: str(func(s *settings) *string { return &s.path })},
	{flag: "mixpanel-token", env: "MIXPANEL_TOKEN", help: "Mixpanel project token (required)", secret: true,
		parse: str(func(s *settings) *string { return &s.token })},
	{flag: "mixpanel-api-secret", env: "MIXPANEL_API_SECRET", help: "Mixpanel API secret for /import", secret: true,
		parse: str(func(s *settings) *string { return &s.apiSecret })},
	{flag: "mixpanel-api-url", env: "MIXPANEL_API_URL", help: "base URL replacing Mixpanel's endpoint, for a proxy or a test server",
		parse: str(func(s *settings) *string { return &s.apiURL })},
	{flag: "residency", env: "BRANCHMP_RESIDENCY", def: "US", help: "Mixpanel data residency: US, EU or IN",
		parse: str(func(s *settings) *string { return &s.residency })},
	{flag: "service-account-user", env: "BRANCHMP_SERVICE_ACCOUNT_USER", help: "Mixpanel service account user name, instead of the API secret",
		parse: str(func(s *settings) *string { return &s.saUser })},
	{flag: "service-account-secret", env: "BRANCHMP_SERVICE_ACCOUNT_SECRET", help: "Mixpanel service account secret", secret: true,
		parse: str(func(s *settings) *string { return &s.saSecret })},
	{flag: "service-account-project", env: "BRANCHMP_SERVICE_ACCOUNT_PROJECT", def: "0", help: "Mixpanel project id for the service account",
		parse: integer(func(s *settings) *int { return &s.saProject })},
	{flag: "webhook-secret", env: "BRANCHMP_WEBHOOK_SECRET", help: "shared secret every webhook must carry (query secret=, header X-Webhook-Secret, basic auth password or last path segment)", secret: true,
		parse: str(func(s *settings) *string { return &s.webhookSecret })},
	{flag: "allowed-ips", env: "BRANCHMP_ALLOWED_IPS", help: `comma-separated addresses or CIDR prefixes allowed to post, or "branch" for Branch's published list; empty allows all`,
		parse: list(func(s *settings) *[]string { return &s.allowedIPs })},
	{flag: "trusted-proxies", env: "BRANCHMP_TRUSTED_PROXIES", help: "comma-separated proxies whose X-Forwarded-For or Forwarded header names the client",
		parse: list(func(s *settings) *[]string { return &s.trustedProxies })},
	{flag: "forwarded-header", env: "BRANCHMP_FORWARDED_HEADER", def: "X-Forwarded-For", help: "header the trusted proxies write: X-Forwarded-For or Forwarded",
		parse: str(func(s *settings) *string { return &s.forwardedHeader })},
	{flag: "spool-dir", env: "BRANCHMP_SPOOL_DIR", help: "directory of the on-disk spool; empty keeps events in memory, which a crash loses",
		parse: str(func(s *settings) *string { return &s.spoolDir })},
	{flag: "workers", env: "BRANCHMP_WORKERS", def: "4", help: "`number` of delivery workers, also Mixpanel requests in flight",
		parse: integer(func(s *settings) *int { return &s.workers })},
	{flag: "queue-size", env: "BRANCHMP_QUEUE_SIZE", def: "10000", help: "undelivered `events` held in memory when there is no spool directory",
		parse: integer(func(s *settings) *int { return &s.queueCapacity })},
	{flag: "batch-size", env: "BRANCHMP_BATCH_SIZE", def: "2000", help: "`events` per Mixpanel /import request, at most 2000",
		parse: integer(func(s *settings) *int { return &s.batchSize })},
	{flag: "flush-interval", env: "BRANCHMP_FLUSH_INTERVAL", def: "1s", help: "maximum wait (a `duration`) before a partial batch is sent",
		parse: duration(func(s *settings) *time.Duration { return &s.flushInterval })},
	{flag: "spool-max-bytes", env: "BRANCHMP_SPOOL_MAX_BYTES", def: "1073741824", help: "pending events the spool directory may hold, in `bytes`, at least 1 MiB; beyond it webhooks get 503",
		parse: bytesSetting(func(s *settings) *int64 { return &s.spoolMaxBytes })},
	{flag: "max-body-bytes", env: "BRANCHMP_MAX_BODY_BYTES", def: "1048576", help: "largest webhook body after decompression, in `bytes`",
		parse: bytesSetting(func(s *settings) *int64 { return &s.maxBodyBytes })},
	{flag: "dedup-window", env: "BRANCHMP_DEDUP_WINDOW", def: "24h", help: "how long (a `duration`) a redelivered event is recognised and not sent again",
		parse: duration(func(s *settings) *time.Duration { return &s.dedupWindow })},
	{flag: "grace-period", env: "BRANCHMP_GRACE_PERIOD", def: "25s", help: "time (a `duration`) SIGTERM gives the bridge to deliver what it holds before it exits",
		parse: duration(func(s *settings) *time.Duration { return &s.gracePeriod })},
	{flag: "ip-addresses", env: "BRANCHMP_IP_ADDRESSES", def: "keep", help: "user IP addresses sent to Mixpanel: keep, drop or hash",
		parse: str(func(s *settings) *string { return &s.ipAddresses })},
	{flag: "device-ids", env: "BRANCHMP_DEVICE_IDS", def: "keep", help: "device ids sent to Mixpanel: keep, drop or hash",
		parse: str(func(s *settings) *string { return &s.deviceIDs })},
	{flag: "hash-key", env: "BRANCHMP_HASH_KEY", help: "HMAC key for hash, at least 16 bytes", secret: true,
		parse: str(func(s *settings) *string { return &s.hashKey })},
	{flag: "resolver-url", env: "BRANCHMP_RESOLVER_URL", help: "URL of the app's identity endpoint (see the README); empty uses Branch's developer identity as the user id",
		parse: str(func(s *settings) *string { return &s.resolverURL })},
	{flag: "resolver-header", env: "BRANCHMP_RESOLVER_HEADER", help: `header sent to the identity endpoint, as "Name: value"`, secret: true,
		parse: func(s *settings, v string) error {
			if name, _, ok := strings.Cut(v, ":"); !ok || strings.TrimSpace(name) == "" {
				return errors.New(`must have the form "Name: value"`)
			}
			s.resolverHeader = v
			return nil
		}},
	{flag: "resolver-timeout", env: "BRANCHMP_RESOLVER_TIMEOUT", def: "2s", help: "timeout (a `duration`) of one identity endpoint call",
		parse: duration(func(s *settings) *time.Duration { return &s.resolverTimeout })},
	{flag: "resolver-cache-ttl", env: "BRANCHMP_RESOLVER_CACHE_TTL", def: "10m", help: "how long (a `duration`) a known user is cached; unknown users for a tenth of it",
		parse: duration(func(s *settings) *time.Duration { return &s.resolverCacheTTL })},
	{flag: "log-level", env: "BRANCHMP_LOG_LEVEL", def: "info", help: "log level: debug, info, warn or error",
		parse: str(func(s *settings) *string { return &s.logLevel })},
	{flag: "log-format", env: "BRANCHMP_LOG_FORMAT", def: "json", help: "log format: json or console",
		parse: str(func(s *settings) *string { return &s.logFormat })},
}

// parseSettings reads args and the environment through getenv. It returns
// flag.ErrHelp after printing usage for -h.
func parseSettings(args []string, getenv func(string) string, usage io.Writer) (settings, error) {
	fs := flag.NewFlagSet("branchmp-sidecar", flag.ContinueOnError)
	fs.SetOutput(usage)
	values := make([]*string, len(options))
	for i, o := range options {
		help := fmt.Sprintf("%s (env %s)", o.help, o.env)
		// The default shown is the documented one, never the value of a
		// variable, so -h cannot print a secret.
		values[i] = fs.String(o.flag, o.def, help)
	}
	fs.Usage = func() {
		fmt.Fprintf(usage, "Usage: branchmp-sidecar [flags]\n       branchmp-sidecar healthcheck\n\n"+
			"Every flag can also be set by the environment variable named in its help;\n"+
			"a flag wins over the variable. Prefer variables for secrets.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return settings{}, err
	}
	if fs.NArg() > 0 {
		return settings{}, fmt.Errorf("unexpected argument %q: settings are flags or environment variables", fs.Arg(0))
	}

	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	var s settings
	for i, o := range options {
		v := o.def
		if env := strings.TrimSpace(getenv(o.env)); env != "" {
			v = env
		}
		if explicit[o.flag] {
			v = *values[i]
		}
		if v == "" {
			continue
		}
		if err := o.parse(&s, v); err != nil {
			return settings{}, settingError(o, v, err)
		}
	}
	if s.token == "" {
		return settings{}, errors.New("MIXPANEL_TOKEN (-mixpanel-token) is missing: set the Mixpanel project token")
	}
	return s, nil
}

func settingError(o option, v string, err error) error {
	if o.secret {
		// The value is a secret, so the message leaves it out.
		return fmt.Errorf("%s (-%s) is invalid: %v", o.env, o.flag, err)
	}
	return fmt.Errorf("%s (-%s) %q is invalid: %v", o.env, o.flag, v, err)
}
