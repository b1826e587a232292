package branch

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/branchmp/branchmp/internal/fixtures"
)

// fixtureEvents are the events that the bundled POST bodies decode to, by
// fixture name.
var fixtureEvents = map[string]*Event{
	"install-attributed-ios": {
		Generation: Ontology,
		Name:       "INSTALL",
		ID:         "1234567890123456789",
		Timestamp:  1717430400123,
		User: User{
			DeveloperIdentity: "user-42",
			IDFV:              "5B1C0A9E-1111-4222-8333-944455556666",
			OS:                "IOS",
			OSVersion:         "17.5",
			Platform:          "IOS_APP",
			Environment:       "FULL_APP",
			AppVersion:        "2.6.3",
			SDKVersion:        "3.4.1",
			Brand:             "Apple",
			Model:             "iPhone15,2",
			IP:                "203.0.113.7",
			UserAgent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) " +
				"AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
			Country:  "US",
			Language: "EN",
			Extra: map[string]any{
				"limit_ad_tracking": true,
				"geo_country_code":  "US",
				"geo_dma_code":      json.Number("501"),
				"geo_city_en":       "New York",
			},
		},
		Touch: map[string]any{
			"~id":              json.Number("467391383381228204"),
			"~channel":         "Facebook",
			"~campaign":        "summer_sale",
			"~feature":         "marketing",
			"~tags":            []any{"promo"},
			"~creation_source": json.Number("1"),
			"~marketing":       true,
			"+url":             "https://example.app.link/summer",
			"+click_timestamp": json.Number("1717430100"),
			"+via_features":    []any{"QUICK_LINKS"},
			"$marketing_title": "Summer sale",
			"$one_time_use":    false,
			"product_id":       "sku-1",
		},
		// custom_data belongs to the app, so its "true" stays a string.
		CustomData: map[string]any{"referred": "true"},
		Extra: map[string]any{
			"event_timestamp":                             json.Number("1717430400123"),
			"origin":                                      "BRANCH",
			"attributed":                                  true,
			"deep_linked":                                 true,
			"first_event_for_user":                        true,
			"last_attributed_touch_type":                  "CLICK",
			"last_attributed_touch_timestamp":             json.Number("1717430100000"),
			"days_from_last_attributed_touch_to_event":    json.Number("0"),
			"hours_from_last_attributed_touch_to_event":   json.Number("0"),
			"minutes_from_last_attributed_touch_to_event": json.Number("5"),
			"seconds_from_last_attributed_touch_to_event": json.Number("300"),
		},
	},
	"legacy-install-referred": {
		Generation: Legacy,
		Name:       "install",
		// 2018-06-27T17:06:05.665Z
		Timestamp: 1530119165665,
		User: User{
			DeveloperIdentity: "user-42",
			// hardware_id is the IDFV because the os is iOS.
			IDFV:      "0C2D3E4F-1111-2222-3333-444455556666",
			OS:        "iOS",
			OSVersion: "11.4",
			IP:        "203.0.113.7",
		},
		Touch: map[string]any{
			"~id":              "434447146129992167",
			"~channel":         "facebook",
			"~campaign":        "spring",
			"~feature":         "paid advertising",
			"~tags":            []any{"alc"},
			"+url":             "https://example.app.link/xyz",
			"+click_timestamp": json.Number("1530119099"),
			"$marketing_title": "Spring promo",
			"$one_time_use":    false,
			"product_id":       "sku-1",
		},
		CustomData: map[string]any{"referred": true, "reinstall": false},
		Extra: map[string]any{
			"limited_ad_tracking_status":        "0",
			"ad_tracking_enabled":               "true",
			"session_referring_click_timestamp": "2018-06-27T17:04:59.258Z",
			"session_referring_click_id":        json.Number("540565559746262959"),
			"session_referring_click_query": map[string]any{
				"$3p":       "a_example",
				"~click_id": "123",
			},
		},
	},
	"legacy-open-referred-false": {
		Generation: Legacy,
		Name:       "open",
		User: User{
			OS:        "Android",
			OSVersion: "19",
			IP:        "198.51.100.23",
		},
		// "~feature" and "~id" come from the link-level fields.
		Touch: map[string]any{
			"$marketing_title": "Testing Mixpanel K/V",
			"extra_data":       "1234",
			"~feature":         "marketing",
			"~id":              "121303087695532448",
		},
		CustomData: map[string]any{"referred": false},
	},
	"open-anonymous-android": {
		Generation: Ontology,
		Name:       "OPEN",
		ID:         "1234567890123456791",
		Timestamp:  1717432000789,
		User: User{
			AAID:      "00000000-0000-0000-0000-000000000000",
			AndroidID: "a1b2c3d4e5f60718",
			OS:        "ANDROID",
			OSVersion: "33",
			Platform:  "ANDROID_APP",
			IP:        "192.0.2.44",
			Extra:     map[string]any{"geo_country_code": "BR"},
		},
		Touch: map[string]any{
			"~channel":  "email",
			"~campaign": "winback",
			"~feature":  "journeys",
			"~tags":     nil,
		},
		Extra: map[string]any{
			"origin":                     "BRANCH",
			"attributed":                 true,
			"deep_linked":                false,
			"last_attributed_touch_type": "CLICK",
		},
	},
	"purchase-android": {
		Generation: Ontology,
		Name:       "PURCHASE",
		ID:         "1234567890123456790",
		Timestamp:  1717431000456,
		User: User{
			DeveloperIdentity: "user-77",
			AAID:              "38400000-8cf0-11bd-b23e-10b96e40000d",
			OS:                "ANDROID",
			OSVersion:         "34",
			Platform:          "ANDROID_APP",
			Environment:       "FULL_APP",
			AppVersion:        "5.0.1",
			IP:                "198.51.100.9",
			Extra:             map[string]any{"geo_country_code": "DE"},
		},
		EventData: map[string]any{
			"transaction_id": "T-991",
			"revenue":        json.Number("19.99"),
			"currency":       "EUR",
			"revenue_in_usd": json.Number("21.55"),
			"exchange_rate":  json.Number("1.078"),
			"coupon":         "SUMMERDEALS10",
		},
		ContentItems: []map[string]any{{
			"$sku":          "sku-1",
			"$product_name": "Green Table",
			"$price":        json.Number("19.99"),
			"$quantity":     json.Number("1"),
			"$currency":     "EUR",
		}},
		CustomData: map[string]any{"plan": "pro"},
		Extra: map[string]any{
			"origin":     "BRANCH",
			"attributed": false,
		},
	},
}

