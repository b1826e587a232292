package mptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// Options configure a Server started with StartWith. The zero value is a
// server on 127.0.0.1 with a random port that records every request, like
// Start.
type Options struct {
	// Addr is the listen address. Default "127.0.0.1:0".
	Addr string

	// CountOnly makes the server keep counters instead of every request,
	// so that a load test of millions of events does not fill its memory.
	// Requests, Events and Profiles then return nothing, and Counts and
	// HasInsertID report what arrived. The server keeps a 64-bit hash per
	// distinct $insert_id, plus the map's overhead.
	CountOnly bool

	// Delay is added before every response, as Mixpanel's processing
	// time. A client that gives up during the delay gets no response. With
	// CountOnly its request is then counted in Counts.Canceled and its
	// records are not imported.
	Delay time.Duration
}

// Fault makes the server respond with Status to every request that
// arrives from From until Until. Scripted responses and the function given
// to SetFault take precedence.
type Fault struct {
	From, Until time.Time
	Status      int // for example 429 or 503

	// RetryAfter is sent in the Retry-After header, rounded up to whole
	// seconds, when it is positive.
	RetryAfter time.Duration
}

// AddFault schedules f. Faults whose periods overlap are checked in the
// order they were added.
func (s *Server) AddFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// scheduledFault returns the response of the first fault in effect at
// now, or nil. The caller holds s.mu.
func (s *Server) scheduledFault(now time.Time) *Response {
	for _, f := range s.faults {
		if now.Before(f.From) || !now.Before(f.Until) {
			continue
		}
		answer := &Response{
			Status: f.Status,
			Body:   fmt.Sprintf(`{"code":%d,"error":"stand-in fault","status":0}`, f.Status),
		}
		if f.RetryAfter > 0 {
			seconds := int((f.RetryAfter + time.Second - 1) / time.Second)
			answer.Header = http.Header{"Retry-After": {strconv.Itoa(seconds)}}
		}
		return answer
	}
	return nil
}

// Hold makes the server read every request's body and then wait, without
// a response, until Release is called or the client gives up. A load test
// uses it to fill a bridge's spool and then measure how fast it drains.
func (s *Server) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
}

// Release ends a Hold, so held requests get their responses at once. It
// is safe to call without a Hold.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// pause waits out a Hold and then Options.Delay. It reports whether the
// request was held, and false for ok when ctx ended first.
func (s *Server) pause(ctx context.Context) (held, ok bool) {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		held = true
		select {
		case <-hold:
		case <-ctx.Done():
			return held, false
		}
	}
	if s.opts.Delay <= 0 {
		return held, ctx.Err() == nil
	}
	t := time.NewTimer(s.opts.Delay)
	defer t.Stop()
	select {
	case <-t.C:
		return held, true
	case <-ctx.Done():
		return held, false
	}
}

func (s *Server) trackConn(_ net.Conn, state http.ConnState) {
	if state == http.StateNew {
		s.conns.Add(1)
	}
}

// Counts are the counters of a server started with CountOnly.
type Counts struct {
	// Requests counts requests by path ("/import", "/engage" or another)
	// and status. A request whose client gave up before the response is
	// counted under status 0.
	Requests map[string]map[int]int

	Events      int // records of /import requests that got 200
	DistinctIDs int // distinct $insert_id values among those records
	MissingIDs  int // records without a string $insert_id
	Profiles    int // records of /engage requests that got 200
	Canceled    int // requests whose client gave up during Hold or Delay
	// HeldEvents counts the Events whose /import request waited in a
	// Hold. The sender prepared them before the Release.
	HeldEvents  int
	Connections int // TCP connections accepted

	// Batches are the record counts of the /import requests that got 200.
	Batches BatchSizes

	// FirstImport and LastImport are the times of the first and the last
	// 200 response to /import, or zero before the first.
	FirstImport, LastImport time.Time
}

// BatchBounds are the upper bounds of BatchSizes.Histogram's buckets. The
// bucket after the last bound counts batches of more than 1999 records,
// which are full ones for a client that keeps Mixpanel's limit of 2000.
var BatchBounds = []int{1, 10, 100, 500, 1000, 1999}

// BatchSizes summarises the record counts of /import requests.
type BatchSizes struct {
	Count, Min, Max, Sum int

	// Histogram[i] counts batches of more than BatchBounds[i-1] and at
	// most BatchBounds[i] records. The last element counts the batches
	// above every bound.
	Histogram []int
}

