// Package mptest runs a real HTTP server on loopback that replaces
// Mixpanel's /import and /engage endpoints in tests and the demo. It decodes what it receives the
// way Mixpanel does (gzip, JSON arrays, basic auth), records it, and can be
// set to respond with faults.
//
// For load tests, StartWith(Options{CountOnly: true}) keeps counters
// instead of every request, and Options.Delay, AddFault and Hold make it
// slow, failing or stalled.
package mptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one request the server received.
type Request struct {
	Path            string
	Query           string
	ContentEncoding string
	AuthUser        string // basic auth user name: the token or API secret
	AuthPassword    string
	Body            []byte           // decompressed body
	Records         []map[string]any // the JSON array in Body, numbers as json.Number
	Status          int              // status the server responded with
	At              time.Time        // when the request arrived
}

// Response is a scripted response.
type Response struct {
	Status int
	Body   string
	Header http.Header
	Delay  time.Duration // wait before responding
}

// Server is the stand-in. It is safe for concurrent use.
type Server struct {
	URL string

	srv  *http.Server
	ln   net.Listener
	opts Options

	mu       sync.Mutex
	requests []Request
	script   map[string][]Response // path -> scripted responses, used before normal ones
	fault    func(path string) *Response
	insertID map[string]int // $insert_id -> times imported
	changed  chan struct{}  // closed and replaced after each request

	faults []Fault       // scheduled faults, see AddFault
	hold   chan struct{} // non-nil during a Hold, closed by Release
	counts *counter      // non-nil with CountOnly
	conns  atomic.Int64  // TCP connections accepted
}

// Start starts a server on 127.0.0.1 with a random port.
func Start() (*Server, error) {
	return StartAt("127.0.0.1:0")
}

// StartAt starts a server listening on addr.
func StartAt(addr string) (*Server, error) {
	return StartWith(Options{Addr: addr})
}

// StartWith starts a server configured by opts.
func StartWith(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("mptest: listen on %s: %w", opts.Addr, err)
	}
	s := &Server{
		URL:      "http://" + ln.Addr().String(),
		ln:       ln,
		opts:     opts,
		script:   make(map[string][]Response),
		insertID: make(map[string]int),
		changed:  make(chan struct{}),
	}
	if opts.CountOnly {
		s.counts = newCounter()
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ConnState:         s.trackConn,
	}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server and waits for its handlers. It releases a Hold
// first, so that held requests get their responses.
func (s *Server) Close() error {
	s.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// Script queues responses for path ("/import" or "/engage"), given in order
// to the next requests before the server responds normally again.
func (s *Server) Script(path string, answers ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script[path] = append(s.script[path], answers...)
}

// SetFault makes f decide every response: a nil result means a normal
// response.
// SetFault(nil) removes it.
func (s *Server) SetFault(f func(path string) *Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Requests returns every request received, in order. With CountOnly it
// returns nil.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Events returns the records of every /import request answered 200.
func (s *Server) Events() []map[string]any {
	return s.records("/import")
}

// Profiles returns the records of every /engage request answered 200.
func (s *Server) Profiles() []map[string]any {
	return s.records("/engage")
}

func (s *Server) records(path string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, r := range s.requests {
		if r.Path == path && r.Status == http.StatusOK {
			out = append(out, r.Records...)
		}
	}
	return out
}

// UniqueEvents returns how many distinct $insert_id values were imported,
// which is what Mixpanel counts after deduplication.
func (s *Server) UniqueEvents() int {
	if s.counts != nil {
		return s.Counts().DistinctIDs
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.insertID)
}

// WaitEvents waits until at least n events were imported or ctx ends.
func (s *Server) WaitEvents(ctx context.Context, n int) error {
	if s.counts != nil {
		return s.wait(ctx, func() bool { return s.Counts().Events >= n })
	}
	return s.wait(ctx, func() bool { return len(s.Events()) >= n })
}

// WaitRequests waits until at least n requests for path arrived or ctx ends.
func (s *Server) WaitRequests(ctx context.Context, path string, n int) error {
	if s.counts != nil {
		return s.wait(ctx, func() bool { return s.counts.requests(path) >= n })
	}
	return s.wait(ctx, func() bool {
		count := 0
		for _, r := range s.Requests() {
			if r.Path == path {
				count++
			}
		}
		return count >= n
	})
}

func (s *Server) wait(ctx context.Context, done func() bool) error {
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if done() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ServeHTTP handles /import and /engage like Mixpanel.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.counts != nil {
		s.serveCounting(w, r)
		return
	}
	req := Request{
		At:              time.Now(),
		Path:            r.URL.Path,
		Query:           r.URL.RawQuery,
		ContentEncoding: r.Header.Get("Content-Encoding"),
	}
	req.AuthUser, req.AuthPassword, _ = r.BasicAuth()

	answer, status, body := s.handle(r, &req)
	if answer != nil {
		if answer.Delay > 0 {
			select {
			case <-time.After(answer.Delay):
			case <-r.Context().Done():
			}
		}
		for k, v := range answer.Header {
			w.Header()[k] = v
		}
		status, body = answer.Status, answer.Body
	}
	s.pause(r.Context())
	req.Status = status
	s.record(req)
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func (s *Server) handle(r *http.Request, req *Request) (*Response, int, string) {
	data, err := readBody(r)
	if err != nil {
		return nil, http.StatusBadRequest, `{"code":400,"error":"unreadable body","status":0}`
	}
	req.Body = data
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&req.Records); err != nil {
		return nil, http.StatusBadRequest, `{"code":400,"error":"body is not a JSON array","status":0}`
	}

	if answer := s.nextAnswer(req.Path); answer != nil {
		return answer, 0, ""
	}
	switch req.Path {
	case "/import":
		if req.AuthUser == "" {
			return nil, http.StatusUnauthorized, `{"code":401,"error":"missing auth","status":0}`
		}
		return nil, http.StatusOK, fmt.Sprintf(`{"code":200,"num_records_imported":%d,"status":1}`, len(req.Records))
	case "/engage":
		return nil, http.StatusOK, "1"
	}
	return nil, http.StatusNotFound, "not found"
}

func (s *Server) nextAnswer(path string) *Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if queue := s.script[path]; len(queue) > 0 {
		s.script[path] = queue[1:]
		return &queue[0]
	}
	if s.fault != nil {
		if answer := s.fault(path); answer != nil {
			return answer
		}
	}
	return s.scheduledFault(time.Now())
}

func (s *Server) record(req Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.Path == "/import" && req.Status == http.StatusOK {
		for _, rec := range req.Records {
			props, _ := rec["properties"].(map[string]any)
			if id, ok := props["$insert_id"].(string); ok {
				s.insertID[id]++
			}
		}
	}
	s.requests = append(s.requests, req)
	close(s.changed)
	s.changed = make(chan struct{})
}

func readBody(r *http.Request) ([]byte, error) {
	var src io.Reader = r.Body
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		src = zr
	}
	return io.ReadAll(io.LimitReader(src, 64<<20))
}
