package branchmp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/fixtures"
	"github.com/branchmp/branchmp/internal/mptest"
)

const testSecret = "hook-secret-5f2a9c"

func TestWebhookSecret(t *testing.T) {
	tests := []struct {
		name   string
		target string
		header map[string]string
		user   string // basic auth user; empty means no basic auth
		pass   string
		want   int
	}{
		{name: "missing", target: "/branch?ev=OPEN&id=1", want: 401},
		{name: "query", target: "/branch?ev=OPEN&id=2&secret=" + testSecret, want: 200},
		{name: "wrong query", target: "/branch?ev=OPEN&id=3&secret=nope", want: 401},
		{name: "prefix of secret", target: "/branch?ev=OPEN&id=4&secret=" + testSecret[:5], want: 401},
		{name: "header", target: "/branch?ev=OPEN&id=5", header: map[string]string{"X-Webhook-Secret": testSecret}, want: 200},
		{name: "wrong header", target: "/branch?ev=OPEN&id=6", header: map[string]string{"X-Webhook-Secret": "x"}, want: 401},
		{name: "basic auth any user", target: "/branch?ev=OPEN&id=7", user: "branch", pass: testSecret, want: 200},
		{name: "basic auth wrong password", target: "/branch?ev=OPEN&id=8", user: "branch", pass: "x", want: 401},
		{name: "path segment", target: "/branch/" + testSecret + "?ev=OPEN&id=9", want: 200},
		{name: "wrong path segment", target: "/branch/nope?ev=OPEN&id=10", want: 401},
		{name: "options needs no secret", target: "/branch", want: 204},
	}

	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.WebhookSecret = testSecret
	b := newBridge(t, cfg)
	h := b.Middleware(http.NotFoundHandler())

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "GET"
			if tt.want == 204 {
				method = "OPTIONS"
			}
			req := httptest.NewRequest(method, tt.target, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.pass)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status: got %d, want %d", rec.Code, tt.want)
			}
			if rec.Code == 401 && rec.Body.String() != "unauthorized\n" {
				t.Errorf("401 body: got %q, want one that names no part", rec.Body.String())
			}
		})
	}
	if got := b.Stats().Unauthorized; got != 6 {
		t.Errorf("Unauthorized: got %d, want 6", got)
	}
}

func TestSecretUserMustMatch(t *testing.T) {
	cfg := testConfig(startMixpanel(t))
	cfg.WebhookSecret = testSecret
	cfg.SecretUser = "branch"
	b := newBridge(t, cfg)
	for user, want := range map[string]int{"branch": 200, "other": 401} {
		req := httptest.NewRequest("GET", "/branch?ev=OPEN&id=1"+user, nil)
		req.SetBasicAuth(user, testSecret)
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("user %s: got %d, want %d", user, rec.Code, want)
		}
	}
}

func TestSecretNeverStoredOrSent(t *testing.T) {
	mp := startMixpanel(t)
	mp.Script("/import", mptest.Response{Status: 400, Body: "not json"})
	cfg := testConfig(mp)
	cfg.WebhookSecret = testSecret
	cfg.SpoolDir = t.TempDir()
	b := newBridge(t, cfg)

	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/branch?ev=OPEN&id=1&camp=x&secret="+testSecret, nil))
	if rec.Code != 200 {
		t.Fatalf("status: got %d, want 200", rec.Code)
	}
	waitFor(t, func() bool { return b.Stats().DeadLetters == 1 })
	dead := deadLetters(t, b)
	if bytes.Contains(dead[0].Webhook, []byte(testSecret)) || bytes.Contains(dead[0].Record, []byte(testSecret)) {
		t.Errorf("dead letter contains the secret: %s %s", dead[0].Webhook, dead[0].Record)
	}
	for _, r := range mp.Requests() {
		if bytes.Contains(r.Body, []byte(testSecret)) {
			t.Errorf("request to %s contains the secret", r.Path)
		}
	}
}

