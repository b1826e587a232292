package branch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/branchmp/branchmp/internal/fixtures"
)

// decodeObjectEncodingJSON is the encoding/json decoder that decodeObject
// replaced and must match: a Decoder with UseNumber into map[string]any,
// then a check for data after the object.
func decodeObjectEncodingJSON(body []byte) (map[string]any, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrInvalidJSON)
	}
	if trimmed[0] != '{' {
		if json.Valid(trimmed) {
			return nil, ErrNotObject
		}
		return nil, ErrInvalidJSON
	}

	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var top map[string]any
	if err := dec.Decode(&top); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the object", ErrInvalidJSON)
	}
	return top, nil
}

// maxDepth is the deepest nesting of objects and arrays, counting the
// top-level object, that encoding/json accepts (maxNestingDepth in
// encoding/json/scanner.go, Go 1.26).
const maxDepth = 10000

// nestedArrays returns an object whose nesting, counting the object itself,
// is depth levels of objects and arrays.
func nestedArrays(depth int) string {
	return `{"a":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + "}"
}

// decodeObjectSeeds are inputs that exercise the corners of JSON decoding.
var decodeObjectSeeds = []string{
	"",
	" \t\r\n",
	"{}",
	" {} \r\n\t",
	"\xef\xbb\xbf{}",
	"{} {}",
	"{}x",
	"{}}",
	"{}\x00",
	"{} []",
	"[]",
	`"x"`,
	"null",
	"1",
	"[",
	`{"a":"\"\\\/\b\f\n\r\t"}`,
	`{"a":"\u0041\u00e9\u20ac\uFFFF"}`,
	`{"a":"\ud83d\ude00"}`,
	`{"a":"\ud800"}`,
	`{"a":"\udc00"}`,
	`{"a":"\ud800\u0041"}`,
	`{"a":"\ud800\ud83d\ude00"}`,
	`{"a":"\udc00\ud800\udc00"}`,
	`{"a":"\ud800x"}`,
	`{"a":"\ud800\\"}`,
	`{"a":"\u12"}`,
	`{"a":"\x"}`,
	"{\"a\":\"\xff\"}",
	"{\"a\":\"\xe2\x82\"}",
	"{\"a\":\"\xed\xa0\x80\"}",
	"{\"a\":\"\xc0\xaf\"}",
	"{\"a\xff\":\"\xf4\x90\x80\x80\"}",
	"{\"a\":\"h\xc3\xa9llo \xef\xbf\xbd\"}",
	"{\"a\":\"\x00\"}",
	"{\"a\":\"\x1f\"}",
	"{\"a\":\"\n\"}",
	"{\"a\":\"\x7f\"}",
	`{"a":-0,"b":1e400,"c":123456789012345678901234567890,"d":1.5E+10,"e":-1.0e-5}`,
	`{"a":01}`,
	`{"a":1.}`,
	`{"a":.5}`,
	`{"a":+1}`,
	`{"a":-}`,
	`{"a":1e}`,
	`{"a":0x10}`,
	`{"a":NaN}`,
	`{"a":true,"b":false,"c":null}`,
	`{"a":tru}`,
	`{"a":True}`,
	`{"a":1,"a":{"b":2}}`,
	`{"a":{"x":1},"a":{"y":2}}`,
	`{"a":[],"b":{},"c":[1,"x",null,[{}]]}`,
	`{"\u0061":1}`,
	`{"a" 1}`,
	`{"a":1 "b":2}`,
	`{"a":[1,]}`,
	`{,"a":1}`,
	`{a:1}`,
	`{'a':1}`,
	"{\"a\":\v1}",
	"{\"a\":\u00a01}",
	`{"a":1`,
	`{"a":"x`,
	`{"a":"x\`,
	`{"a":[`,
	nestedArrays(maxDepth),
	nestedArrays(maxDepth + 1),
	nested(maxDepth),
	nested(maxDepth + 1),
	`{"a":` + strings.Repeat("[", 20000),
}

func FuzzDecodeObjectMatchesEncodingJSON(f *testing.F) {
	for _, body := range fixtures.Bodies() {
		f.Add(body.Data)
	}
	for _, seed := range decodeObjectSeeds {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		want, wantErr := decodeObjectEncodingJSON(body)
		input := bytes.Clone(body)
		got, gotErr := decodeObject(input)
		if !bytes.Equal(input, body) {
			t.Fatalf("decodeObject(%q) changed its input to %q", body, input)
		}
		// The result must not share memory with the input.
		for i := range input {
			input[i] = 'x'
		}
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("decodeObject(%q): got error %v, want %v as encoding/json returns", body, gotErr, wantErr)
		}
		for _, sentinel := range []error{ErrInvalidJSON, ErrNotObject} {
			if errors.Is(gotErr, sentinel) != errors.Is(wantErr, sentinel) {
				t.Errorf("decodeObject(%q): got error %v, want %v as encoding/json returns", body, gotErr, wantErr)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decodeObject(%q):\ngot  %#v\nwant %#v as encoding/json returns", body, got, want)
		}
	})
}

func TestDecodeObjectEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    map[string]any
		wantErr error
	}{
		{name: "empty input", give: "", wantErr: ErrInvalidJSON},
		{name: "whitespace only", give: " \t\r\n", wantErr: ErrInvalidJSON},
		{name: "leading BOM", give: "\xef\xbb\xbf{}", wantErr: ErrInvalidJSON},
		{name: "empty object", give: "{}", want: map[string]any{}},
		{name: "surrounding whitespace", give: " {} \r\n\t", want: map[string]any{}},
		{name: "array top level", give: "[]", wantErr: ErrNotObject},
		{name: "string top level", give: `"x"`, wantErr: ErrNotObject},
		{name: "invalid non-object", give: "[", wantErr: ErrInvalidJSON},
		{name: "second object", give: "{} {}", wantErr: ErrInvalidJSON},
		{name: "trailing array", give: "{} []", wantErr: ErrInvalidJSON},
		{name: "trailing garbage", give: "{}x", wantErr: ErrInvalidJSON},
		{name: "trailing brace", give: "{}}", wantErr: ErrInvalidJSON},
		{name: "trailing NUL", give: "{}\x00", wantErr: ErrInvalidJSON},
		{
			name: "short escapes",
			give: `{"a":"\"\\\/\b\f\n\r\t"}`,
			want: map[string]any{"a": "\"\\/\b\f\n\r\t"},
		},
		{
			name: "unicode escapes",
			give: `{"a":"\u0041\u00e9\u20ac\uFFFF"}`,
			want: map[string]any{"a": "Aé€\uffff"},
		},
		{name: "escaped key", give: `{"\u0061":1}`, want: map[string]any{"a": json.Number("1")}},
		{name: "surrogate pair", give: `{"a":"\ud83d\ude00"}`, want: map[string]any{"a": "😀"}},
		{name: "lone high surrogate", give: `{"a":"\ud800"}`, want: map[string]any{"a": "\ufffd"}},
		{name: "lone low surrogate", give: `{"a":"\udc00"}`, want: map[string]any{"a": "\ufffd"}},
		{
			name: "high surrogate then letter escape",
			give: `{"a":"\ud800\u0041"}`,
			want: map[string]any{"a": "\ufffdA"},
		},
		{
			name: "high surrogate then pair",
			give: `{"a":"\ud800\ud83d\ude00"}`,
			want: map[string]any{"a": "\ufffd😀"},
		},
		{
			name: "low surrogate then pair",
			give: `{"a":"\udc00\ud800\udc00"}`,
			want: map[string]any{"a": "\ufffd\U00010000"},
		},
		{name: "high surrogate then text", give: `{"a":"\ud800x"}`, want: map[string]any{"a": "\ufffdx"}},
		{name: "short unicode escape", give: `{"a":"\u12"}`, wantErr: ErrInvalidJSON},
		{name: "unknown escape", give: `{"a":"\x"}`, wantErr: ErrInvalidJSON},
		{name: "invalid byte", give: "{\"a\":\"\xff\"}", want: map[string]any{"a": "\ufffd"}},
		{
			name: "truncated sequence",
			give: "{\"a\":\"\xe2\x82\"}",
			want: map[string]any{"a": "\ufffd\ufffd"},
		},
		{
			name: "encoded surrogate",
			give: "{\"a\":\"\xed\xa0\x80\"}",
			want: map[string]any{"a": "\ufffd\ufffd\ufffd"},
		},
		{name: "overlong encoding", give: "{\"a\":\"\xc0\xaf\"}", want: map[string]any{"a": "\ufffd\ufffd"}},
		{
			name: "invalid key and beyond U+10FFFF",
			give: "{\"a\xff\":\"\xf4\x90\x80\x80\"}",
			want: map[string]any{"a\ufffd": "\ufffd\ufffd\ufffd\ufffd"},
		},
		{
			name: "valid UTF-8 kept",
			give: "{\"a\":\"h\xc3\xa9llo \xef\xbf\xbd\"}",
			want: map[string]any{"a": "héllo \ufffd"},
		},
		{name: "NUL in string", give: "{\"a\":\"\x00\"}", wantErr: ErrInvalidJSON},
		{name: "unit separator in string", give: "{\"a\":\"\x1f\"}", wantErr: ErrInvalidJSON},
		{name: "newline in string", give: "{\"a\":\"\n\"}", wantErr: ErrInvalidJSON},
		{name: "DEL in string", give: "{\"a\":\"\x7f\"}", want: map[string]any{"a": "\x7f"}},
		{
			name: "numbers keep their text",
			give: `{"a":-0,"b":1e400,"c":123456789012345678901234567890,"d":1.5E+10,"e":-1.0e-5}`,
			want: map[string]any{
				"a": json.Number("-0"),
				"b": json.Number("1e400"),
				"c": json.Number("123456789012345678901234567890"),
				"d": json.Number("1.5E+10"),
				"e": json.Number("-1.0e-5"),
			},
		},
		{name: "leading zero", give: `{"a":01}`, wantErr: ErrInvalidJSON},
		{name: "no fraction digits", give: `{"a":1.}`, wantErr: ErrInvalidJSON},
		{name: "no integer digits", give: `{"a":.5}`, wantErr: ErrInvalidJSON},
		{name: "plus sign", give: `{"a":+1}`, wantErr: ErrInvalidJSON},
		{name: "minus alone", give: `{"a":-}`, wantErr: ErrInvalidJSON},
		{name: "no exponent digits", give: `{"a":1e}`, wantErr: ErrInvalidJSON},
		{name: "hexadecimal", give: `{"a":0x10}`, wantErr: ErrInvalidJSON},
		{name: "NaN", give: `{"a":NaN}`, wantErr: ErrInvalidJSON},
		{
			name: "literals",
			give: `{"a":true,"b":false,"c":null}`,
			want: map[string]any{"a": true, "b": false, "c": nil},
		},
		{name: "truncated literal", give: `{"a":tru}`, wantErr: ErrInvalidJSON},
		{name: "capitalized literal", give: `{"a":True}`, wantErr: ErrInvalidJSON},
		{
			name: "duplicate key last wins",
			give: `{"a":1,"a":{"b":2}}`,
			want: map[string]any{"a": map[string]any{"b": json.Number("2")}},
		},
		{
			name: "duplicate objects not merged",
			give: `{"a":{"x":1},"a":{"y":2}}`,
			want: map[string]any{"a": map[string]any{"y": json.Number("2")}},
		},
		{
			name: "empty containers",
			give: `{"a":[],"b":{},"c":[1,"x",null,[{}]]}`,
			want: map[string]any{
				"a": []any{},
				"b": map[string]any{},
				"c": []any{json.Number("1"), "x", nil, []any{map[string]any{}}},
			},
		},
		{name: "missing colon", give: `{"a" 1}`, wantErr: ErrInvalidJSON},
		{name: "missing comma", give: `{"a":1 "b":2}`, wantErr: ErrInvalidJSON},
		{name: "trailing comma in array", give: `{"a":[1,]}`, wantErr: ErrInvalidJSON},
		{name: "leading comma", give: `{,"a":1}`, wantErr: ErrInvalidJSON},
		{name: "unquoted key", give: `{a:1}`, wantErr: ErrInvalidJSON},
		{name: "single quotes", give: `{'a':1}`, wantErr: ErrInvalidJSON},
		{name: "vertical tab", give: "{\"a\":\v1}", wantErr: ErrInvalidJSON},
		{name: "no-break space", give: "{\"a\":\u00a01}", wantErr: ErrInvalidJSON},
		{name: "unclosed object", give: `{"a":1`, wantErr: ErrInvalidJSON},
		{name: "unclosed string", give: `{"a":"x`, wantErr: ErrInvalidJSON},
		{name: "unclosed escape", give: `{"a":"x\`, wantErr: ErrInvalidJSON},
		{name: "unclosed array", give: `{"a":[`, wantErr: ErrInvalidJSON},
		{name: "max depth of arrays", give: nestedArrays(maxDepth), want: nil},
		{name: "max depth of objects", give: nested(maxDepth), want: nil},
		{name: "too deep arrays", give: nestedArrays(maxDepth + 1), wantErr: ErrInvalidJSON},
		{name: "too deep objects", give: nested(maxDepth + 1), wantErr: ErrInvalidJSON},
		{name: "20000 unclosed arrays", give: `{"a":` + strings.Repeat("[", 20000), wantErr: ErrInvalidJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeObject([]byte(tt.give))
			_, stdErr := decodeObjectEncodingJSON([]byte(tt.give))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("decodeObject error: got %v, want %v", err, tt.wantErr)
				}
				if !errors.Is(stdErr, tt.wantErr) {
					t.Errorf("encoding/json error: got %v, want %v", stdErr, tt.wantErr)
				}
				if got != nil {
					t.Errorf("decodeObject: got %#v with an error, want nil", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeObject: got error %v, want nil", err)
			}
			if stdErr != nil {
				t.Errorf("encoding/json: got error %v, want nil", stdErr)
			}
			// A nil want skips the comparison for inputs too large to spell out.
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decodeObject:\ngot  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestDecodeObjectAfterError(t *testing.T) {
	// Each invalid body fails with containers still open, and the pooled
	// decoder must not carry their members into the next body.
	invalid := []string{
		`{"a":{"b":[1,2,{"c":"d"`,
		`{"a":[{"b":1},{"c":2},x]}`,
		`{"a":{"b":1,"c":2,}}`,
		nestedArrays(maxDepth + 1),
	}
	valid := fixtures.Bodies()[0].Data
	want, err := decodeObjectEncodingJSON(valid)
	if err != nil {
		t.Fatalf("encoding/json: got error %v, want nil", err)
	}
	for _, body := range invalid {
		if _, err := decodeObject([]byte(body)); !errors.Is(err, ErrInvalidJSON) {
			t.Errorf("decodeObject(%.40q): got error %v, want %v", body, err, ErrInvalidJSON)
		}
		got, err := decodeObject(valid)
		if err != nil {
			t.Fatalf("decodeObject after %.40q: got error %v, want nil", body, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decodeObject after %.40q:\ngot  %#v\nwant %#v", body, got, want)
		}
	}
}

func TestDecodeObjectManyNames(t *testing.T) {
	// More distinct names than the intern table holds, decoded twice so the
	// second pass reads names from a table that was cleared when full.
	var b strings.Builder
	b.WriteString("{")
	for i := range 3 * maxInternedNames {
		fmt.Fprintf(&b, `"name%d":{"name%d":%d},`, i, i%7, i)
	}
	b.WriteString(`"long` + strings.Repeat("x", maxInternedNameLen) + `":1}`)
	body := []byte(b.String())
	want, err := decodeObjectEncodingJSON(body)
	if err != nil {
		t.Fatalf("encoding/json: got error %v, want nil", err)
	}
	for pass := range 2 {
		got, err := decodeObject(body)
		if err != nil {
			t.Fatalf("pass %d: decodeObject: got error %v, want nil", pass, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("pass %d: decodeObject result differs from encoding/json", pass)
		}
	}
}

func TestDecodeObjectConcurrent(t *testing.T) {
	bodies := fixtures.Bodies()
	wants := make([]map[string]any, len(bodies))
	for i, body := range bodies {
		want, err := decodeObjectEncodingJSON(body.Data)
		if err != nil {
			t.Fatalf("%s: encoding/json: got error %v, want nil", body.Name, err)
		}
		wants[i] = want
	}

	var wg sync.WaitGroup
	for worker := range 4 {
		wg.Go(func() {
			for round := range 50 {
				i := (worker + round) % len(bodies)
				got, err := decodeObject(bodies[i].Data)
				if err != nil {
					t.Errorf("%s: decodeObject: got error %v, want nil", bodies[i].Name, err)
					return
				}
				if !reflect.DeepEqual(got, wants[i]) {
					t.Errorf("%s: decodeObject result differs from encoding/json", bodies[i].Name)
					return
				}
			}
		})
	}
	wg.Wait()
}

// checkMatchesEncodingJSON fails t when decodeObject and encoding/json
// disagree on body.
func checkMatchesEncodingJSON(t *testing.T, body []byte) {
	t.Helper()
	want, wantErr := decodeObjectEncodingJSON(body)
	got, gotErr := decodeObject(body)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("decodeObject(%q): got error %v, want %v as encoding/json returns", body, gotErr, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeObject(%q):\ngot  %#v\nwant %#v as encoding/json returns", body, got, want)
	}
}

func TestDecodeObjectStringBytes(t *testing.T) {
	// Every pair of bytes in a string value covers control characters,
	// escapes and each kind of invalid or truncated UTF-8 sequence.
	for a := range 256 {
		for b := range 256 {
			checkMatchesEncodingJSON(t, []byte{'{', '"', 'k', '"', ':', '"', byte(a), byte(b), '"', '}'})
		}
	}
}

func TestDecodeObjectUnicodeEscapes(t *testing.T) {
	// Pairs of \u escapes around the surrogate ranges, with text between
	// them that breaks a surrogate pair.
	units := []int{
		0x0000, 0x0041, 0x007f, 0x0080, 0xd7ff, 0xd800, 0xdbff,
		0xdc00, 0xdfff, 0xe000, 0xfffd, 0xfffe, 0xffff,
	}
	for _, u := range units {
		for _, v := range units {
			for _, between := range []string{"", "x", `\\`, `\n`, `\u`} {
				checkMatchesEncodingJSON(t, fmt.Appendf(nil, `{"k":"\u%04x%s\u%04x"}`, u, between, v))
				checkMatchesEncodingJSON(t, fmt.Appendf(nil, `{"\u%04X%s\u%04X":0}`, u, between, v))
			}
		}
	}
}

func TestDecodeErrorOmitsObjectNames(t *testing.T) {
	body := []byte(`{"user_data":{"jane.doe@example.com":"x",}}`)
	_, err := Decode(body)
	if !errors.Is(err, ErrInvalidJSON) {
		t.Fatalf("Decode: got error %v, want ErrInvalidJSON", err)
	}
	if msg := err.Error(); strings.Contains(msg, "jane.doe") || strings.Contains(msg, "user_data") {
		t.Errorf("Decode error quotes an object name: %s", msg)
	}
}