// Mean returns the mean batch size, or 0 without batches.
func (b BatchSizes) Mean() float64 {
	if b.Count == 0 {
		return 0
	}
	return float64(b.Sum) / float64(b.Count)
}

func (b *BatchSizes) add(n int) {
	if b.Count == 0 || n < b.Min {
		b.Min = n
	}
	b.Max = max(b.Max, n)
	b.Count++
	b.Sum += n
	for i, bound := range BatchBounds {
		if n <= bound {
			b.Histogram[i]++
			return
		}
	}
	b.Histogram[len(BatchBounds)]++
}

// counter holds the counters of a CountOnly server. Distinct $insert_ids
// are kept as 64-bit hashes: among 2 million ids the chance of any
// collision is about 1 in 10 million.
type counter struct {
	mu     sync.Mutex
	seed   maphash.Seed
	ids    map[uint64]struct{}
	counts Counts
}

func newCounter() *counter {
	return &counter{
		seed: maphash.MakeSeed(),
		ids:  make(map[uint64]struct{}),
		counts: Counts{
			Requests: make(map[string]map[int]int),
			Batches:  BatchSizes{Histogram: make([]int, len(BatchBounds)+1)},
		},
	}
}

// Counts returns a copy of the counters. Without CountOnly it returns the
// zero Counts.
func (s *Server) Counts() Counts {
	if s.counts == nil {
		return Counts{}
	}
	c := s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	out.Requests = make(map[string]map[int]int, len(c.counts.Requests))
	for path, byStatus := range c.counts.Requests {
		out.Requests[path] = make(map[int]int, len(byStatus))
		for status, n := range byStatus {
			out.Requests[path][status] = n
		}
	}
	out.Batches.Histogram = append([]int(nil), c.counts.Batches.Histogram...)
	out.DistinctIDs = len(c.ids)
	out.Connections = int(s.conns.Load())
	return out
}

// HasInsertID reports whether an /import request that got 200 contained a
// record with this $insert_id. It needs CountOnly.
func (s *Server) HasInsertID(id string) bool {
	if s.counts == nil {
		return false
	}
	c := s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.ids[maphash.String(c.seed, id)]
	return ok
}

func (c *counter) requests(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for _, n := range c.counts.Requests[path] {
		total += n
	}
	return total
}

// importRecord is the part of an /import record that the counter reads.
type importRecord struct {
	Properties struct {
		InsertID any `json:"$insert_id"`
	} `json:"properties"`
}

// scanRecords reads the $insert_id of each record in a JSON array of
// objects. The stand-in shares the machine with the bridge under test, and
// decoding whole batches with encoding/json took as much CPU per event as
// the bridge's own mapping, in bursts that delayed the load generator in
// the same process. Bodies shaped as the bridge writes them are searched
// for the ids directly; any other body is read token by token.
func scanRecords(data []byte) ([]importRecord, error) {
	if records, ok := searchRecords(data); ok {
		return records, nil
	}
	return tokenRecords(data)
}

var (
	recordStart = []byte(`{"event":`)
	insertIDKey = []byte(`"$insert_id":"`)
)

// searchRecords finds the ids of a body that starts like the bridge's
// /import bodies and has exactly one `"$insert_id":"` per `{"event":`.
// Inside a JSON string every quote is escaped, so those byte sequences
// only appear as keys. It reports false for any other body, and for ids
// that contain escapes.
func searchRecords(data []byte) ([]importRecord, bool) {
	if !bytes.HasPrefix(data, []byte("[")) || !bytes.HasPrefix(data[1:], recordStart) ||
		!bytes.HasSuffix(data, []byte("}]")) {
		return nil, false
	}
	n := bytes.Count(data, insertIDKey)
	if n == 0 || n != bytes.Count(data, recordStart) {
		return nil, false
	}
	records := make([]importRecord, 0, n)
	for rest := data; ; {
		i := bytes.Index(rest, insertIDKey)
		if i < 0 {
			break
		}
		rest = rest[i+len(insertIDKey):]
		end := bytes.IndexByte(rest, '"')
		if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
			return nil, false
		}
		var rec importRecord
		rec.Properties.InsertID = string(rest[:end])
		records = append(records, rec)
		rest = rest[end+1:]
	}
	return records, true
}

// tokenRecords reads the ids with a jsontext token scan that skips every
// other value.
func tokenRecords(data []byte) ([]importRecord, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '[' {
		return nil, errors.New("not a JSON array")
	}
	var records []importRecord
	for dec.PeekKind() != ']' {
		var rec importRecord
		if err := scanRecord(dec, &rec); err != nil {
			return nil, err
		}
		records = append(records, rec)
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, err
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, errors.New("data after the array")
	}
	return records, nil
}

