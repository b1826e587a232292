package mapping

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// EncodedSize returns the length of e's JSON encoding by encoding/json,
// without encoding it. Batching uses it to keep requests under their byte
// limit. It is exact for the values that Map produces; for other value
// types it falls back to encoding them.
func EncodedSize(e Event) int {
	// {"event":NAME,"properties":PROPS}
	return len(`{"event":,"properties":}`) + stringSize(e.Name) + objectSize(e.Properties)
}

func objectSize(m map[string]any) int {
	n := 2 // braces
	for k, v := range m {
		n += stringSize(k) + 1 + valueSize(v) // key, colon, value
	}
	if len(m) > 1 {
		n += len(m) - 1 // commas
	}
	return n
}

func valueSize(v any) int {
	switch x := v.(type) {
	case nil:
		return len("null")
	case string:
		return stringSize(x)
	case json.Number:
		return len(x)
	case bool:
		if x {
			return len("true")
		}
		return len("false")
	case int64:
		return len(strconv.AppendInt(nil, x, 10))
	case int:
		return len(strconv.AppendInt(nil, int64(x), 10))
	case []any:
		n := 2
		for _, item := range x {
			n += valueSize(item)
		}
		if len(x) > 1 {
			n += len(x) - 1
		}
		return n
	case map[string]any:
		return objectSize(x)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return 0
	}
	return len(data)
}

// stringSize returns the length of s as a JSON string from encoding/json,
// which escapes control characters, quotes, backslashes and, for HTML
// safety, <, > and &, and replaces invalid UTF-8 with \ufffd.
func stringSize(s string) int {
	n := 2 // quotes
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"', c == '\\', c == '\n', c == '\r', c == '\t', c == '\b', c == '\f':
				n += 2
			case c < 0x20, c == '<', c == '>', c == '&':
				n += 6 // \u00XX
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6 // \ufffd
		case r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
