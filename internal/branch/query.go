package branch

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultQueryParams maps the query parameter names that DecodeQuery accepts
// by default to the event field each one fills. Targets use the names of an
// event-ontology body: "name", "id", "timestamp", and "user_data.KEY",
// "last_attributed_touch_data.KEY", "event_data.KEY" or "custom_data.KEY".
//
// A GET webhook's URL is a template that the app owner writes, so the
// defaults accept Branch's own field names and common short forms.
func DefaultQueryParams() map[string]string {
	m := map[string]string{
		"name": "name", "event": "name", "ev": "name", "event_name": "name",
		"id": "id", "event_id": "id",
		"timestamp": "timestamp", "ts": "timestamp", "event_timestamp": "timestamp",

		"identity": "user_data.developer_identity",
		"uid":      "user_data.developer_identity",
		"user_id":  "user_data.developer_identity",

		"campaign": "last_attributed_touch_data.~campaign",
		"camp":     "last_attributed_touch_data.~campaign",
		"channel":  "last_attributed_touch_data.~channel",
		"chan":     "last_attributed_touch_data.~channel",
		"feature":  "last_attributed_touch_data.~feature",
		"stage":    "last_attributed_touch_data.~stage",
		"tags":     "last_attributed_touch_data.~tags",
		"url":      "last_attributed_touch_data.+url",
	}
	for k := range ontologyUserKeys {
		m[k] = "user_data." + k
	}
	for _, k := range []string{"revenue", "currency", "transaction_id", "coupon", "revenue_in_usd"} {
		m[k] = "event_data." + k
	}
	return m
}

// numericTargets are query targets whose values are sent to Mixpanel as
// numbers when they parse as numbers. Every other query value stays a
// string, because an id such as "00123" must keep its leading zeros.
var numericTargets = map[string]bool{
	"event_data.revenue":        true,
	"event_data.revenue_in_usd": true,
	"event_data.exchange_rate":  true,
	"event_data.shipping":       true,
	"event_data.tax":            true,
}

// DecodeQuery decodes a GET webhook. params maps parameter names to targets
// as DefaultQueryParams describes; nil means DefaultQueryParams. Parameters
// that params does not name go to CustomData under their own name, except
// those in ignore (such as the webhook secret). Empty values count as
// absent. It returns ErrNoEventName when no parameter carries the event
// name.
func DecodeQuery(query url.Values, params map[string]string, ignore ...string) (*Event, error) {
	if params == nil {
		params = DefaultQueryParams()
	}
	// Sorted names make the result deterministic when two parameters fill
	// the same target: the first name in byte order wins.
	names := make([]string, 0, len(query))
	for param := range query {
		names = append(names, param)
	}
	slices.Sort(names)

	top := make(map[string]any, 8)
	for _, param := range names {
		if param == "" || ignored(param, ignore) {
			continue
		}
		value := firstNonEmpty(query[param])
		if value == "" {
			continue
		}
		target, ok := params[param]
		if !ok {
			target = "custom_data." + validUTF8(param)
		}
		setQueryTarget(top, target, validUTF8(value))
	}

	ev, err := fromObject(top)
	if err != nil {
		return nil, err
	}
	ev.Generation = Query
	return ev, nil
}

func setQueryTarget(top map[string]any, target, value string) {
	var v any = value
	if numericTargets[target] && isJSONNumber(value) {
		v = json.Number(value)
	}
	object, key, nested := strings.Cut(target, ".")
	if !nested {
		if _, exists := top[object]; !exists {
			top[object] = v
		}
		return
	}
	m, _ := top[object].(map[string]any)
	if m == nil {
		m = make(map[string]any)
		top[object] = m
	}
	if _, exists := m[key]; !exists {
		m[key] = v
	}
}

// isJSONNumber reports whether s is a JSON number literal that fits a
// float64. ParseFloat alone also accepts "NaN", "Inf", "+5" and ".5", which
// json.Marshal rejects as a json.Number.
func isJSONNumber(s string) bool {
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return false
	}
	return json.Valid([]byte(s))
}

// validUTF8 replaces each byte of s that is not part of valid UTF-8 with
// U+FFFD, as decoding a JSON body does. Names that differ only in invalid
// bytes then become one property, the first in byte order, instead of
// two that Mixpanel would read as the same key.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func firstNonEmpty(values []string) string {
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

func ignored(param string, ignore []string) bool {
	return slices.Contains(ignore, param)
}
