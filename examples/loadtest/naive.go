package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/mixpanel/mixpanel-go"
)

// newNaiveHandler returns the baseline that the bridge is compared with,
// the handler many teams write first. It decodes the body, builds one
// event and calls mixpanel-go's Import on the request path. It responds
// 200 only after Mixpanel did, and 502 after a failed import. Branch never
// resends, so that event is lost.
//
// Its HTTP client keeps up to 256 idle connections to the stand-in.
// mixpanel-go's default, http.DefaultClient, keeps only 2, so under load
// most requests would dial a new connection. The baseline should not lose
// for a reason that is so easy to fix.
func newNaiveHandler(mixpanelURL string) http.Handler {
	transport := &http.Transport{
		Proxy:               nil, // only the loopback stand-in
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	client := mixpanel.NewApiClient("loadtest-token",
		mixpanel.HttpClient(&http.Client{Transport: transport, Timeout: 10 * time.Second}),
		mixpanel.ProxyApiLocation(mixpanelURL))

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			http.Error(w, "invalid JSON", http.StatusBadRequest)
			return
		}
		event := client.NewEvent("[Branch] "+eventName(body), developerIdentity(body), flatten(body))
		event.AddInsertID("br-" + stringField(body, "id"))
		event.AddTime(time.Now())
		_, err := client.Import(r.Context(), []*mixpanel.Event{event}, mixpanel.ImportOptions{Strict: true})
		if err != nil {
			http.Error(w, "import failed", http.StatusBadGateway)
			return
		}
		io.WriteString(w, "ok\n")
	})
}

// eventName returns the event name of either Branch payload generation.
func eventName(body map[string]any) string {
	if name := stringField(body, "name"); name != "" {
		return strings.ToLower(name)
	}
	return stringField(body, "event")
}

func developerIdentity(body map[string]any) string {
	if user, ok := body["user_data"].(map[string]any); ok {
		if id := stringField(user, "developer_identity"); id != "" {
			return id
		}
	}
	return stringField(body, "identity")
}

// flatten copies the top-level scalar fields and the scalar fields of
// nested objects, as "object.key", into one property map.
func flatten(body map[string]any) map[string]any {
	props := make(map[string]any, len(body))
	for k, v := range body {
		nested, ok := v.(map[string]any)
		if !ok {
			props[k] = v
			continue
		}
		for nk, nv := range nested {
			switch nv.(type) {
			case map[string]any, []any:
			default:
				props[k+"."+nk] = nv
			}
		}
	}
	return props
}

func stringField(m map[string]any, key string) string {
	switch v := m[key].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}
