package mapping

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/fixtures"
)

// insertIDPattern is the $insert_id format that Mixpanel accepts.
var insertIDPattern = regexp.MustCompile(`^[A-Za-z0-9-]{1,36}$`)

// hashIDPattern is the format of an $insert_id derived from a hash.
var hashIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func decode(t testing.TB, body string) *branch.Event {
	t.Helper()
	ev, err := branch.Decode([]byte(body))
	if err != nil {
		t.Fatalf("Decode(%s): got error %v, want nil", body, err)
	}
	return ev
}

func decodeQuery(t testing.TB, query string) *branch.Event {
	t.Helper()
	values, err := url.ParseQuery(query)
	if err != nil {
		t.Fatalf("url.ParseQuery(%s): got error %v, want nil", query, err)
	}
	ev, err := branch.DecodeQuery(values, nil)
	if err != nil {
		t.Fatalf("DecodeQuery(%s): got error %v, want nil", query, err)
	}
	return ev
}

func mapBody(t *testing.T, body string, who identity.Identity) Record {
	t.Helper()
	return Map(decode(t, body), who, Options{ReceivedAt: receivedAt})
}

func TestIsPlaceholder(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{give: "", want: true},
		{give: "   ", want: true},
		{give: "null", want: true},
		{give: "NULL", want: true},
		{give: "Null", want: true},
		{give: " null ", want: true},
		{give: "undefined", want: true},
		{give: "UNDEFINED", want: true},
		{give: "nil", want: true},
		{give: "<nil>", want: true},
		{give: "none", want: true},
		{give: "n/a", want: true},
		{give: "unknown", want: true},
		{give: "anonymous", want: true},
		{give: "true", want: true},
		{give: "false", want: true},
		{give: "[]", want: true},
		{give: "{}", want: true},
		{give: "0", want: true},
		{give: "-1", want: true},
		{give: "00000000", want: true},
		{give: "00000000-0000-0000-0000-000000000000", want: true},
		{give: "0000-0000", want: true},
		{give: "-", want: true},
		{give: "$device:", want: true},
		{give: "$DEVICE:", want: true},
		{give: "user-42", want: false},
		{give: "42", want: false},
		{give: "10", want: false},
		{give: "-2", want: false},
		{give: "00000001", want: false},
		{give: "5B1C0A9E-1111-4222-8333-944455556666", want: false},
		{give: "38400000-8cf0-11bd-b23e-10b96e40000d", want: false},
		{give: "a1b2c3d4e5f60718", want: false},
		{give: "$device:a1b2c3d4e5f60718", want: false},
		{give: "nullable", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := IsPlaceholder(tt.give); got != tt.want {
				t.Errorf("IsPlaceholder(%q): got %v, want %v", tt.give, got, tt.want)
			}
		})
	}
}

func TestIdentifiers(t *testing.T) {
	ev := &branch.Event{
		Name: "OPEN",
		User: branch.User{
			DeveloperIdentity: " user-42 ",
			IDFV:              "00000000-0000-0000-0000-000000000000",
			IDFA:              "NULL",
			AAID:              "38400000-8cf0-11bd-b23e-10b96e40000d",
			AndroidID:         "undefined",
			BrowserID:         "-1",
			BranchID:          "b1",
			BranchDeviceID:    "0",
			OS:                "ANDROID",
		},
	}
	want := identity.Identifiers{
		DeveloperIdentity: "user-42",
		AAID:              "38400000-8cf0-11bd-b23e-10b96e40000d",
		BranchID:          "b1",
		OS:                "ANDROID",
	}
	if diff := cmp.Diff(want, Identifiers(ev)); diff != "" {
		t.Errorf("Identifiers mismatch (-want +got):\n%s", diff)
	}
}

