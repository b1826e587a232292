package mpclient

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"time"
)

// maxRecordedBody bounds how much of a response body the transport keeps.
// A strict-mode 400 for a full batch of 2000 records lists each failed
// record in about 150 bytes, so 1 MiB keeps every one of them.
const maxRecordedBody = 1 << 20

// exchange is the transport's record of one response. mixpanel-go drops
// the status of several error responses and never exposes Retry-After, so
// the client reads them from here instead.
type exchange struct {
	status     int
	retryAfter time.Duration
	body       []byte
}

type exchangeKey struct{}

func withExchange(ctx context.Context, x *exchange) context.Context {
	return context.WithValue(ctx, exchangeKey{}, x)
}

// recordingTransport stores the status, Retry-After and body of each
// response in the exchange carried by the request's context. The body is
// read here, up to maxRecordedBody, and handed on unchanged.
type recordingTransport struct {
	base http.RoundTripper
	now  func() time.Time
}

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	x, _ := req.Context().Value(exchangeKey{}).(*exchange)
	if err != nil || x == nil {
		return resp, err
	}

	x.status = resp.StatusCode
	x.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), t.now())
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, maxRecordedBody))
	x.body = body
	resp.Body = &replayBody{
		Reader: io.MultiReader(bytes.NewReader(body), resp.Body),
		closer: resp.Body,
	}
	if readErr != nil {
		// The status is known; the caller sees the read error through
		// mixpanel-go and classifies the exchange by status.
		x.body = append(x.body, []byte(" [body read failed: "+readErr.Error()+"]")...)
	}
	return resp, nil
}

type replayBody struct {
	io.Reader
	closer io.Closer
}

func (b *replayBody) Close() error { return b.closer.Close() }

// parseRetryAfter reads a Retry-After header in seconds or as an HTTP date.
// It returns 0 when the header is missing or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil {
		if d := at.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// CloseIdleConnections closes the idle connections of the wrapped
// transport, so that http.Client.CloseIdleConnections reaches it.
func (t *recordingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