func TestAllowedIPs(t *testing.T) {
	tests := []struct {
		name    string
		remote  string
		headers map[string]string
		want    int
	}{
		{name: "allowed peer", remote: "52.43.119.253:4000", want: 200},
		{name: "other peer", remote: "198.51.100.1:4000", want: 403},
		{name: "spoofed header from untrusted peer", remote: "198.51.100.1:4000",
			headers: map[string]string{"X-Forwarded-For": "52.43.119.253"}, want: 403},
		{name: "trusted proxy forwards allowed client", remote: "10.0.0.5:4000",
			headers: map[string]string{"X-Forwarded-For": "52.43.119.253"}, want: 200},
		{name: "trusted proxy forwards other client", remote: "10.0.0.5:4000",
			headers: map[string]string{"X-Forwarded-For": "198.51.100.1"}, want: 403},
		{name: "client spoofs behind trusted proxy", remote: "10.0.0.5:4000",
			headers: map[string]string{"X-Forwarded-For": "52.43.119.253, 198.51.100.1"}, want: 403},
		{name: "two trusted proxies", remote: "10.0.0.5:4000",
			headers: map[string]string{"X-Forwarded-For": "52.43.119.253, 10.0.0.6"}, want: 200},
		{name: "forwarded header ignored", remote: "10.0.0.5:4000",
			headers: map[string]string{"X-Forwarded-For": "198.51.100.9", "Forwarded": "for=52.43.119.253"}, want: 403},
		{name: "trusted proxy without header", remote: "10.0.0.5:4000", want: 403},
		{name: "garbage header", remote: "10.0.0.5:4000",
			headers: map[string]string{"X-Forwarded-For": "not-an-ip"}, want: 403},
	}

	cfg := testConfig(startMixpanel(t))
	cfg.AllowedIPs = append(BranchWebhookIPs(), "2001:db8::/64")
	cfg.TrustedProxies = []string{"10.0.0.0/24"}
	b := newBridge(t, cfg)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", fmt.Sprintf("/branch?ev=OPEN&id=%d", i), nil)
			req.RemoteAddr = tt.remote
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			b.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status: got %d, want %d", rec.Code, tt.want)
			}
		})
	}
}

func TestInvalidAllowlistRejected(t *testing.T) {
	_, err := New(Config{Token: "t", AllowedIPs: []string{"52.43.119.253", "nope"}})
	if err == nil || !strings.Contains(err.Error(), "AllowedIPs") {
		t.Errorf("got %v, want an error naming AllowedIPs", err)
	}
}

func TestHeadProbesWithoutEvent(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.WebhookSecret = testSecret
	b := newBridge(t, cfg)

	for target, want := range map[string]int{
		"/branch?ev=OPEN&id=1":                      401,
		"/branch?ev=OPEN&id=1&secret=" + testSecret: 200,
	} {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("HEAD", target, nil))
		if rec.Code != want {
			t.Errorf("HEAD %s: got %d, want %d", target, rec.Code, want)
		}
	}
	shutdown(t, b)
	if got := len(mp.Events()); got != 0 {
		t.Errorf("events after HEAD: got %d, want 0", got)
	}
}

func TestRobotsIgnoredByDefault(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprint("keep=", keep), func(t *testing.T) {
			mp := startMixpanel(t)
			cfg := testConfig(mp)
			cfg.KeepRobots = keep
			b := newBridge(t, cfg)
			for i, target := range []string{
				"/branch?ev=OPEN&id=1&os=ROBOT",
				"/branch?ev=OPEN&id=2&platform=ROBOT",
				"/branch?ev=OPEN&id=3&os=ANDROID",
			} {
				rec := httptest.NewRecorder()
				b.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
				if rec.Code != 200 {
					t.Errorf("webhook %d: got %d, want 200", i, rec.Code)
				}
			}
			shutdown(t, b)
			want := 1
			if keep {
				want = 3
			}
			if got := len(mp.Events()); got != want {
				t.Errorf("events: got %d, want %d", got, want)
			}
		})
	}
}

