package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Defaults of HTTPOptions.
const (
	DefaultHTTPTimeout          = 2 * time.Second
	DefaultHTTPMaxResponseBytes = 1 << 20
)

// HTTPOptions configures NewHTTPResolver. The zero value of each field
// selects its default.
type HTTPOptions struct {
	// Client sends the requests. Nil means a client on
	// http.DefaultTransport that does not follow redirects, so static
	// headers such as an API key never reach another host. A given client
	// keeps its own redirect policy.
	Client *http.Client

	// Timeout bounds one lookup, from sending the request to reading the
	// whole response, whatever the Client's own timeout. Zero means
	// DefaultHTTPTimeout.
	Timeout time.Duration

	// Header is sent with every request, for example an Authorization
	// header. Its values never appear in errors. Content-Type and Accept
	// are always application/json.
	Header http.Header

	// MaxResponseBytes is the largest response body read. A larger body is
	// a transient error. Zero means DefaultHTTPMaxResponseBytes.
	MaxResponseBytes int64
}

// httpResolver looks users up at an endpoint of the host application.
type httpResolver struct {
	url      string
	redacted string
	client   *http.Client
	timeout  time.Duration
	header   http.Header
	maxBytes int64
}

// httpRequest is the JSON body NewHTTPResolver posts. Empty identifiers are
// omitted.
type httpRequest struct {
	DeveloperIdentity string `json:"developer_identity,omitempty"`
	IDFV              string `json:"idfv,omitempty"`
	IDFA              string `json:"idfa,omitempty"`
	AAID              string `json:"aaid,omitempty"`
	AndroidID         string `json:"android_id,omitempty"`
	BrowserID         string `json:"browser_id,omitempty"`
	BranchID          string `json:"branch_id,omitempty"`
	BranchDeviceID    string `json:"branch_device_id,omitempty"`
	OS                string `json:"os,omitempty"`
}

// httpResponse is the JSON body NewHTTPResolver expects with status 200.
type httpResponse struct {
	UserID     json.RawMessage `json:"user_id"`
	Properties map[string]any  `json:"properties"`
}

// NewHTTPResolver returns a Resolver that requests the user behind a Branch
// event from an endpoint of the host application. The Resolver is safe for
// concurrent use. Wrap it in NewCache so that each device is not looked up
// for every event.
//
// Each lookup is a POST to rawURL with Content-Type application/json and a
// JSON object of the event's identifiers. Empty identifiers are left out:
//
//	{"developer_identity": "u-42", "idfv": "...", "idfa": "...",
//	 "aaid": "...", "android_id": "...", "browser_id": "...",
//	 "branch_id": "...", "branch_device_id": "...", "os": "IOS"}
//
// The endpoint responds with one of:
//
//   - 200 and a JSON object {"user_id": "u-42", "properties": {...}}: a
//     known user. user_id is a string or an integer. properties is an
//     optional object of Mixpanel profile properties. Other keys are
//     ignored.
//   - 200 with an empty or null user_id, or 404: an unknown user, returned
//     as ErrNotFound.
//
// Any other status, a body that is not one JSON object, a body over
// MaxResponseBytes, a network error and a timeout are transient errors, and
// the bridge retries the event later. An event whose only identifier is
// the OS is reported as unknown without a request.
//
// NOTE: a wrong path in rawURL usually gets 404 from the host's router,
// which reads as "unknown user" and leaves every event anonymous. Check the
// endpoint with a known user before deploying.
//
// NewHTTPResolver returns an error when rawURL is not an absolute http or
// https URL or an option is negative.
func NewHTTPResolver(rawURL string, opts HTTPOptions) (Resolver, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("identity: invalid resolver URL: %w", redactURLError(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("identity: resolver URL scheme is %q, must be http or https", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("identity: resolver URL has no host, must be absolute")
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("identity: HTTPOptions.Timeout is %v, must not be negative", opts.Timeout)
	}
	if opts.MaxResponseBytes < 0 {
		return nil, fmt.Errorf("identity: HTTPOptions.MaxResponseBytes is %d, must not be negative",
			opts.MaxResponseBytes)
	}

	opts = opts.withDefaults()
	return &httpResolver{
		url:      u.String(),
		redacted: redactURL(u),
		client:   opts.Client,
		timeout:  opts.Timeout,
		header:   opts.Header.Clone(),
		maxBytes: opts.MaxResponseBytes,
	}, nil
}

func (o HTTPOptions) withDefaults() HTTPOptions {
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: noRedirects}
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultHTTPTimeout
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = DefaultHTTPMaxResponseBytes
	}
	return o
}

