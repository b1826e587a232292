package mapping

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/fixtures"
)

// appendEvent encodes e with AppendJSON's encoders, as json.Marshal would.
// The tests compare the two to check AppendJSON on whole events.
func appendEvent(dst []byte, e Event) []byte {
	dst = append(dst, `{"event":`...)
	dst = appendString(dst, e.Name)
	dst = append(dst, `,"properties":`...)
	if e.Properties == nil {
		return append(dst, "null}"...)
	}
	dst = appendObject(dst, e.Properties)
	return append(dst, '}')
}

func TestAppendEventMatchesMarshal(t *testing.T) {
	events := []Event{
		{Name: "", Properties: map[string]any{}},
		{Name: "x", Properties: map[string]any{"a": nil, "b": true, "c": false, "d": int64(-12), "e": 7}},
		{Name: "<&>\"\\\n\t\x01", Properties: map[string]any{"é\u2028": "\xff\xfe ok", "list": []any{"a", json.Number("1.5"), []any{}, map[string]any{"k": "v"}}}},
		{Name: "f", Properties: map[string]any{"float": 1.25, "t": time.Unix(0, 0).UTC()}},
		{Name: "nil maps", Properties: nil},
		{Name: "empty", Properties: map[string]any{"n": json.Number(""), "l": []any(nil), "m": map[string]any(nil)}},
	}
	for _, f := range fixtures.Bodies() {
		ev, err := branch.Decode(f.Data)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, Map(ev, identity.Identity{UserID: ev.User.DeveloperIdentity}, Options{}).Event)
	}
	for i, e := range events {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEvent(nil, e); string(got) != string(data) {
			t.Errorf("event %d: appendEvent\n%s\nwant\n%s", i, got, data)
		}
	}
}

func TestAppendEventUnencodableValue(t *testing.T) {
	got := appendEvent(nil, Event{Name: "x", Properties: map[string]any{"c": make(chan int), "d": 1}})
	if want := `{"event":"x","properties":{"c":null,"d":1}}`; string(got) != want {
		t.Errorf("appendEvent: got %s, want %s", got, want)
	}
}

func FuzzAppendEvent(f *testing.F) {
	for _, b := range fixtures.Bodies() {
		f.Add(b.Data)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := branch.Decode(body)
		if err != nil {
			return
		}
		e := Map(ev, identity.Identity{UserID: ev.User.DeveloperIdentity}, Options{}).Event
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEvent(nil, e); string(got) != string(data) {
			t.Errorf("appendEvent\n%s\nwant\n%s", got, data)
		}
	})
}

func TestExactInt(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"0", true},
		{"-0", true},
		{"9007199254740992", true},
		{"-9007199254740992", true},
		{"9007199254740993", false},
		{"0009007199254740992", true},
		{"10000000000000000", false},
		{"999999999999999", true},
		{"1234567890123456789", false},
		{"-1234567890123456789", false},
	}
	for _, tt := range tests {
		if got := exactInt(tt.give); got != tt.want {
			t.Errorf("exactInt(%q): got %v, want %v", tt.give, got, tt.want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, seed := range []string{"", "plain", "<&>\"\\\n\r\t\b\f\x00\x1f\x7f", "\xff\xfe\xc3", "é\u2028\u2029😀", "\xed\xa0\x80"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("appendString(%q): got %s, want %s", s, got, want)
		}
	})
}

func TestEncodeOnlyDropsLikeFullMap(t *testing.T) {
	custom := map[string]any{}
	for i := range 300 {
		custom[fmt.Sprintf("k%03d", i)] = fmt.Sprint(i)
	}
	custom["time"] = "reserved" // renamed to branch_time
	ev := &branch.Event{Name: "OPEN", ID: "7", Timestamp: 1717430400000, CustomData: custom}
	checkEncodeOnly(t, ev, identity.Identity{UserID: "u1"}, Options{ReceivedAt: time.Unix(1717430400, 0)})
	if got := Map(ev, identity.Identity{}, Options{EncodeOnly: true}).DroppedProperties; got == 0 {
		t.Errorf("DroppedProperties: got 0, want some of the 301 custom keys dropped")
	}
}

func TestFlattenCollisionIsDeterministic(t *testing.T) {
	item := map[string]any{"a.b": "literal", "a": map[string]any{"b": "nested"}}
	ev := &branch.Event{Name: "PURCHASE", ID: "9", Timestamp: 1717430400000, ContentItems: []map[string]any{item}}
	first := Map(ev, identity.Identity{}, Options{EncodeOnly: true}).JSON
	for range 50 {
		if got := Map(ev, identity.Identity{}, Options{EncodeOnly: true}).JSON; !bytes.Equal(got, first) {
			t.Fatalf("Map differs between runs:\n%s\n%s", first, got)
		}
	}
	if !bytes.Contains(first, []byte(`"a.b":"nested"`)) {
		t.Errorf("content item: got %s, want the value first in key order (\"a\" < \"a.b\")", first)
	}
}
