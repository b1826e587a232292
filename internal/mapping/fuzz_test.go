package mapping

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/fixtures"
)

func FuzzMap(f *testing.F) {
	for _, body := range fixtures.Bodies() {
		f.Add(body.Data)
	}
	for _, seed := range []string{
		`{"name":"X","custom_data":{"a":1e400,"b":99999999999999999999,"c":[{"d":null}]}}`,
		`{"event":"install","identity":"null","hardware_id":"0000","metadata":{"time":1}}`,
		`{"name":"X","id":"a_b","user_data":{"developer_identity":"u","aaid":"-1"}}`,
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := branch.Decode(body)
		if err != nil {
			return
		}
		known := Map(ev, developerIdentity(t, ev), Options{ReceivedAt: receivedAt})
		checkRecord(t, known)
		anonymous := Map(ev, identity.Identity{}, Options{ReceivedAt: receivedAt})
		checkRecord(t, anonymous)
		checkEncodeOnly(t, ev, developerIdentity(t, ev), Options{ReceivedAt: receivedAt})
		checkEncodeOnly(t, ev, identity.Identity{}, Options{ReceivedAt: receivedAt})

		if _, ok := anonymous.Event.Properties["$user_id"]; ok {
			t.Errorf("anonymous $user_id: got %v, want absent", anonymous.Event.Properties["$user_id"])
		}
		if anonymous.SetOnce != nil || anonymous.Set != nil {
			t.Errorf("anonymous profile: got %v and %v, want nil", anonymous.SetOnce, anonymous.Set)
		}
		again := Map(ev, developerIdentity(t, ev), Options{ReceivedAt: receivedAt})
		if a, b := marshalRecord(t, known), marshalRecord(t, again); a != b {
			t.Errorf("Map differs between runs:\n%s\n%s", a, b)
		}
	})
}

// checkRecord checks what every mapped record must satisfy.
func checkRecord(t *testing.T, rec Record) {
	t.Helper()
	props := rec.Event.Properties
	if len(props) > MaxProperties {
		t.Errorf("len(properties): got %d, want at most %d", len(props), MaxProperties)
	}
	if rec.Event.Name == "" {
		t.Errorf("Event.Name: got empty, want non-empty")
	}

	id, _ := props["$insert_id"].(string)
	if !insertIDPattern.MatchString(id) {
		t.Errorf("$insert_id: got %#v, want at most 36 of [A-Za-z0-9-]", props["$insert_id"])
	}
	if millis, ok := props["time"].(int64); !ok || millis <= 0 {
		t.Errorf("time: got %#v, want positive int64 milliseconds", props["time"])
	}
	if got, ok := props["distinct_id"]; !ok || got != rec.DistinctID {
		t.Errorf("distinct_id: got %#v (present %v), want %q", got, ok, rec.DistinctID)
	}
	checkDistinctID(t, rec)
	checkJSON(t, rec)

	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatalf("json.Marshal(record): got error %v, want nil", err)
	}
	checkNumbers(t, data)
}

func checkDistinctID(t *testing.T, rec Record) {
	t.Helper()
	props := rec.Event.Properties
	userID, hasUser := props["$user_id"].(string)
	switch {
	case hasUser:
		if rec.DistinctID != userID {
			t.Errorf("DistinctID: got %q, want the $user_id %q", rec.DistinctID, userID)
		}
	case rec.DistinctID != "":
		device, _ := props["$device_id"].(string)
		if rec.DistinctID != "$device:"+device {
			t.Errorf("DistinctID: got %q, want $device: plus $device_id %q", rec.DistinctID, device)
		}
		if rec.SetOnce != nil || rec.Set != nil {
			t.Errorf("anonymous profile: got %v and %v, want nil", rec.SetOnce, rec.Set)
		}
	}
	for _, key := range []string{"$user_id", "$device_id"} {
		if v, ok := props[key].(string); ok && IsPlaceholder(v) {
			t.Errorf("%s: got placeholder %q, want absent", key, v)
		}
	}
}

// checkNumbers checks that every number in the JSON data has a float64
// value, and that every integer keeps its digits in a float64.
func checkNumbers(t *testing.T, data []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		n, ok := tok.(json.Number)
		if !ok {
			continue
		}
		checkNumber(t, n)
	}
}

func checkNumber(t *testing.T, n json.Number) {
	t.Helper()
	s := n.String()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		t.Errorf("number %s: got no float64 value, want a string instead", s)
		return
	}
	if strings.ContainsAny(s, ".eE") {
		return
	}
	i, ok := new(big.Int).SetString(s, 10)
	if !ok || i.CmpAbs(big.NewInt(1<<53)) > 0 {
		t.Errorf("integer %s: got a number beyond 2^53, want a string", s)
	}
}

// checkJSON checks that rec.JSON is rec.Event's encoding up to key order:
// the same keys, once each, and the same values.
func checkJSON(t *testing.T, rec Record) {
	t.Helper()
	if !json.Valid(rec.JSON) {
		t.Fatalf("Record.JSON is not valid JSON: %s", rec.JSON)
	}
	want, err := json.Marshal(rec.Event)
	if err != nil {
		t.Fatalf("json.Marshal(event): got error %v, want nil", err)
	}
	if got, want := decodeJSON(t, rec.JSON), decodeJSON(t, want); !reflect.DeepEqual(got, want) {
		t.Errorf("Record.JSON decodes differently from the event:\n got %s\nwant %s", rec.JSON, want)
	}
	// Counting the keys finds a property written twice, which decoding
	// into a map would hide.
	if got, want := bytes.Count(rec.JSON, []byte(`":`)), bytes.Count(want, []byte(`":`)); got != want {
		t.Errorf("Record.JSON has %d keys, want %d", got, want)
	}
}

// checkEncodeOnly maps ev with and without Options.EncodeOnly and checks
// that only the property map differs.
func checkEncodeOnly(t *testing.T, ev *branch.Event, who identity.Identity, opts Options) {
	t.Helper()
	full := Map(ev, who, opts)
	opts.EncodeOnly = true
	only := Map(ev, who, opts)
	if only.Event.Properties != nil {
		t.Errorf("EncodeOnly: Properties %v, want nil", only.Event.Properties)
	}
	if !bytes.Equal(only.JSON, full.JSON) {
		t.Errorf("EncodeOnly JSON:\n got %s\nwant %s", only.JSON, full.JSON)
	}
	if only.DroppedProperties != full.DroppedProperties {
		t.Errorf("EncodeOnly DroppedProperties: got %d, want %d", only.DroppedProperties, full.DroppedProperties)
	}
}

func decodeJSON(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	return v
}
