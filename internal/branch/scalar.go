package branch

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// stringOf returns a scalar as a string. Numbers keep their exact digits, so
// an id above 2^53 sent as a bare number is not rounded. Objects, arrays and
// null return "".
func stringOf(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// BoolOf returns the boolean value of v, accepting true, "true", "1" and
// their false forms. ok is false for anything else.
func BoolOf(v any) (value, ok bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		return b, err == nil
	case json.Number:
		switch x {
		case "1":
			return true, true
		case "0":
			return false, true
		}
	}
	return false, false
}

// secondsLimit separates seconds from milliseconds: 1e11 seconds is the year
// 5138, while 1e11 milliseconds is 1973.
const secondsLimit = 1e11

// millisOf converts a timestamp to milliseconds since the epoch. It accepts
// numbers and numeric strings in milliseconds or seconds, and ISO 8601
// strings. It returns 0 when v is not a timestamp.
func millisOf(v any) int64 {
	s := strings.TrimSpace(stringOf(v))
	if s == "" {
		return 0
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		// The negated test also rejects NaN, which ParseFloat accepts.
		if !(f > 0 && f <= 1e15) {
			return 0
		}
		if f < secondsLimit {
			return int64(f * 1000)
		}
		return int64(f)
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			ms := t.UnixMilli()
			if ms <= 0 {
				return 0
			}
			return ms
		}
	}
	return 0
}

// objectOf returns v as an object, or nil when it is not one.
func objectOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}
