package branchmp

import (
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/delivery"
	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/mapping"
	"github.com/branchmp/branchmp/internal/spool"
)

const allowedMethods = "GET, HEAD, POST, OPTIONS"

// errBodyTooLarge marks a body over MaxBodyBytes, compressed or not.
var errBodyTooLarge = errors.New("body too large")

// ServeHTTP checks, decodes and stores one webhook, and responds without
// waiting for Mixpanel. See the README for the meaning of each status.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !b.ips.allow(r) {
		b.reject(w, r, http.StatusForbidden, "client address not allowed", nil)
		return
	}
	if r.Method == http.MethodOptions {
		w.Header().Set("Allow", allowedMethods)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !b.auth.check(r) {
		// Neither the response nor the log names the part that was wrong.
		b.reject(w, r, http.StatusUnauthorized, "unauthorized", nil)
		return
	}

	var (
		in  webhook
		err error
	)
	switch r.Method {
	case http.MethodPost:
		in, err = b.decodePost(w, r)
	case http.MethodGet:
		in, err = b.decodeQuery(r, r.URL.RawQuery)
	case http.MethodHead:
		// A probe of the URL: the same checks as GET, but no event.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	default:
		w.Header().Set("Allow", allowedMethods)
		b.reject(w, r, http.StatusMethodNotAllowed, "method not allowed", nil)
		return
	}
	if err != nil {
		b.rejectDecode(w, r, err)
		return
	}

	if !b.cfg.KeepRobots && isRobot(in.event) {
		b.webhooks.robots.Add(1)
		respondOK(w)
		return
	}
	b.store(w, r, in)
}

// store puts a decoded webhook into the spool and responds.
func (b *Bridge) store(w http.ResponseWriter, r *http.Request, in webhook) {
	entry := &spool.Entry{
		Key:      dedupKey(in.event),
		Received: b.now(),
		Query:    in.query,
		Payload:  in.payload,
		Value:    in.event,
	}
	switch err := b.pool.Accept(entry); {
	case err == nil:
		b.webhooks.accepted.Add(1)
	case errors.Is(err, spool.ErrDuplicate):
		// A redelivery: Branch retries after a timeout. The first copy is
		// already on its way.
	case errors.Is(err, spool.ErrFull):
		b.reject(w, r, http.StatusServiceUnavailable, "spool is full", nil)
		return
	case errors.Is(err, spool.ErrTooLarge):
		// Only with a MaxBodyBytes above what a disk spool can store.
		b.reject(w, r, http.StatusRequestEntityTooLarge, "body too large for the spool", nil)
		return
	case errors.Is(err, delivery.ErrClosed), errors.Is(err, spool.ErrClosed):
		b.reject(w, r, http.StatusServiceUnavailable, "shutting down", nil)
		return
	default:
		b.log.Error("storing a webhook failed", zap.Error(err))
		b.reject(w, r, http.StatusServiceUnavailable, "storing the webhook failed", nil)
		return
	}
	respondOK(w)
}

// dedupKey returns the key under which a redelivery of ev is recognised:
// its $insert_id. An event with neither an id nor a timestamp gets none,
// because a second copy of it may be a real second event, which Mixpanel
// keeps apart by its time of receipt.
func dedupKey(ev *branch.Event) string {
	if ev.Timestamp <= 0 && mapping.IsPlaceholder(ev.ID) {
		return ""
	}
	return mapping.InsertID(ev)
}

func respondOK(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok\n")
}

// isRobot reports whether Branch marked the event as robot traffic in its
// os or platform.
func isRobot(ev *branch.Event) bool {
	return strings.EqualFold(ev.User.OS, "ROBOT") || strings.EqualFold(ev.User.Platform, "ROBOT")
}

// webhook is a decoded webhook with the payload the spool keeps.
type webhook struct {
	event   *branch.Event
	payload []byte // JSON body, or query string when query is set
	query   bool
}

// unsupportedMediaError is a content type or encoding the bridge does not
// read.
type unsupportedMediaError struct{ what string }

func (e *unsupportedMediaError) Error() string { return "unsupported " + e.what }

// decodePost reads and decodes a POST body: JSON, or a form decoded like a
// GET query.
func (b *Bridge) decodePost(w http.ResponseWriter, r *http.Request) (webhook, error) {
	isForm := false
	if ct := r.Header.Get("Content-Type"); ct != "" {
		media, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			return webhook{}, &unsupportedMediaError{"content type"}
		case isJSONMedia(media):
		case media == "application/x-www-form-urlencoded":
			isForm = true
		default:
			return webhook{}, &unsupportedMediaError{"content type " + media}
		}
	}

	body, err := b.readBody(w, r)
	if err != nil {
		return webhook{}, err
	}
	if isForm {
		return b.decodeQuery(r, string(body))
	}
	if err := b.acquireDecodeSlot(r); err != nil {
		return webhook{}, err
	}
	defer b.releaseDecodeSlot()
	ev, err := branch.Decode(body)
	if err != nil {
		return webhook{}, err
	}
	return webhook{event: ev, payload: body}, nil
}

// decodeQuery decodes a GET query or a form body. The stored payload leaves
// out the secret parameter, so no secret reaches the spool or a dead
// letter.
func (b *Bridge) decodeQuery(r *http.Request, raw string) (webhook, error) {
	query, err := url.ParseQuery(raw)
	if err != nil {
		return webhook{}, errors.Join(branch.ErrInvalidJSON, err)
	}
	if err := b.acquireDecodeSlot(r); err != nil {
		return webhook{}, err
	}
	defer b.releaseDecodeSlot()
	ev, err := branch.DecodeQuery(query, b.queryParams, b.ignore...)
	if err != nil {
		return webhook{}, err
	}
	if query.Has(b.cfg.SecretParam) {
		query.Del(b.cfg.SecretParam)
		raw = query.Encode()
	}
	return webhook{event: ev, payload: []byte(raw), query: true}, nil
}