// scanRecord reads one array element into rec. An element that is not an
// object, or has no string $insert_id in its properties, leaves
// rec.Properties.InsertID nil.
func scanRecord(dec *jsontext.Decoder, rec *importRecord) error {
	if dec.PeekKind() != '{' {
		return dec.SkipValue()
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if name.String() != "properties" || dec.PeekKind() != '{' {
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		for dec.PeekKind() != '}' {
			key, err := dec.ReadToken()
			if err != nil {
				return err
			}
			if key.String() == "$insert_id" && dec.PeekKind() == '"' {
				id, err := dec.ReadToken()
				if err != nil {
					return err
				}
				rec.Properties.InsertID = id.String()
				continue
			}
			if err := dec.SkipValue(); err != nil {
				return err
			}
		}
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
	}
	_, err := dec.ReadToken()
	return err
}

// serveCounting responds like ServeHTTP, but counts instead of recording.
// It decodes only the $insert_id of each record.
func (s *Server) serveCounting(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	data, err := readBody(r)
	if err != nil {
		s.answerCounted(w, r, path, nil, http.StatusBadRequest, `{"code":400,"error":"unreadable body","status":0}`)
		return
	}

	if answer := s.nextAnswer(path); answer != nil {
		s.answerScripted(w, r, path, answer)
		return
	}

	records, err := scanRecords(data)
	if err != nil {
		s.answerCounted(w, r, path, nil, http.StatusBadRequest, `{"code":400,"error":"body is not a JSON array","status":0}`)
		return
	}
	switch path {
	case "/import":
		user, _, _ := r.BasicAuth()
		if user == "" {
			s.answerCounted(w, r, path, nil, http.StatusUnauthorized, `{"code":401,"error":"missing auth","status":0}`)
			return
		}
		body := fmt.Sprintf(`{"code":200,"num_records_imported":%d,"status":1}`, len(records))
		s.answerCounted(w, r, path, records, http.StatusOK, body)
	case "/engage":
		s.answerCounted(w, r, path, records, http.StatusOK, "1")
	default:
		s.answerCounted(w, r, path, nil, http.StatusNotFound, "not found")
	}
}

// answerScripted sends a scripted or fault response and counts it. Its
// records are never imported, whatever its status.
func (s *Server) answerScripted(w http.ResponseWriter, r *http.Request, path string, answer *Response) {
	if answer.Delay > 0 {
		t := time.NewTimer(answer.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	if _, ok := s.pause(r.Context()); !ok {
		s.counts.canceled(path)
		s.notify()
		return
	}
	for k, v := range answer.Header {
		w.Header()[k] = v
	}
	s.counts.add(path, answer.Status, nil, false)
	s.notify()
	w.WriteHeader(answer.Status)
	io.WriteString(w, answer.Body)
}

// answerCounted waits out a Hold and Delay, counts the response and
// sends it. The records are imported when status is 200.
func (s *Server) answerCounted(w http.ResponseWriter, r *http.Request, path string, records []importRecord, status int, body string) {
	held, ok := s.pause(r.Context())
	if !ok {
		s.counts.canceled(path)
		s.notify()
		return
	}
	s.counts.add(path, status, records, held)
	s.notify()
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// notify wakes the callers of WaitEvents and WaitRequests.
func (s *Server) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

func (c *counter) canceled(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.countRequest(path, 0)
	c.counts.Canceled++
}

func (c *counter) add(path string, status int, records []importRecord, held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.countRequest(path, status)
	if status != http.StatusOK {
		return
	}
	switch path {
	case "/engage":
		c.counts.Profiles += len(records)
	case "/import":
		c.countImport(records, time.Now())
		if held {
			c.counts.HeldEvents += len(records)
		}
	}
}

func (c *counter) countRequest(path string, status int) {
	byStatus := c.counts.Requests[path]
	if byStatus == nil {
		byStatus = make(map[int]int)
		c.counts.Requests[path] = byStatus
	}
	byStatus[status]++
}

func (c *counter) countImport(records []importRecord, now time.Time) {
	c.counts.Events += len(records)
	c.counts.Batches.add(len(records))
	if c.counts.FirstImport.IsZero() {
		c.counts.FirstImport = now
	}
	c.counts.LastImport = now
	for _, rec := range records {
		id, ok := rec.Properties.InsertID.(string)
		if !ok {
			c.counts.MissingIDs++
			continue
		}
		c.ids[maphash.String(c.seed, id)] = struct{}{}
	}
}