func TestDecodeFixtures(t *testing.T) {
	bodies := fixtures.Bodies()
	if len(bodies) != len(fixtureEvents) {
		t.Errorf("got %d fixture bodies, want %d", len(bodies), len(fixtureEvents))
	}
	for _, body := range bodies {
		t.Run(body.Name, func(t *testing.T) {
			want, ok := fixtureEvents[body.Name]
			if !ok {
				t.Fatalf("fixture %q has no expected event in fixtureEvents", body.Name)
			}
			got, err := Decode(body.Data)
			if err != nil {
				t.Fatalf("Decode: got error %v, want nil", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Decode mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeTolerant(t *testing.T) {
	tests := []struct {
		name string
		give string
		want *Event
	}{
		{
			name: "flags as strings",
			give: `{"name":"OPEN","attributed":"true","deep_linked":"false",
				"is_test_event":1,"reinstall":"yes","user_data":{"limit_ad_tracking":"TRUE"}}`,
			want: &Event{
				Generation: Ontology,
				Name:       "OPEN",
				User:       User{Extra: map[string]any{"limit_ad_tracking": true}},
				Extra: map[string]any{
					"attributed":    true,
					"deep_linked":   false,
					"is_test_event": true,
					"reinstall":     "yes",
				},
			},
		},
		{
			name: "non-flag keys keep strings",
			give: `{"name":"OPEN","origin":"true","custom_data":{"attributed":"true"}}`,
			want: &Event{
				Generation: Ontology,
				Name:       "OPEN",
				CustomData: map[string]any{"attributed": "true"},
				Extra:      map[string]any{"origin": "true"},
			},
		},
		{
			name: "numbers as strings",
			give: `{"name":"OPEN","id":"1234567890123456789","timestamp":"1717430400123",
				"user_data":{"developer_identity":42,"app_version":2.5}}`,
			want: &Event{
				Generation: Ontology,
				Name:       "OPEN",
				ID:         "1234567890123456789",
				Timestamp:  1717430400123,
				User:       User{DeveloperIdentity: "42", AppVersion: "2.5"},
			},
		},
		{
			name: "id above 2^53 as number",
			give: `{"name":"OPEN","id":18446744073709551617}`,
			want: &Event{Generation: Ontology, Name: "OPEN", ID: "18446744073709551617"},
		},
		{
			name: "timestamp in seconds",
			give: `{"name":"OPEN","timestamp":1717430400}`,
			want: &Event{Generation: Ontology, Name: "OPEN", Timestamp: 1717430400000},
		},
		{
			name: "timestamp in fractional seconds",
			give: `{"name":"OPEN","timestamp":"1717430400.5"}`,
			want: &Event{Generation: Ontology, Name: "OPEN", Timestamp: 1717430400500},
		},
		{
			name: "timestamp as ISO string",
			give: `{"name":"OPEN","timestamp":"2024-06-03T16:00:00.123Z"}`,
			want: &Event{Generation: Ontology, Name: "OPEN", Timestamp: 1717430400123},
		},
		{
			name: "event_timestamp when timestamp missing",
			give: `{"name":"OPEN","event_timestamp":1717430400123}`,
			want: &Event{
				Generation: Ontology,
				Name:       "OPEN",
				Timestamp:  1717430400123,
				Extra:      map[string]any{"event_timestamp": json.Number("1717430400123")},
			},
		},
		{
			name: "null nested objects",
			give: `{"name":"OPEN","user_data":null,"last_attributed_touch_data":null,
				"event_data":null,"custom_data":null,"content_items":null}`,
			want: &Event{Generation: Ontology, Name: "OPEN"},
		},
		{
			name: "nested objects of wrong type",
			give: `{"name":"OPEN","user_data":"x","last_attributed_touch_data":[1],
				"event_data":7,"custom_data":true,"content_items":{"a":1}}`,
			want: &Event{Generation: Ontology, Name: "OPEN"},
		},
		{
			name: "content items that are not objects",
			give: `{"name":"PURCHASE","content_items":[null,1,"x",{"$sku":"a"},[]]}`,
			want: &Event{
				Generation:   Ontology,
				Name:         "PURCHASE",
				ContentItems: []map[string]any{{"$sku": "a"}},
			},
		},
		{
			name: "unknown keys kept",
			give: `{"name":"OPEN","new_field":{"a":[1,null]},"user_data":{"new_id":"x","ip":null}}`,
			want: &Event{
				Generation: Ontology,
				Name:       "OPEN",
				User:       User{Extra: map[string]any{"new_id": "x"}},
				Extra:      map[string]any{"new_field": map[string]any{"a": []any{json.Number("1"), nil}}},
			},
		},
		{
			name: "spaces around names and ids",
			give: `{"name":" OPEN ","id":" 7 ","user_data":{"developer_identity":" user-42 "}}`,
			want: &Event{
				Generation: Ontology,
				Name:       "OPEN",
				ID:         "7",
				User:       User{DeveloperIdentity: "user-42"},
			},
		},
		{
			name: "blank name falls back to event",
			give: `{"name":"  ","event":"open"}`,
			want: &Event{Generation: Legacy, Name: "open", Extra: map[string]any{"name": "  "}},
		},
		{
			name: "numeric event name",
			give: `{"event":5}`,
			want: &Event{Generation: Legacy, Name: "5"},
		},
		{
			name: "former user keys",
			give: `{"name":"OPEN","user_data":{"identity_id":"b1","device_fingerprint_id":"d1"}}`,
			want: &Event{
				Generation: Ontology,
				Name:       "OPEN",
				User:       User{BranchID: "b1", BranchDeviceID: "d1"},
			},
		},
		{
			name: "current user keys win over former",
			give: `{"name":"OPEN","user_data":{"identity_id":"b1","randomized_bundle_token":"b2",
				"device_fingerprint_id":"d1","randomized_device_token":"d2"}}`,
			want: &Event{
				Generation: Ontology,
				Name:       "OPEN",
				User:       User{BranchID: "b2", BranchDeviceID: "d2"},
			},
		},
		{
			name: "former user key fills empty current",
			give: `{"name":"OPEN","user_data":{"identity_id":"b1","randomized_bundle_token":""}}`,
			want: &Event{Generation: Ontology, Name: "OPEN", User: User{BranchID: "b1"}},
		},
		{
			name: "legacy timestamp fallback",
			give: `{"event":"open","timestamp":1530119165}`,
			want: &Event{Generation: Legacy, Name: "open", Timestamp: 1530119165000},
		},
		{
			name: "legacy hardware_id on Android",
			give: `{"event":"open","os":"Android","hardware_id":"a1b2"}`,
			want: &Event{
				Generation: Legacy,
				Name:       "open",
				User:       User{OS: "Android", AndroidID: "a1b2"},
			},
		},
		{
			name: "legacy hardware_id keeps idfv",
			give: `{"event":"open","os":"IOS","idfv":"V1","hardware_id":"H1"}`,
			want: &Event{Generation: Legacy, Name: "open", User: User{OS: "IOS", IDFV: "V1"}},
		},
		{
			name: "legacy device ids",
			give: `{"event":"open","google_advertising_id":"g","idfa":"a","android_id":"n",
				"browser_fingerprint_id":"b","identity_id":"i","device_fingerprint_id":"d",
				"sdk":"web2","brand":"X","model":"Y","user_agent":"Z","app_version":"1"}`,
			want: &Event{
				Generation: Legacy,
				Name:       "open",
				User: User{
					AAID: "g", IDFA: "a", AndroidID: "n", BrowserID: "b", BranchID: "i",
					BranchDeviceID: "d", SDKVersion: "web2", Brand: "X", Model: "Y",
					UserAgent: "Z", AppVersion: "1",
				},
			},
		},
		{
			name: "legacy link fields merged",
			give: `{"event":"open","session_referring_link_data":{"channel":"sms","campaign":"c1",
				"feature":null,"stage":"s","tags":["t"],"alias":"al","branch_id":"9","state":1,
				"data":{"~campaign":"c2","k":"v"}}}`,
			want: &Event{
				Generation: Legacy,
				Name:       "open",
				Touch: map[string]any{
					"~channel":  "sms",
					"~campaign": "c2",
					"~stage":    "s",
					"~tags":     []any{"t"},
					"~alias":    "al",
					"~id":       "9",
					"k":         "v",
				},
			},
		},
		{
			name: "legacy first referring link",
			give: `{"event":"install","first_referring_link_data":{"data":{"~campaign":"first"}}}`,
			want: &Event{
				Generation: Legacy,
				Name:       "install",
				FirstTouch: map[string]any{"~campaign": "first"},
			},
		},
		{
			name: "legacy metadata flags",
			give: `{"event":"open","metadata":{"ip":" 192.0.2.1 ","referred":"1","plan":"pro"}}`,
			want: &Event{
				Generation: Legacy,
				Name:       "open",
				User:       User{IP: "192.0.2.1"},
				CustomData: map[string]any{"referred": true, "plan": "pro"},
			},
		},
		{
			name: "legacy null link data",
			give: `{"event":"open","session_referring_link_data":null,"metadata":null}`,
			want: &Event{Generation: Legacy, Name: "open"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.give))
			if err != nil {
				t.Fatalf("Decode: got error %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeDeterministic decodes bodies whose result could depend on Go's
// random map iteration order 50 times each, and expects the same event.
func TestDecodeDeterministic(t *testing.T) {
	tests := []struct {
		name string
		give string
	}{
		{
			name: "former and current user keys",
			give: `{"name":"OPEN","user_data":{"identity_id":"b1","randomized_bundle_token":"b2",
				"device_fingerprint_id":"d1","randomized_device_token":"d2"}}`,
		},
		{
			name: "legacy hardware_id and idfv",
			give: `{"event":"open","os":"ios","idfv":"V1","hardware_id":"H1"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, err := Decode([]byte(tt.give))
			if err != nil {
				t.Fatalf("Decode: got error %v, want nil", err)
			}
			for range 50 {
				got, err := Decode([]byte(tt.give))
				if err != nil {
					t.Fatalf("Decode: got error %v, want nil", err)
				}
				if diff := cmp.Diff(first, got); diff != "" {
					t.Fatalf("Decode differs between runs (-first +got):\n%s", diff)
				}
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		give string
		want error
	}{
		{name: "empty body", give: "", want: ErrInvalidJSON},
		{name: "whitespace only", give: " \t\r\n", want: ErrInvalidJSON},
		{name: "JSON array", give: `[{"name":"OPEN"}]`, want: ErrNotObject},
		{name: "empty array", give: `[]`, want: ErrNotObject},
		{name: "number", give: `42`, want: ErrNotObject},
		{name: "string", give: `"OPEN"`, want: ErrNotObject},
		{name: "null", give: `null`, want: ErrNotObject},
		{name: "boolean", give: ` true `, want: ErrNotObject},
		{name: "bare word", give: `OPEN`, want: ErrInvalidJSON},
		{name: "byte order mark", give: "\xef\xbb\xbf{\"name\":\"OPEN\"}", want: ErrInvalidJSON},
		{name: "unclosed object", give: `{"name":"OPEN"`, want: ErrInvalidJSON},
		{name: "missing value", give: `{"name":}`, want: ErrInvalidJSON},
		{name: "trailing comma", give: `{"name":"OPEN",}`, want: ErrInvalidJSON},
		{name: "trailing object", give: `{"name":"OPEN"} {}`, want: ErrInvalidJSON},
		{name: "trailing garbage", give: `{"name":"OPEN"}x`, want: ErrInvalidJSON},
		{name: "trailing brace", give: `{"name":"OPEN"}}`, want: ErrInvalidJSON},
		{name: "empty object", give: `{}`, want: ErrNoEventName},
		{name: "id only", give: `{"id":1,"timestamp":1717430400123}`, want: ErrNoEventName},
		{name: "empty name", give: `{"name":""}`, want: ErrNoEventName},
		{name: "blank name and event", give: `{"name":" ","event":"\t"}`, want: ErrNoEventName},
		{name: "null name", give: `{"name":null}`, want: ErrNoEventName},
		{name: "object name", give: `{"name":{"a":1},"event":[1]}`, want: ErrNoEventName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.give))
			if !errors.Is(err, tt.want) {
				t.Errorf("Decode error: got %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Errorf("Decode event: got %+v, want nil", got)
			}
		})
	}
}

func TestDecodeTrailingWhitespace(t *testing.T) {
	got, err := Decode([]byte("\n {\"name\":\"OPEN\"} \r\n\t"))
	if err != nil {
		t.Fatalf("Decode: got error %v, want nil", err)
	}
	if got.Name != "OPEN" {
		t.Errorf("Name: got %q, want %q", got.Name, "OPEN")
	}
}

func TestDecodeHostile(t *testing.T) {
	hundredDigits := strings.Repeat("1234567890", 10)
	tests := []struct {
		name  string
		give  string
		check func(t *testing.T, ev *Event, err error)
	}{
		{
			name: "5000 levels deep",
			give: `{"name":"X","custom_data":` + nested(5000) + `}`,
			check: func(t *testing.T, ev *Event, err error) {
				if err != nil {
					t.Fatalf("Decode: got error %v, want nil", err)
				}
				if ev.CustomData["a"] == nil {
					t.Errorf("CustomData[a]: got nil, want the nested object")
				}
			},
		},
		{
			name: "20000 levels deep",
			give: `{"name":"X","custom_data":` + nested(20000) + `}`,
			check: func(t *testing.T, ev *Event, err error) {
				if !errors.Is(err, ErrInvalidJSON) {
					t.Errorf("Decode error: got %v, want %v", err, ErrInvalidJSON)
				}
			},
		},
		{
			name: "deep array",
			give: `{"name":"X","custom_data":{"a":` + strings.Repeat("[", 5000) +
				strings.Repeat("]", 5000) + `}}`,
			check: func(t *testing.T, ev *Event, err error) {
				if err != nil {
					t.Fatalf("Decode: got error %v, want nil", err)
				}
			},
		},
		{
			name: "50000 keys",
			give: manyKeys(50000),
			check: func(t *testing.T, ev *Event, err error) {
				if err != nil {
					t.Fatalf("Decode: got error %v, want nil", err)
				}
				if got := len(ev.CustomData); got != 50000 {
					t.Errorf("len(CustomData): got %d, want 50000", got)
				}
			},
		},
		{
			name: "invalid UTF-8",
			give: "{\"name\":\"OP\xffEN\",\"custom_data\":{\"k\xfe\":\"\xc3\x28\"}}",
			check: func(t *testing.T, ev *Event, err error) {
				if err != nil {
					t.Fatalf("Decode: got error %v, want nil", err)
				}
				if ev.Name != "OP\uFFFDEN" {
					t.Errorf("Name: got %q, want %q", ev.Name, "OP\uFFFDEN")
				}
				if got := ev.CustomData["k\uFFFD"]; got != "\uFFFD(" {
					t.Errorf("CustomData: got %q, want %q", got, "\uFFFD(")
				}
			},
		},
		{
			name: "duplicate keys",
			give: `{"name":"A","name":"B","custom_data":{"k":1,"k":2}}`,
			check: func(t *testing.T, ev *Event, err error) {
				if err != nil {
					t.Fatalf("Decode: got error %v, want nil", err)
				}
				if ev.Name != "B" {
					t.Errorf("Name: got %q, want %q", ev.Name, "B")
				}
				if got := ev.CustomData["k"]; got != json.Number("2") {
					t.Errorf("CustomData[k]: got %v, want 2", got)
				}
			},
		},
		{
			name: "huge numbers",
			give: `{"name":"X","id":` + hundredDigits + `,"timestamp":1e400,
				"custom_data":{"big":1e400,"long":` + hundredDigits + `,"tiny":1e-400}}`,
			check: func(t *testing.T, ev *Event, err error) {
				if err != nil {
					t.Fatalf("Decode: got error %v, want nil", err)
				}
				if ev.ID != hundredDigits {
					t.Errorf("ID: got %q, want %q", ev.ID, hundredDigits)
				}
				if ev.Timestamp != 0 {
					t.Errorf("Timestamp: got %d, want 0", ev.Timestamp)
				}
				want := map[string]any{
					"big":  json.Number("1e400"),
					"long": json.Number(hundredDigits),
					"tiny": json.Number("1e-400"),
				}
				if diff := cmp.Diff(want, ev.CustomData); diff != "" {
					t.Errorf("CustomData mismatch (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "huge string",
			give: `{"name":"` + strings.Repeat("N", 1<<20) + `"}`,
			check: func(t *testing.T, ev *Event, err error) {
				if err != nil {
					t.Fatalf("Decode: got error %v, want nil", err)
				}
				if len(ev.Name) != 1<<20 {
					t.Errorf("len(Name): got %d, want %d", len(ev.Name), 1<<20)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode([]byte(tt.give))
			tt.check(t, ev, err)
		})
	}
}

// nested returns depth objects nested under the key "a".
func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
}

// manyKeys returns an ontology body whose custom_data has n keys.
func manyKeys(n int) string {
	var b strings.Builder
	b.WriteString(`{"name":"X","custom_data":{`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	b.WriteString("}}")
	return b.String()
}

func TestMillisOf(t *testing.T) {
	tests := []struct {
		name string
		give any
		want int64
	}{
		{name: "milliseconds", give: json.Number("1717430400123"), want: 1717430400123},
		{name: "milliseconds string", give: " 1717430400123 ", want: 1717430400123},
		{name: "seconds", give: json.Number("1717430400"), want: 1717430400000},
		{name: "fractional seconds", give: "1717430400.123", want: 1717430400123},
		{name: "exponent", give: json.Number("1.717430400123e12"), want: 1717430400123},
		{name: "RFC 3339 UTC", give: "2018-06-27T17:06:05.665Z", want: 1530119165665},
		{name: "RFC 3339 offset", give: "2018-06-27T19:06:05.665+02:00", want: 1530119165665},
		{name: "no zone", give: "2018-06-27T17:06:05.665", want: 1530119165665},
		{name: "space separator", give: "2018-06-27 17:06:05", want: 1530119165000},
		{name: "upper bound", give: json.Number("1e15"), want: 1e15},
		{name: "above upper bound", give: json.Number("1000000000000001"), want: 0},
		{name: "zero", give: json.Number("0"), want: 0},
		{name: "negative", give: json.Number("-5"), want: 0},
		{name: "before epoch", give: "1969-12-31T23:59:59Z", want: 0},
		{name: "NaN", give: "NaN", want: 0},
		{name: "infinity", give: "Inf", want: 0},
		{name: "negative infinity", give: "-Infinity", want: 0},
		{name: "overflow", give: json.Number("1e400"), want: 0},
		{name: "garbage", give: "yesterday", want: 0},
		{name: "empty", give: "", want: 0},
		{name: "null", give: nil, want: 0},
		{name: "boolean", give: true, want: 0},
		{name: "object", give: map[string]any{"s": 1}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := millisOf(tt.give); got != tt.want {
				t.Errorf("millisOf(%#v): got %d, want %d", tt.give, got, tt.want)
			}
		})
	}
}

func TestBoolOf(t *testing.T) {
	tests := []struct {
		give      any
		wantValue bool
		wantOK    bool
	}{
		{give: true, wantValue: true, wantOK: true},
		{give: false, wantValue: false, wantOK: true},
		{give: "true", wantValue: true, wantOK: true},
		{give: " FALSE ", wantValue: false, wantOK: true},
		{give: "1", wantValue: true, wantOK: true},
		{give: "0", wantValue: false, wantOK: true},
		{give: json.Number("1"), wantValue: true, wantOK: true},
		{give: json.Number("0"), wantValue: false, wantOK: true},
		{give: json.Number("2"), wantOK: false},
		{give: json.Number("1.0"), wantOK: false},
		{give: "yes", wantOK: false},
		{give: "", wantOK: false},
		{give: nil, wantOK: false},
		{give: []any{true}, wantOK: false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%#v", tt.give), func(t *testing.T) {
			value, ok := BoolOf(tt.give)
			if ok != tt.wantOK {
				t.Errorf("BoolOf ok: got %v, want %v", ok, tt.wantOK)
			}
			if value != tt.wantValue {
				t.Errorf("BoolOf value: got %v, want %v", value, tt.wantValue)
			}
		})
	}
}

func TestGenerationString(t *testing.T) {
	tests := []struct {
		give Generation
		want string
	}{
		{give: Legacy, want: "legacy"},
		{give: Ontology, want: "ontology"},
		{give: Query, want: "query"},
		{give: 0, want: "unknown"},
		{give: 99, want: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.give.String(); got != tt.want {
				t.Errorf("Generation(%d).String(): got %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}