func TestPrivacySettings(t *testing.T) {
	body := fixtures.BodyNamed("open-anonymous-android")
	const ip, device = "192.0.2.44", "a1b2c3d4e5f60718"
	tests := []struct {
		name          string
		ips, devices  Privacy
		wantIP        bool
		wantIPHash    bool
		wantDevice    bool
		wantNoDistinc bool
	}{
		{name: "keep", wantIP: true, wantDevice: true},
		{name: "drop", ips: PrivacyDrop, devices: PrivacyDrop, wantNoDistinc: true},
		{name: "hash", ips: PrivacyHash, devices: PrivacyHash, wantIPHash: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mp := startMixpanel(t)
			cfg := testConfig(mp)
			cfg.IPAddresses, cfg.DeviceIDs = tt.ips, tt.devices
			cfg.HashKey = "0123456789abcdef-key"
			b := newBridge(t, cfg)
			rec := httptest.NewRecorder()
			b.ServeHTTP(rec, httptest.NewRequest("POST", "/branch", bytes.NewReader(body)))
			shutdown(t, b)

			imports := requestsTo(mp, "/import")
			if len(imports) != 1 {
				t.Fatalf("import requests: got %d, want 1", len(imports))
			}
			sent := string(imports[0].Body)
			if strings.Contains(sent, ip) != tt.wantIP {
				t.Errorf("IP address sent: got %v, want %v", strings.Contains(sent, ip), tt.wantIP)
			}
			if strings.Contains(sent, device) != tt.wantDevice {
				t.Errorf("device id sent: got %v, want %v", strings.Contains(sent, device), tt.wantDevice)
			}
			p := props(imports[0].Records[0])
			if _, ok := p["branch_ip_hash"]; ok != tt.wantIPHash {
				t.Errorf("branch_ip_hash present: got %v, want %v", ok, tt.wantIPHash)
			}
			if tt.wantNoDistinc && p["distinct_id"] != "" {
				t.Errorf("distinct_id: got %v, want empty with device ids dropped", p["distinct_id"])
			}
			if tt.name == "hash" {
				id, _ := p["$device_id"].(string)
				if len(id) != 32 || p["distinct_id"] != "$device:"+id {
					t.Errorf("hashed device: $device_id %q distinct_id %v", id, p["distinct_id"])
				}
			}
		})
	}
}

func TestHashNeedsKey(t *testing.T) {
	_, err := New(Config{Token: "t", DeviceIDs: PrivacyHash, HashKey: "short"})
	if err == nil || !strings.Contains(err.Error(), "HashKey") {
		t.Errorf("got %v, want an error naming HashKey", err)
	}
	_, err = New(Config{Token: "t", IPAddresses: "blur"})
	if err == nil || !strings.Contains(err.Error(), "IPAddresses") {
		t.Errorf("got %v, want an error naming IPAddresses", err)
	}
}

func TestDecodeSlotsBoundWaiting(t *testing.T) {
	cfg := testConfig(startMixpanel(t))
	cfg.MaxConcurrentDecodes = 1
	b := newBridge(t, cfg)
	b.decodeSlots <- struct{}{} // hold the only slot

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	req := httptest.NewRequest("GET", "/branch?ev=OPEN&id=1", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status while every slot is taken: got %d, want 503", rec.Code)
	}

	<-b.decodeSlots
	rec = httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/branch?ev=OPEN&id=1", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("status with a free slot: got %d, want 200", rec.Code)
	}
}