func TestDeviceID(t *testing.T) {
	all := identity.Identifiers{
		IDFV: "idfv", IDFA: "idfa", AAID: "aaid", AndroidID: "android", BrowserID: "browser",
	}
	tests := []struct {
		name string
		give identity.Identifiers
		want string
	}{
		{name: "all", give: all, want: "idfv"},
		{name: "no IDFV", give: identity.Identifiers{IDFA: "idfa", AAID: "aaid", AndroidID: "android", BrowserID: "browser"}, want: "idfa"},
		{name: "AAID first", give: identity.Identifiers{AAID: "aaid", AndroidID: "android", BrowserID: "browser"}, want: "aaid"},
		{name: "Android id", give: identity.Identifiers{AndroidID: "android", BrowserID: "browser"}, want: "android"},
		{name: "browser id", give: identity.Identifiers{BrowserID: "browser"}, want: "browser"},
		{name: "Branch ids only", give: identity.Identifiers{BranchID: "b", BranchDeviceID: "d"}, want: ""},
		{name: "none", give: identity.Identifiers{}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DeviceID(tt.give); got != tt.want {
				t.Errorf("DeviceID: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMapDeviceIDPlaceholders(t *testing.T) {
	rec := mapBody(t, `{"name":"OPEN","user_data":{
		"idfv":"00000000-0000-0000-0000-000000000000","idfa":"null",
		"aaid":"0000-0000","android_id":"a1","browser_fingerprint_id":"b1"}}`,
		identity.Identity{})
	if got := rec.Event.Properties["$device_id"]; got != "a1" {
		t.Errorf("$device_id: got %v, want a1", got)
	}
	if rec.DistinctID != "$device:a1" {
		t.Errorf("DistinctID: got %q, want %q", rec.DistinctID, "$device:a1")
	}
}

func TestMapDistinctID(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		who          identity.Identity
		wantDistinct string
		wantUserID   any
		wantDeviceID any
	}{
		{
			name:         "known user with device",
			body:         `{"name":"OPEN","user_data":{"idfv":"V1"}}`,
			who:          identity.Identity{UserID: "u1"},
			wantDistinct: "u1",
			wantUserID:   "u1",
			wantDeviceID: "V1",
		},
		{
			name:         "known user without device",
			body:         `{"name":"OPEN"}`,
			who:          identity.Identity{UserID: "u1"},
			wantDistinct: "u1",
			wantUserID:   "u1",
		},
		{
			name:         "user id trimmed",
			body:         `{"name":"OPEN"}`,
			who:          identity.Identity{UserID: " u1 "},
			wantDistinct: "u1",
			wantUserID:   "u1",
		},
		{
			name:         "anonymous device",
			body:         `{"name":"OPEN","user_data":{"aaid":"G1"}}`,
			wantDistinct: "$device:G1",
			wantDeviceID: "G1",
		},
		{
			name:         "placeholder user id",
			body:         `{"name":"OPEN","user_data":{"aaid":"G1"}}`,
			who:          identity.Identity{UserID: "undefined"},
			wantDistinct: "$device:G1",
			wantDeviceID: "G1",
		},
		{
			name:         "neither user nor device",
			body:         `{"name":"OPEN","user_data":{"randomized_bundle_token":"b1"}}`,
			wantDistinct: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := mapBody(t, tt.body, tt.who)
			props := rec.Event.Properties
			if rec.DistinctID != tt.wantDistinct {
				t.Errorf("DistinctID: got %q, want %q", rec.DistinctID, tt.wantDistinct)
			}
			if got, ok := props["distinct_id"]; !ok || got != tt.wantDistinct {
				t.Errorf("distinct_id: got %v (present %v), want %q", got, ok, tt.wantDistinct)
			}
			if got := props["$user_id"]; got != tt.wantUserID {
				t.Errorf("$user_id: got %v, want %v", got, tt.wantUserID)
			}
			if got := props["$device_id"]; got != tt.wantDeviceID {
				t.Errorf("$device_id: got %v, want %v", got, tt.wantDeviceID)
			}
		})
	}
}

func TestMapTime(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		opts        Options
		wantTime    int64
		wantMissing bool
	}{
		{
			name:     "milliseconds",
			body:     `{"name":"OPEN","timestamp":1717430400123}`,
			opts:     Options{ReceivedAt: receivedAt},
			wantTime: 1717430400123,
		},
		{
			name:     "legacy ISO string",
			body:     `{"event":"open","event_timestamp":"2018-06-27T17:06:05.665Z"}`,
			opts:     Options{ReceivedAt: receivedAt},
			wantTime: 1530119165665,
		},
		{
			name:        "missing",
			body:        `{"name":"OPEN"}`,
			opts:        Options{ReceivedAt: receivedAt},
			wantTime:    receivedAt.UnixMilli(),
			wantMissing: true,
		},
		{
			name:        "invalid",
			body:        `{"name":"OPEN","timestamp":"NaN"}`,
			opts:        Options{ReceivedAt: receivedAt},
			wantTime:    receivedAt.UnixMilli(),
			wantMissing: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := Map(decode(t, tt.body), identity.Identity{}, tt.opts)
			props := rec.Event.Properties
			if got := props["time"]; got != tt.wantTime {
				t.Errorf("time: got %v (%T), want %d", got, got, tt.wantTime)
			}
			if rec.TimeMissing != tt.wantMissing {
				t.Errorf("TimeMissing: got %v, want %v", rec.TimeMissing, tt.wantMissing)
			}
			if _, ok := props["branch_time_missing"]; ok != tt.wantMissing {
				t.Errorf("branch_time_missing present: got %v, want %v", ok, tt.wantMissing)
			}
		})
	}
}