func noRedirects(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}

// Resolve posts ids to the endpoint and reads its response.
func (r *httpResolver) Resolve(ctx context.Context, ids Identifiers) (Identity, error) {
	body := httpRequestBody(ids)
	if body == nil {
		return Identity{}, ErrNotFound
	}

	reqCtx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		err = redactURLError(err)
		return Identity{}, fmt.Errorf("identity: build request to %s: %w", r.redacted, err)
	}
	req.Header = r.header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")

	resp, err := r.client.Do(req)
	if err != nil {
		return Identity{}, r.requestError(ctx, "POST", err)
	}
	defer drainAndClose(resp.Body)
	return r.readResponse(ctx, resp)
}

// requestError wraps a failed request or body read. It names
// HTTPOptions.Timeout when that timeout ended the request and the caller's
// context ctx is still live.
func (r *httpResolver) requestError(ctx context.Context, step string, err error) error {
	err = redactURLError(err)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("identity: %s %s: timed out after %v (HTTPOptions.Timeout): %w",
			step, r.redacted, r.timeout, err)
	}
	return fmt.Errorf("identity: %s %s: %w", step, r.redacted, err)
}

// httpRequestBody returns the JSON request body for ids, or nil when every
// identifier except the OS is empty.
func httpRequestBody(ids Identifiers) []byte {
	withoutOS := ids
	withoutOS.OS = ""
	if withoutOS == (Identifiers{}) {
		return nil
	}

	// The conversion stops compiling when Identifiers gains a field, so the
	// wire format cannot miss one. Marshalling strings cannot fail.
	body, _ := json.Marshal(httpRequest(ids))
	return body
}

func (r *httpResolver) readResponse(ctx context.Context, resp *http.Response) (Identity, error) {
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return Identity{}, ErrNotFound
	default:
		return Identity{}, fmt.Errorf("identity: POST %s: unexpected status %d %s, want 200 or 404",
			r.redacted, resp.StatusCode, http.StatusText(resp.StatusCode))
	}

	data, err := io.ReadAll(io.LimitReader(resp.Body, r.maxBytes+1))
	if err != nil {
		return Identity{}, r.requestError(ctx, "read response of", err)
	}
	if int64(len(data)) > r.maxBytes {
		return Identity{}, fmt.Errorf(
			"identity: response of %s is over %d bytes (HTTPOptions.MaxResponseBytes)",
			r.redacted, r.maxBytes)
	}

	id, err := decodeHTTPResponse(data)
	if err != nil {
		return Identity{}, fmt.Errorf("identity: invalid response of %s with status 200: %w",
			r.redacted, err)
	}
	if id.UserID == "" {
		return Identity{}, ErrNotFound
	}
	return id, nil
}

// decodeHTTPResponse parses a 200 response body. Numbers in properties stay
// json.Number, so large integers keep every digit.
func decodeHTTPResponse(data []byte) (Identity, error) {
	if first := firstNonSpace(data); first != '{' {
		return Identity{}, errors.New("body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var body httpResponse
	if err := dec.Decode(&body); err != nil {
		return Identity{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return Identity{}, errors.New("data after the JSON object")
	}

	userID, err := decodeUserID(body.UserID)
	if err != nil {
		return Identity{}, err
	}
	return Identity{UserID: userID, Properties: body.Properties}, nil
}

// decodeUserID accepts a JSON string, an integer or null.
func decodeUserID(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	if _, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return string(raw), nil
	}
	if _, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
		return string(raw), nil
	}
	return "", fmt.Errorf("user_id is %.40s, must be a string or an integer", raw)
}

// drainAndClose reads up to 4 KiB of what is left of body before closing
// it, so that a short error response does not cost the connection.
func drainAndClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 4<<10)
	_ = body.Close()
}

func firstNonSpace(data []byte) byte {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 {
		return 0
	}
	return data[0]
}

// redactURL returns u without user information and query, which may carry
// credentials, for use in errors.
func redactURL(u *url.URL) string {
	clean := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return clean.String()
}

// redactURLError drops the URL that net/http and net/url put into their
// errors, because it may contain credentials. The caller names the URL in
// its redacted form.
func redactURLError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err
	}
	return err
}