// TestFloodOfBadRequests sends malformed, oversized and unauthenticated
// requests from several goroutines while good webhooks keep arriving; every
// good webhook must still be delivered.
func TestFloodOfBadRequests(t *testing.T) {
	mp := startMixpanel(t)
	cfg := testConfig(mp)
	cfg.WebhookSecret = testSecret
	cfg.MaxBodyBytes = 64 << 10
	b := newBridge(t, cfg)
	srv := httptest.NewServer(b)
	defer srv.Close()

	bad := []struct {
		method, path, contentType string
		body                      []byte
	}{
		{"POST", "/branch?secret=" + testSecret, "application/json", []byte(`{"name":`)},
		{"POST", "/branch?secret=" + testSecret, "application/json", bytes.Repeat([]byte("["), 100<<10)},
		{"POST", "/branch?secret=" + testSecret, "application/json", []byte(`[1,2,3]`)},
		{"POST", "/branch?secret=wrong", "application/json", fixtures.BodyNamed("purchase-android")},
		{"POST", "/branch?secret=" + testSecret, "text/xml", []byte(`<x/>`)},
		{"PUT", "/branch?secret=" + testSecret, "application/json", []byte(`{}`)},
		{"GET", "/branch?secret=" + testSecret + "&%zz", "", nil},
	}
	client := srv.Client()
	var wg sync.WaitGroup
	var badSent atomic.Int64
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; i < 500; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c := bad[(i+w)%len(bad)]
				req, _ := http.NewRequest(c.method, srv.URL+c.path, bytes.NewReader(c.body))
				req.Header.Set("Content-Type", c.contentType)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Errorf("bad request %d got 200", (i+w)%len(bad))
				}
				badSent.Add(1)
			}
		})
	}

	const good = 100
	for i := range good {
		u := fmt.Sprintf("%s/branch?ev=OPEN&id=%d&ts=1717433000000&secret=%s", srv.URL, i+1, url.QueryEscape(testSecret))
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("good webhook %d: got %d, want 200", i, resp.StatusCode)
		}
	}
	close(stop)
	wg.Wait()
	shutdown(t, b)

	if got := mp.UniqueEvents(); got != good {
		t.Errorf("good events delivered: got %d, want %d", got, good)
	}
	t.Logf("%d bad requests rejected while %d good webhooks were delivered", badSent.Load(), good)
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) Sync() error { return nil }

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// TestLogsHoldNoSecretsOrPersonalData runs every failure path with a
// debug-level JSON logger and searches the output for each secret and for
// the IP addresses and device ids of the fixtures.
func TestLogsHoldNoSecretsOrPersonalData(t *testing.T) {
	secrets := map[string]string{
		"token":                  "tok-7e1d0c55aa",
		"API secret":             "apisecret-93b1ff",
		"service account secret": "sasecret-4c2e8d",
		"webhook secret":         testSecret,
	}
	personal := []string{
		"203.0.113.7", "198.51.100.9", "192.0.2.44", "198.51.100.23",
		"5B1C0A9E-1111-4222-8333-944455556666", "38400000-8cf0-11bd-b23e-10b96e40000d",
		"a1b2c3d4e5f60718", "0C2D3E4F-1111-2222-3333-444455556666",
	}

	var logs syncBuffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &logs, zapcore.DebugLevel)
	logger := zap.New(core)

	mp := startMixpanel(t)
	var calls atomic.Int64
	mp.SetFault(func(path string) *mptest.Response {
		switch calls.Add(1) {
		case 1:
			return &mptest.Response{Status: 401, Body: `{"error":"Invalid credentials"}`}
		case 2:
			return &mptest.Response{Status: 500, Body: "oops"}
		case 3:
			return &mptest.Response{Status: 400, Body: "not json"}
		}
		return nil
	})

	cfg := testConfig(mp)
	cfg.Logger = logger
	cfg.Token = secrets["token"]
	cfg.APISecret = secrets["API secret"]
	cfg.ServiceAccount = &ServiceAccount{ProjectID: 1, Username: "sa", Secret: secrets["service account secret"]}
	cfg.WebhookSecret = secrets["webhook secret"]
	cfg.MaxAttempts = 3
	cfg.Resolver = identity.ResolverFunc(func(_ context.Context, ids identity.Identifiers) (identity.Identity, error) {
		if ids.DeveloperIdentity == "user-77" {
			panic("resolver bug")
		}
		if ids.AndroidID != "" && ids.DeveloperIdentity == "" {
			// A driver error that quotes its argument, as PostgreSQL's do.
			return identity.Identity{}, fmt.Errorf("invalid input syntax for type uuid: %q", ids.AndroidID)
		}
		return identity.Identity{UserID: ids.DeveloperIdentity}, nil
	})
	b := newBridge(t, cfg)
	srv := httptest.NewServer(b)
	defer srv.Close()

	post := func(query string, body []byte) {
		resp, err := http.Post(srv.URL+"/branch?"+query, "application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
		}
	}
	for _, f := range fixtures.Bodies() {
		post("secret="+url.QueryEscape(testSecret), f.Data)
		post("secret=wrong", f.Data)
	}
	post("secret="+url.QueryEscape(testSecret), []byte(`{"name":`))
	post("secret="+url.QueryEscape(testSecret)+"&ip=203.0.113.7", []byte(`[]`))
	shutdown(t, b)

	out := logs.String()
	if !strings.Contains(out, "webhook rejected") || !strings.Contains(out, "dead-lettered") {
		t.Fatalf("the run did not reach the failure paths; logs:\n%s", out)
	}
	for name, secret := range secrets {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain the %s", name)
		}
	}
	for _, value := range personal {
		if strings.Contains(out, value) {
			t.Errorf("logs contain personal data %q", value)
		}
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &line); err != nil {
		t.Errorf("log line is not JSON: %v", err)
	}
}