func TestMapTimeZeroReceivedAt(t *testing.T) {
	rec := Map(decode(t, `{"name":"OPEN"}`), identity.Identity{}, Options{})
	got, ok := rec.Event.Properties["time"].(int64)
	if !ok || got <= receivedAt.UnixMilli() {
		t.Errorf("time: got %v, want the current time in milliseconds", rec.Event.Properties["time"])
	}
}

func TestMapUTM(t *testing.T) {
	tests := []struct {
		name string
		give string
		want map[string]any
	}{
		{
			name: "strings",
			give: `{"~campaign":"c","~channel":"s","~feature":"m"}`,
			want: map[string]any{"utm_campaign": "c", "utm_source": "s", "utm_medium": "m"},
		},
		{
			name: "number",
			give: `{"~campaign":2024}`,
			want: map[string]any{"utm_campaign": "2024"},
		},
		{
			name: "null, empty and non-scalar",
			give: `{"~campaign":null,"~channel":"","~feature":["x"]}`,
			want: map[string]any{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := mapBody(t, `{"name":"OPEN","last_attributed_touch_data":`+tt.give+`}`,
				identity.Identity{})
			got := map[string]any{}
			for k, v := range rec.Event.Properties {
				if strings.HasPrefix(k, "utm_") {
					got[k] = v
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("utm properties mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMapReservedKeys(t *testing.T) {
	rec := mapBody(t, `{"name":"OPEN","id":"e1","timestamp":1717430400123,
		"user_data":{"developer_identity":"u1","os":"IOS"},
		"custom_data":{"time":1,"$time":2,"distinct_id":"evil","$insert_id":"x","token":"t",
			"$user_id":"u2","$device_id":"d2","ip":"192.0.2.9","$ignore":true,
			"mp_lib":"web","branch_event":"evil","$os":"evil","plain":"kept"}}`,
		identity.Identity{UserID: "u1"})
	want := map[string]any{
		"time":               int64(1717430400123),
		"distinct_id":        "u1",
		"$insert_id":         "br-e1",
		"$user_id":           "u1",
		"branch_event":       "OPEN",
		"$os":                "iOS",
		"branch_distinct_id": "evil",
		"branch_time":        json.Number("2"),
		"branch_user_id":     "u2",
		"branch_device_id":   "d2",
		"branch_insert_id":   "x",
		"branch_token":       "t",
		"branch_ip":          "192.0.2.9",
		"branch_ignore":      true,
		"branch_mp_lib":      "web",
		"plain":              "kept",
	}
	props := rec.Event.Properties
	for k, v := range want {
		if got := props[k]; !cmp.Equal(got, v) {
			t.Errorf("%s: got %#v, want %#v", k, got, v)
		}
	}
	for _, k := range []string{"$ignore", "token", "mp_lib", "ip", "$time"} {
		if got, ok := props[k]; ok {
			t.Errorf("%s: got %#v, want absent", k, got)
		}
	}
}

func TestMapSanitize(t *testing.T) {
	hundredDigits := strings.Repeat("1234567890", 10)
	rec := mapBody(t, `{"name":"OPEN","custom_data":{
		"null":null,
		"list":[1,null,"a",{"o":{"p":1,"q":null}},[null,2]],
		"object":{"a":{"b":"c"},"n":null},
		"deep":{"l1":{"l2":{"l3":{"l4":{"l5":1}}}}},
		"deeplist":[[[[["x"]]]]],
		"exact":9007199254740992,
		"over":9007199254740993,
		"negover":-9007199254740993,
		"digits":`+hundredDigits+`,
		"float":1.5,
		"exp":1e300,
		"huge":1e400,
		"tiny":1e-400,
		"empty":{}
	}}`, identity.Identity{})

	want := map[string]any{
		"list": []any{
			json.Number("1"), "a", map[string]any{"o.p": json.Number("1")},
			[]any{json.Number("2")},
		},
		"object.a.b":       "c",
		"deep.l1.l2.l3.l4": `{"l5":1}`,
		"deeplist":         []any{[]any{[]any{[]any{`["x"]`}}}},
		"exact":            json.Number("9007199254740992"),
		"over":             "9007199254740993",
		"negover":          "-9007199254740993",
		"digits":           hundredDigits,
		"float":            json.Number("1.5"),
		"exp":              json.Number("1e300"),
		"huge":             "1e400",
		"tiny":             json.Number("1e-400"),
	}
	props := rec.Event.Properties
	for k, v := range want {
		if diff := cmp.Diff(v, props[k]); diff != "" {
			t.Errorf("%s mismatch (-want +got):\n%s", k, diff)
		}
	}
	for _, k := range []string{"null", "object.n", "object", "empty", "deep"} {
		if got, ok := props[k]; ok {
			t.Errorf("%s: got %#v, want absent", k, got)
		}
	}
}

func TestMapHostile(t *testing.T) {
	tests := []struct {
		name string
		give string
	}{
		{name: "5000 levels deep", give: `{"name":"X","custom_data":` + nested(5000) + `}`},
		{name: "deep list", give: `{"name":"X","content_items":[` +
			`{"a":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}]}`},
		{name: "50000 keys", give: manyKeys("custom_data", 50000)},
		{name: "50000 top-level keys", give: manyKeys("", 50000)},
		{name: "invalid UTF-8", give: "{\"name\":\"\xff\",\"custom_data\":{\"\xfe\":\"\xc3\x28\"}}"},
		{name: "huge numbers", give: `{"name":"X","id":1e400,"custom_data":{"a":1e400,"b":-1e400,` +
			`"c":` + strings.Repeat("9", 100) + `}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := decode(t, tt.give)
			rec := Map(ev, identity.Identity{UserID: "u1"}, Options{ReceivedAt: receivedAt})
			checkRecord(t, rec)
		})
	}
}

// nested returns depth objects nested under the key "a".
func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
}

// manyKeys returns an ontology body with n > 0 keys in the named object, or
// at the top level when object is "".
func manyKeys(object string, n int) string {
	if object == "" {
		return `{"name":"X",` + keysObject(n)[1:]
	}
	return `{"name":"X",` + strconv.Quote(object) + ":" + keysObject(n) + "}"
}

// keysObject returns a JSON object with the keys k00000, k00001 and so on.
func keysObject(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%05d":%d`, i, i)
	}
	b.WriteByte('}')
	return b.String()
}

func TestMapPropertyCap(t *testing.T) {
	rec := mapBody(t, manyKeys("custom_data", 300), identity.Identity{UserID: "u1"})
	props := rec.Event.Properties

	if len(props) != MaxProperties {
		t.Errorf("len(properties): got %d, want %d", len(props), MaxProperties)
	}
	// The six properties below come from the bridge and are set first, so
	// 249 of the 300 custom properties fit.
	if rec.DroppedProperties != 51 {
		t.Errorf("DroppedProperties: got %d, want 51", rec.DroppedProperties)
	}
	bridge := []string{
		"time", "distinct_id", "$insert_id", "$user_id", "branch_time_missing", "branch_event",
	}
	for _, k := range bridge {
		if _, ok := props[k]; !ok {
			t.Errorf("%s: got absent, want present", k)
		}
	}
	// Custom keys are added in sorted order, so the last ones are dropped.
	if _, ok := props["k00248"]; !ok {
		t.Errorf("k00248: got absent, want present")
	}
	if got, ok := props["k00249"]; ok {
		t.Errorf("k00249: got %v, want absent", got)
	}
}

func TestMapPropertyCapFlattened(t *testing.T) {
	rec := mapBody(t, `{"name":"X","custom_data":{"o":`+keysObject(300)+`}}`, identity.Identity{})
	props := rec.Event.Properties
	if len(props) != MaxProperties {
		t.Errorf("len(properties): got %d, want %d", len(props), MaxProperties)
	}
	// The bridge adds time, distinct_id, $insert_id, branch_time_missing
	// and branch_event.
	if got := len(props) + rec.DroppedProperties; got != 300+5 {
		t.Errorf("kept plus dropped: got %d, want %d", got, 300+5)
	}
	for _, k := range []string{"time", "distinct_id", "$insert_id"} {
		if _, ok := props[k]; !ok {
			t.Errorf("%s: got absent, want present", k)
		}
	}
}

func TestMapProfiles(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		who         identity.Identity
		wantSetOnce map[string]any
		wantSet     map[string]any
	}{
		{
			name: "anonymous",
			body: `{"name":"INSTALL","timestamp":1717430400123,"user_data":{"aaid":"G1"},
				"last_attributed_touch_data":{"~campaign":"c"}}`,
		},
		{
			name: "known install",
			body: `{"name":"INSTALL","timestamp":1717430400123,
				"last_attributed_touch_data":{"~campaign":"c","~channel":"s","~feature":"f"}}`,
			who: identity.Identity{
				UserID:     "u1",
				Properties: map[string]any{"$email": "a@example.com", "plan": "pro", "gone": nil},
			},
			wantSetOnce: map[string]any{
				"branch_first_campaign": "c",
				"branch_first_channel":  "s",
				"branch_first_feature":  "f",
				"branch_install_time":   "2024-06-03T16:00:00",
			},
			wantSet: map[string]any{
				"branch_last_campaign": "c",
				"branch_last_channel":  "s",
				"branch_last_feature":  "f",
				"$email":               "a@example.com",
				"plan":                 "pro",
			},
		},
		{
			name: "known without attribution",
			body: `{"name":"PURCHASE","timestamp":1717430400123}`,
			who:  identity.Identity{UserID: "u1"},
		},
		{
			name: "legacy first touch",
			body: `{"event":"open","first_referring_link_data":{"campaign":"first"},
				"session_referring_link_data":{"data":{"~campaign":"last"}}}`,
			who:         identity.Identity{UserID: "u1"},
			wantSetOnce: map[string]any{"branch_first_campaign": "first"},
			wantSet:     map[string]any{"branch_last_campaign": "last"},
		},
		{
			name:        "legacy install without timestamp",
			body:        `{"event":"install"}`,
			who:         identity.Identity{UserID: "u1"},
			wantSetOnce: map[string]any{"branch_install_time": "2024-06-03T12:00:00"},
		},
		{
			name: "placeholder user id",
			body: `{"name":"INSTALL","last_attributed_touch_data":{"~campaign":"c"}}`,
			who:  identity.Identity{UserID: "null", Properties: map[string]any{"plan": "pro"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := mapBody(t, tt.body, tt.who)
			if diff := cmp.Diff(tt.wantSetOnce, rec.SetOnce); diff != "" {
				t.Errorf("SetOnce mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSet, rec.Set); diff != "" {
				t.Errorf("Set mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMapEventName(t *testing.T) {
	type call struct {
		Name     string
		Standard bool
	}
	var calls []call
	namer := func(name string, standard bool) string {
		calls = append(calls, call{name, standard})
		return "custom:" + name
	}
	for _, name := range []string{"ADD_TO_CART", "Signed Up"} {
		ev := &branch.Event{Name: name, ID: "1"}
		rec := Map(ev, identity.Identity{}, Options{EventName: namer, ReceivedAt: receivedAt})
		if want := "custom:" + name; rec.Event.Name != want {
			t.Errorf("Event.Name: got %q, want %q", rec.Event.Name, want)
		}
		if got := rec.Event.Properties["branch_event"]; got != name {
			t.Errorf("branch_event: got %v, want %q", got, name)
		}
	}
	want := []call{{"ADD_TO_CART", true}, {"Signed Up", false}}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("namer calls mismatch (-want +got):\n%s", diff)
	}
}

func TestMapDeterministic(t *testing.T) {
	for _, gc := range goldenCases(t) {
		t.Run(gc.name, func(t *testing.T) {
			who := developerIdentity(t, gc.event)
			first := marshalRecord(t, Map(gc.event, who, Options{ReceivedAt: receivedAt}))
			for range 20 {
				got := marshalRecord(t, Map(gc.event, who, Options{ReceivedAt: receivedAt}))
				if got != first {
					t.Fatalf("Map differs between runs:\n%s", cmp.Diff(first, got))
				}
			}
		})
	}
}

func marshalRecord(t testing.TB, rec Record) string {
	t.Helper()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatalf("json.Marshal(record): got error %v, want nil", err)
	}
	return string(data)
}

func TestInsertID(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string
	}{
		{name: "Branch id", give: "1234567890123456789", want: "br-1234567890123456789"},
		{name: "letters and dashes", give: "Ab-9", want: "br-Ab-9"},
		{name: "33 characters", give: strings.Repeat("a", 33), want: "br-" + strings.Repeat("a", 33)},
		{name: "34 characters", give: strings.Repeat("a", 34)},
		{name: "underscore", give: "a_b"},
		{name: "dot", give: "1.5e3"},
		{name: "space", give: "a b"},
		{name: "non-ASCII", give: "é1"},
		{name: "empty", give: ""},
		{name: "placeholder zero", give: "0"},
		{name: "placeholder null", give: "null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := InsertID(&branch.Event{Name: "OPEN", ID: tt.give})
			if !insertIDPattern.MatchString(got) {
				t.Errorf("InsertID: got %q, want at most 36 of [A-Za-z0-9-]", got)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("InsertID: got %q, want %q", got, tt.want)
			}
			if tt.want == "" && !hashIDPattern.MatchString(got) {
				t.Errorf("InsertID: got %q, want 32 lower-case hex digits", got)
			}
		})
	}
}

func TestInsertIDStable(t *testing.T) {
	tests := []struct {
		name string
		a, b *branch.Event
	}{
		{
			name: "same body",
			a:    decode(t, string(fixtures.BodyNamed("legacy-open-referred-false"))),
			b:    decode(t, string(fixtures.BodyNamed("legacy-open-referred-false"))),
		},
		{
			name: "key order",
			a: decode(t, `{"event":"open","os":"iOS","metadata":{"a":1,"b":[1,2]},
				"session_referring_link_data":{"data":{"x":1,"y":2}}}`),
			b: decode(t, `{"session_referring_link_data":{"data":{"y":2,"x":1}},
				"metadata":{"b":[1,2],"a":1},"os":"iOS","event":"open"}`),
		},
		{
			name: "query param order",
			a:    decodeQuery(t, "ev=OPEN&uid=u1&camp=c&plan=pro&ts=1717433000222"),
			b:    decodeQuery(t, "ts=1717433000222&plan=pro&camp=c&uid=u1&ev=OPEN"),
		},
		{
			name: "query param order with id",
			a:    decodeQuery(t, "ev=OPEN&id=99&uid=u1"),
			b:    decodeQuery(t, "uid=u1&id=99&ev=OPEN"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := InsertID(tt.a), InsertID(tt.b)
			if a != b {
				t.Errorf("InsertID: got %q and %q, want equal", a, b)
			}
			if !insertIDPattern.MatchString(a) {
				t.Errorf("InsertID: got %q, want at most 36 of [A-Za-z0-9-]", a)
			}
		})
	}
}

func TestInsertIDDiffers(t *testing.T) {
	bodies := []string{
		`{"event":"open"}`,
		`{"event":"install"}`,
		`{"event":"open","metadata":{"a":1}}`,
		`{"event":"open","metadata":{"a":2}}`,
		`{"event":"open","event_timestamp":"2018-06-27T17:06:05.665Z"}`,
		`{"event":"open","identity":"u1"}`,
	}
	seen := map[string]string{}
	for _, body := range bodies {
		id := InsertID(decode(t, body))
		if other, ok := seen[id]; ok {
			t.Errorf("InsertID: got %q for both %s and %s, want different ids", id, other, body)
		}
		seen[id] = body
	}
}

func TestDefaultEventName(t *testing.T) {
	tests := []struct {
		give     string
		standard bool
		want     string
	}{
		{give: "INSTALL", standard: true, want: "[Branch] install"},
		{give: "install", standard: true, want: "[Branch] install"},
		{give: "ADD_TO_CART", standard: true, want: "[Branch] add to cart"},
		{give: "COMPLETE_REGISTRATION", standard: true, want: "[Branch] complete registration"},
		{give: "REFERRED SESSION", standard: true, want: "[Branch] referred session"},
		{give: "Signed Up", standard: false, want: "[Branch] Signed Up"},
		{give: "level_up", standard: false, want: "[Branch] level_up"},
		{give: "PURCHASE", standard: false, want: "[Branch] PURCHASE"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := DefaultEventName(tt.give, tt.standard); got != tt.want {
				t.Errorf("DefaultEventName(%q, %v): got %q, want %q", tt.give, tt.standard, got, tt.want)
			}
		})
	}
}

func TestIsStandardEvent(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{give: "INSTALL", want: true},
		{give: "install", want: true},
		{give: "Open", want: true},
		{give: "PURCHASE", want: true},
		{give: "referred session", want: true},
		{give: "ADD_TO_CART", want: true},
		{give: "Signed Up", want: false},
		{give: "INSTALL ", want: false},
		{give: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := IsStandardEvent(tt.give); got != tt.want {
				t.Errorf("IsStandardEvent(%q): got %v, want %v", tt.give, got, tt.want)
			}
		})
	}
}

func TestNormalizeOS(t *testing.T) {
	tests := []struct {
		give string
		want string
	}{
		{give: "IOS", want: "iOS"},
		{give: "iOS", want: "iOS"},
		{give: "ANDROID", want: "Android"},
		{give: "IPADOS", want: "iPadOS"},
		{give: "MAC_OS", want: "Mac OS X"},
		{give: "WINDOWS", want: "Windows"},
		{give: "LINUX", want: "Linux"},
		{give: "CHROME_OS", want: "Chrome OS"},
		{give: "TV_OS", want: "TV_OS"},
		{give: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			if got := normalizeOS(tt.give); got != tt.want {
				t.Errorf("normalizeOS(%q): got %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}

func TestMapUsesGivenInsertID(t *testing.T) {
	ev := decode(t, string(fixtures.BodyNamed("legacy-open-referred-false")))
	computed := Map(ev, identity.Identity{}, Options{}).Event.Properties["$insert_id"]
	if computed != InsertID(ev) {
		t.Fatalf("computed $insert_id: got %v, want %v", computed, InsertID(ev))
	}
	given := Map(ev, identity.Identity{}, Options{InsertID: "given-1"}).Event.Properties["$insert_id"]
	if given != "given-1" {
		t.Errorf("given $insert_id: got %v, want given-1", given)
	}
}
