package branch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// errDataAfterObject reports that the body continues past its top-level
// object with something other than whitespace.
var errDataAfterObject = errors.New("data after the object")

// Limits on what a pooled treeBuilder keeps between bodies, so one large
// body does not pin its scratch memory in the pool.
const (
	maxPooledStack     = 4096     // entries of names or values
	maxPooledUnquoted  = 64 << 10 // bytes
	maxInternedNames   = 512
	maxInternedNameLen = 64 // bytes
)

// treeBuilder decodes a JSON object into the values that encoding/json
// produces for a map[string]any with UseNumber: map[string]any, []any,
// string, json.Number, bool and nil. It reads the body with a jsontext
// Decoder, which checks the syntax and rejects nesting deeper than 10000
// objects and arrays. encoding/json has the same limit: both name it
// maxNestingDepth, in jsontext v1.27.2 and in Go 1.26, and the tests check
// the boundary. That limit also bounds the recursion of object, array and
// value.
type treeBuilder struct {
	dec   jsontext.Decoder
	input bytes.Buffer // the body; jsontext reads a bytes.Buffer without copying it

	// names and values are stacks of the members and elements decoded so
	// far in the open objects and arrays. A container is built when it
	// closes, so its map or slice is allocated at its final size.
	names  []string
	values []any

	unquoted []byte // scratch for strings that need unescaping

	// interned maps object names to a string allocated for an earlier
	// body. Webhook bodies repeat the same names, so a name seen before
	// costs no allocation.
	interned map[string]string
}

var treeBuilders = sync.Pool{New: func() any { return new(treeBuilder) }}

// decodeTree decodes body, whose first byte other than whitespace must be
// '{', into a map. It returns the jsontext error for invalid JSON and
// errDataAfterObject when the object is followed by anything but
// whitespace.
func decodeTree(body []byte) (map[string]any, error) {
	tb := treeBuilders.Get().(*treeBuilder)
	defer tb.release()

	tb.input = *bytes.NewBuffer(body)
	// These options give encoding/json's semantics: the last of duplicate
	// names wins, and invalid UTF-8 and unpaired surrogate escapes decode
	// to U+FFFD.
	tb.dec.Reset(&tb.input, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if _, err := tb.dec.ReadToken(); err != nil {
		return nil, err
	}
	top, err := tb.object()
	if err != nil {
		return nil, err
	}
	if _, err := tb.dec.ReadToken(); !errors.Is(err, io.EOF) {
		return nil, errDataAfterObject
	}
	return top, nil
}

// release drops the references to the last body and its values and returns
// tb to the pool.
func (tb *treeBuilder) release() {
	tb.input = bytes.Buffer{}
	tb.dec.Reset(&tb.input)
	// After an error the stacks still hold the entries of the open
	// containers. Entries past the length are already zero.
	clear(tb.names)
	clear(tb.values)
	tb.names, tb.values = tb.names[:0], tb.values[:0]
	if cap(tb.names) > maxPooledStack {
		tb.names = nil
	}
	if cap(tb.values) > maxPooledStack {
		tb.values = nil
	}
	if cap(tb.unquoted) > maxPooledUnquoted {
		tb.unquoted = nil
	}
	treeBuilders.Put(tb)
}

// object decodes the members of an object whose '{' has been read.
func (tb *treeBuilder) object() (map[string]any, error) {
	nameBase, valueBase := len(tb.names), len(tb.values)
	for tb.dec.PeekKind() != '}' {
		// On a syntax error PeekKind returns 0 and ReadValue the error.
		raw, err := tb.dec.ReadValue()
		if err != nil {
			return nil, err
		}
		tb.names = append(tb.names, tb.name(raw))
		v, err := tb.value()
		if err != nil {
			return nil, err
		}
		tb.values = append(tb.values, v)
	}
	if _, err := tb.dec.ReadToken(); err != nil {
		return nil, err
	}

	names, values := tb.names[nameBase:], tb.values[valueBase:]
	m := make(map[string]any, len(names))
	for i, name := range names {
		m[name] = values[i]
	}
	clear(names)
	clear(values)
	tb.names, tb.values = tb.names[:nameBase], tb.values[:valueBase]
	return m, nil
}

// array decodes the elements of an array whose '[' has been read. An empty
// array decodes to an empty slice, not nil, as in encoding/json.
func (tb *treeBuilder) array() ([]any, error) {
	base := len(tb.values)
	for tb.dec.PeekKind() != ']' {
		v, err := tb.value()
		if err != nil {
			return nil, err
		}
		tb.values = append(tb.values, v)
	}
	if _, err := tb.dec.ReadToken(); err != nil {
		return nil, err
	}

	elems := tb.values[base:]
	a := make([]any, len(elems))
	copy(a, elems)
	clear(elems)
	tb.values = tb.values[:base]
	return a, nil
}

func (tb *treeBuilder) value() (any, error) {
	switch tb.dec.PeekKind() {
	case '{':
		if _, err := tb.dec.ReadToken(); err != nil {
			return nil, err
		}
		return tb.object()
	case '[':
		if _, err := tb.dec.ReadToken(); err != nil {
			return nil, err
		}
		return tb.array()
	}
	raw, err := tb.dec.ReadValue()
	if err != nil {
		return nil, err
	}
	switch raw.Kind() {
	case '"':
		return tb.unquote(raw), nil
	case '0':
		return json.Number(raw), nil
	case 't':
		return true, nil
	case 'f':
		return false, nil
	case 'n':
		return nil, nil
	}
	// Unreachable because ReadValue returns only valid values and PeekKind
	// caught the objects and arrays.
	return nil, fmt.Errorf("unexpected JSON value %.20q", raw)
}

// name returns the object name in the quoted string raw, interned when it
// is short and needs no unescaping.
func (tb *treeBuilder) name(raw jsontext.Value) string {
	content := raw[1 : len(raw)-1]
	if !isVerbatim(content) {
		return tb.unescape(raw)
	}
	if len(content) > maxInternedNameLen {
		return string(content)
	}
	if s, ok := tb.interned[string(content)]; ok {
		return s
	}
	if tb.interned == nil {
		tb.interned = make(map[string]string)
	}
	// Clearing a full table keeps a body of made-up names from filling it
	// for good.
	if len(tb.interned) >= maxInternedNames {
		clear(tb.interned)
	}
	s := string(content)
	tb.interned[s] = s
	return s
}

// unquote returns the content of the quoted string raw, which the decoder
// has already accepted.
func (tb *treeBuilder) unquote(raw jsontext.Value) string {
	content := raw[1 : len(raw)-1]
	if isVerbatim(content) {
		return string(content)
	}
	return tb.unescape(raw)
}

// unescape returns the content of the quoted string raw, which the decoder
// has already accepted, with its escapes decoded and invalid UTF-8
// replaced.
func (tb *treeBuilder) unescape(raw jsontext.Value) string {
	// AppendUnquote reports the invalid UTF-8 and unpaired surrogate
	// escapes that it replaced with U+FFFD as an error. The decoder has
	// accepted them under AllowInvalidUTF8 and rejected every other error,
	// so the output is complete.
	tb.unquoted, _ = jsontext.AppendUnquote(tb.unquoted[:0], raw)
	return string(tb.unquoted)
}

// isVerbatim reports whether the content of a JSON string decodes to
// itself: it has no escapes and is valid UTF-8.
func isVerbatim(content []byte) bool {
	return bytes.IndexByte(content, '\\') < 0 && utf8.Valid(content)
}