func TestForwardedHeaderSetting(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"forwarded", map[string]string{"Forwarded": `for="52.43.119.253:1234";proto=https`}, 200},
		{"forwarded ipv6", map[string]string{"Forwarded": `for="[2001:db8::7]:99"`}, 200},
		{"x-forwarded-for ignored", map[string]string{"Forwarded": "for=198.51.100.9", "X-Forwarded-For": "52.43.119.253"}, 403},
	}
	cfg := testConfig(startMixpanel(t))
	cfg.AllowedIPs = append(BranchWebhookIPs(), "2001:db8::/64")
	cfg.TrustedProxies = []string{"10.0.0.0/24"}
	cfg.ForwardedHeader = "Forwarded"
	b := newBridge(t, cfg)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", fmt.Sprintf("/branch?ev=OPEN&id=%d", i), nil)
			req.RemoteAddr = "10.0.0.5:4000"
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			b.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("status: got %d, want %d", rec.Code, tt.want)
			}
		})
	}
	if _, err := New(Config{Token: "t", ForwardedHeader: "X-Real-IP"}); err == nil || !strings.Contains(err.Error(), "ForwardedHeader") {
		t.Errorf("invalid ForwardedHeader: got %v, want an error naming it", err)
	}
}

func TestOtherIdentifiersNeverSent(t *testing.T) {
	mp := startMixpanel(t)
	b := newBridge(t, testConfig(mp))
	bodies := []string{
		`{"name":"OPEN","id":"1","user_data":{"os":"ANDROID","oaid":"OAID-1","mac_address":"MAC-1","local_ip":"10.1.2.3","cross_platform_id":"CPID-1","idfa":"IDFA-1"}}`,
		`{"event":"open","ip":"203.0.113.79","metadata":{"referred":true}}`,
	}
	for _, body := range bodies {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("POST", "/branch", strings.NewReader(body)))
		if rec.Code != 200 {
			t.Fatalf("status: got %d, want 200", rec.Code)
		}
	}
	shutdown(t, b)
	for _, r := range requestsTo(mp, "/import") {
		for _, value := range []string{"OAID-1", "MAC-1", "10.1.2.3", "CPID-1", "branch_ip"} {
			if bytes.Contains(r.Body, []byte(value)) {
				t.Errorf("import contains %q", value)
			}
		}
	}
	events := mp.Events()
	var legacyIP any
	for _, ev := range events {
		if ev["event"] == "[Branch] open" && props(ev)["branch_event"] == "open" {
			legacyIP = props(ev)["ip"]
		}
	}
	if legacyIP != "203.0.113.79" {
		t.Errorf("legacy top-level ip: got %v, want it as the event's ip for geolocation", legacyIP)
	}
}

func TestDecodeSlotFreeWithDoneContext(t *testing.T) {
	b := newBridge(t, testConfig(startMixpanel(t)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as for a pipelined request whose connection was half-closed
	for i := range 20 {
		req := httptest.NewRequest("GET", fmt.Sprintf("/branch?ev=OPEN&id=%d", 500+i), nil).WithContext(ctx)
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d with free slots and a done context: got %d, want 200", i, rec.Code)
		}
	}
}

// TestBodyReadErrorLogsNoAddress resets a connection in the middle of a
// body: the read error's text names both addresses, and the log line must
// not.
func TestBodyReadErrorLogsNoAddress(t *testing.T) {
	var logs syncBuffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &logs, zapcore.DebugLevel)
	cfg := testConfig(startMixpanel(t))
	cfg.Logger = zap.New(core)
	b := newBridge(t, cfg)
	srv := httptest.NewServer(b)
	defer srv.Close()

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /branch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":")
	time.Sleep(50 * time.Millisecond) // lets the handler start reading
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()

	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "webhook rejected") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got := logs.String()
	if !strings.Contains(got, "webhook rejected") {
		t.Fatalf("no rejection logged; logs:\n%s", got)
	}
	if strings.Contains(got, "127.0.0.1") {
		t.Errorf("log names a client address:\n%s", got)
	}
}

// TestAnnouncedLengthNotPreallocated announces a large body and sends two
// bytes: the handler must not allocate the announced size up front.
func TestAnnouncedLengthNotPreallocated(t *testing.T) {
	cfg := testConfig(startMixpanel(t))
	cfg.MaxBodyBytes = 64 << 20
	b := newBridge(t, cfg)
	req := httptest.NewRequest("POST", "/branch", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = 32 << 20

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, req)
	runtime.ReadMemStats(&after)

	if rec.Code != http.StatusBadRequest {
		t.Errorf("status: got %d, want 400", rec.Code)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
		t.Errorf("allocated %d bytes for a 2-byte body announced as 32 MiB", n)
	}
}