// errBusy means the request ended while it waited for a decode slot.
var errBusy = errors.New("too many webhooks being decoded")

// acquireDecodeSlot waits for one of the MaxConcurrentDecodes slots, or
// until the request ends.
func (b *Bridge) acquireDecodeSlot(r *http.Request) error {
	// A free slot is taken first: select picks at random among ready
	// cases, and the context of a pipelined request may already be done.
	select {
	case b.decodeSlots <- struct{}{}:
		return nil
	default:
	}
	select {
	case b.decodeSlots <- struct{}{}:
		return nil
	case <-r.Context().Done():
		return errBusy
	}
}

func (b *Bridge) releaseDecodeSlot() {
	<-b.decodeSlots
}

// readBody reads the request body up to MaxBodyBytes, after gzip
// decompression when the body is gzip-encoded, so a small body that
// inflates past the limit is rejected without being held in memory.
func (b *Bridge) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := b.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		// Rejected before reading, and before net/http sends 100 Continue
		// to a client that asked for it.
		return nil, errBodyTooLarge
	}
	raw := http.MaxBytesReader(w, r.Body, limit)
	defer raw.Close()

	var src io.Reader = raw
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(raw)
		if err != nil {
			return nil, bodyError(err)
		}
		defer zr.Close()
		src = zr
	default:
		return nil, &unsupportedMediaError{"content encoding " + enc}
	}

	if src == io.Reader(raw) && r.ContentLength > 0 && r.ContentLength <= maxPresizedBody {
		// The length is known and small, so the body is read into one
		// buffer of its size. net/http ends the body at Content-Length,
		// and a shorter body is an error.
		body := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(raw, body); err != nil {
			return nil, bodyError(err)
		}
		return body, nil
	}
	body, err := io.ReadAll(io.LimitReader(src, limit+1))
	if err != nil {
		return nil, bodyError(err)
	}
	if int64(len(body)) > limit {
		return nil, errBodyTooLarge
	}
	return body, nil
}

// maxPresizedBody bounds the buffer allocated from a Content-Length before
// any of the body arrives, so clients that announce large bodies and send
// nothing cannot reserve memory. Branch's bodies are a few kilobytes.
const maxPresizedBody = 16 << 10

// bodyError turns a read error into errBodyTooLarge when the size limit
// caused it, and into an invalid-body error otherwise. A network error's
// text names the client's address, which is personal data, so only its
// kind is kept.
func bodyError(err error) error {
	var maxErr *http.MaxBytesError
	var netErr net.Error
	var corrupt flate.CorruptInputError
	switch {
	case errors.As(err, &maxErr):
		return errBodyTooLarge
	case errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum), errors.As(err, &corrupt):
		return fmt.Errorf("%w: invalid gzip data: %v", branch.ErrInvalidJSON, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: body ended early", branch.ErrInvalidJSON)
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Errorf("%w: reading the body timed out", branch.ErrInvalidJSON)
	}
	return fmt.Errorf("%w: reading the body failed", branch.ErrInvalidJSON)
}

// rejectDecode responds to a request whose body or query could not be decoded.
func (b *Bridge) rejectDecode(w http.ResponseWriter, r *http.Request, err error) {
	var media *unsupportedMediaError
	switch {
	case errors.Is(err, errBusy):
		b.reject(w, r, http.StatusServiceUnavailable, "too many webhooks being decoded", nil)
	case errors.Is(err, errBodyTooLarge):
		b.reject(w, r, http.StatusRequestEntityTooLarge, "body too large", nil)
	case errors.As(err, &media):
		b.reject(w, r, http.StatusUnsupportedMediaType, media.Error(), nil)
	default:
		b.reject(w, r, http.StatusBadRequest, "not a Branch event", err)
	}
}

// reject responds with status, counts the rejection and logs it. The log
// line carries the configured path, never the request URL, whose query may
// contain personal data.
func (b *Bridge) reject(w http.ResponseWriter, r *http.Request, status int, reason string, err error) {
	b.count(status)
	fields := []zap.Field{
		zap.Int(logfield.Status, status),
		zap.String(logfield.Reason, reason),
		zap.String(logfield.Method, r.Method),
		zap.String(logfield.Path, b.cfg.Path),
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	b.requestLog.Warn("webhook rejected", fields...)
	http.Error(w, reason, status)
}

func (b *Bridge) count(status int) {
	c := &b.webhooks
	switch status {
	case http.StatusBadRequest:
		c.badRequest.Add(1)
	case http.StatusMethodNotAllowed:
		c.methodNotAllowed.Add(1)
	case http.StatusRequestEntityTooLarge:
		c.tooLarge.Add(1)
	case http.StatusUnsupportedMediaType:
		c.unsupportedMedia.Add(1)
	case http.StatusServiceUnavailable:
		c.unavailable.Add(1)
	case http.StatusUnauthorized:
		c.unauthorized.Add(1)
	case http.StatusForbidden:
		c.forbidden.Add(1)
	}
}

// isJSONMedia reports whether a media type names JSON: application/json,
// text/json or a structured suffix such as application/vnd.x+json.
func isJSONMedia(media string) bool {
	return media == "application/json" || media == "text/json" ||
		strings.HasPrefix(media, "application/") && strings.HasSuffix(media, "+json")
}
