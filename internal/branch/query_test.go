package branch

import (
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/branchmp/branchmp/internal/fixtures"
)

func TestDecodeQueryFixtures(t *testing.T) {
	want := []*Event{
		{
			Generation: Query,
			Name:       "INSTALL",
			ID:         "1234567890123456792",
			Timestamp:  1717433000111,
			User: User{
				DeveloperIdentity: "user-42",
				IDFV:              "5B1C0A9E-1111-4222-8333-944455556666",
				IP:                "203.0.113.7",
			},
			Touch: map[string]any{"~campaign": "summer sale", "~channel": "Facebook"},
		},
		{
			// uid, camp and chan are empty, so they are absent.
			Generation: Query,
			Name:       "OPEN",
			ID:         "1234567890123456793",
			Timestamp:  1717433000222,
			User:       User{AAID: "38400000-8cf0-11bd-b23e-10b96e40000d"},
		},
		{
			Generation: Query,
			Name:       "PURCHASE",
			ID:         "1234567890123456794",
			Timestamp:  1717433000333,
			User:       User{DeveloperIdentity: "user-77"},
			EventData:  map[string]any{"revenue": json.Number("19.99"), "currency": "EUR"},
		},
	}

	requests := fixtures.GetRequests()
	if len(requests) != len(want) {
		t.Fatalf("got %d GET fixtures, want %d", len(requests), len(want))
	}
	for i, target := range requests {
		t.Run(target, func(t *testing.T) {
			u, err := url.Parse(target)
			if err != nil {
				t.Fatalf("url.Parse: got error %v, want nil", err)
			}
			got, err := DecodeQuery(u.Query(), DefaultQueryParams())
			if err != nil {
				t.Fatalf("DecodeQuery: got error %v, want nil", err)
			}
			if diff := cmp.Diff(want[i], got); diff != "" {
				t.Errorf("DecodeQuery mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeQuery(t *testing.T) {
	tests := []struct {
		name   string
		give   string
		params map[string]string
		ignore []string
		want   *Event
	}{
		{
			name: "unmapped params into custom data",
			give: "ev=SIGN_UP&plan=pro&amount=10&zip=00123",
			want: &Event{
				Generation: Query,
				Name:       "SIGN_UP",
				CustomData: map[string]any{"plan": "pro", "amount": "10", "zip": "00123"},
			},
		},
		{
			name: "empty param name dropped",
			give: "ev=OPEN&=x",
			want: &Event{Generation: Query, Name: "OPEN"},
		},
		{
			name: "empty values absent",
			give: "ev=OPEN&uid=&camp=&plan=&ts=%20&idfa=++",
			want: &Event{Generation: Query, Name: "OPEN"},
		},
		{
			name: "first non-empty value of a param",
			give: "ev=&ev=OPEN&ev=CLOSE",
			want: &Event{Generation: Query, Name: "OPEN"},
		},
		{
			name: "values trimmed",
			give: "ev=%20OPEN%20&uid=%09u1%0A",
			want: &Event{Generation: Query, Name: "OPEN", User: User{DeveloperIdentity: "u1"}},
		},
		{
			name: "revenue becomes a number",
			give: "ev=PURCHASE&revenue=19.99&revenue_in_usd=-2e3&tax=0.5&currency=EUR",
			params: func() map[string]string {
				m := DefaultQueryParams()
				m["tax"] = "event_data.tax"
				return m
			}(),
			want: &Event{
				Generation: Query,
				Name:       "PURCHASE",
				EventData: map[string]any{
					"revenue":        json.Number("19.99"),
					"revenue_in_usd": json.Number("-2e3"),
					"tax":            json.Number("0.5"),
					"currency":       "EUR",
				},
			},
		},
		{
			name: "revenue that is not a JSON number",
			give: "ev=PURCHASE&revenue=NaN&revenue_in_usd=%2B5&shipping=.5",
			params: func() map[string]string {
				m := DefaultQueryParams()
				m["shipping"] = "event_data.shipping"
				return m
			}(),
			want: &Event{
				Generation: Query,
				Name:       "PURCHASE",
				EventData: map[string]any{
					"revenue":        "NaN",
					"revenue_in_usd": "+5",
					"shipping":       ".5",
				},
			},
		},
		{
			name: "revenue beyond float64",
			give: "ev=PURCHASE&revenue=1e400&coupon=10",
			want: &Event{
				Generation: Query,
				Name:       "PURCHASE",
				EventData:  map[string]any{"revenue": "1e400", "coupon": "10"},
			},
		},
		{
			name:   "ignore list",
			give:   "ev=OPEN&secret=s3&token=t&plan=pro&uid=u1",
			ignore: []string{"secret", "token", "uid"},
			want: &Event{
				Generation: Query,
				Name:       "OPEN",
				CustomData: map[string]any{"plan": "pro"},
			},
		},
		{
			name: "two params fill one target",
			give: "user_id=c&uid=b&identity=a&event=B&ev=A&chan=y&channel=x",
			want: &Event{
				Generation: Query,
				Name:       "A",
				User:       User{DeveloperIdentity: "a"},
				Touch:      map[string]any{"~channel": "y"},
			},
		},
		{
			name: "timestamp in seconds",
			give: "ev=OPEN&ts=1717433000",
			want: &Event{Generation: Query, Name: "OPEN", Timestamp: 1717433000000},
		},
		{
			name: "timestamp as ISO string",
			give: "ev=OPEN&timestamp=2018-06-27T17:06:05.665Z",
			want: &Event{Generation: Query, Name: "OPEN", Timestamp: 1530119165665},
		},
		{
			name: "link fields",
			give: "ev=OPEN&campaign=c&feature=f&stage=s&tags=t&url=https%3A%2F%2Fexample.com%2F",
			want: &Event{
				Generation: Query,
				Name:       "OPEN",
				Touch: map[string]any{
					"~campaign": "c",
					"~feature":  "f",
					"~stage":    "s",
					"~tags":     "t",
					"+url":      "https://example.com/",
				},
			},
		},
		{
			name: "Branch user_data names",
			give: "name=OPEN&developer_identity=u&idfa=a&aaid=g&android_id=n&os=IOS" +
				"&randomized_bundle_token=b&randomized_device_token=d",
			want: &Event{
				Generation: Query,
				Name:       "OPEN",
				User: User{
					DeveloperIdentity: "u", IDFA: "a", AAID: "g", AndroidID: "n",
					OS: "IOS", BranchID: "b", BranchDeviceID: "d",
				},
			},
		},
		{
			name:   "custom params",
			give:   "e=OPEN&who=u1&ev=x&att=true",
			params: map[string]string{"e": "name", "who": "user_data.developer_identity", "att": "attributed"},
			want: &Event{
				Generation: Query,
				Name:       "OPEN",
				User:       User{DeveloperIdentity: "u1"},
				CustomData: map[string]any{"ev": "x"},
				Extra:      map[string]any{"attributed": true},
			},
		},
		{
			name:   "nil params mean defaults",
			give:   "ev=OPEN&uid=u1",
			params: nil,
			want:   &Event{Generation: Query, Name: "OPEN", User: User{DeveloperIdentity: "u1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			query, err := url.ParseQuery(tt.give)
			if err != nil {
				t.Fatalf("url.ParseQuery: got error %v, want nil", err)
			}
			got, err := DecodeQuery(query, tt.params, tt.ignore...)
			if err != nil {
				t.Fatalf("DecodeQuery: got error %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeQuery mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeQueryDeterministic decodes a query in which several parameters
// fill the same targets many times, and expects the same event each time.
func TestDecodeQueryDeterministic(t *testing.T) {
	query, err := url.ParseQuery("name=N1&event_name=N2&event=N3&ev=N4" +
		"&uid=a&user_id=b&identity=c&developer_identity=d" +
		"&camp=e&campaign=f&chan=g&channel=h" +
		"&identity_id=i&randomized_bundle_token=j")
	if err != nil {
		t.Fatalf("url.ParseQuery: got error %v, want nil", err)
	}
	first, err := DecodeQuery(query, nil)
	if err != nil {
		t.Fatalf("DecodeQuery: got error %v, want nil", err)
	}
	if first.Name != "N4" {
		t.Errorf("Name: got %q, want %q", first.Name, "N4")
	}
	if first.User.DeveloperIdentity != "d" {
		t.Errorf("DeveloperIdentity: got %q, want %q", first.User.DeveloperIdentity, "d")
	}
	for range 50 {
		got, err := DecodeQuery(query, nil)
		if err != nil {
			t.Fatalf("DecodeQuery: got error %v, want nil", err)
		}
		if diff := cmp.Diff(first, got); diff != "" {
			t.Fatalf("DecodeQuery differs between runs (-first +got):\n%s", diff)
		}
	}
}

func TestDecodeQueryErrors(t *testing.T) {
	tests := []struct {
		name   string
		give   string
		ignore []string
	}{
		{name: "empty query", give: ""},
		{name: "no name param", give: "uid=u1&id=5&plan=pro"},
		{name: "empty name", give: "ev=&event=%20"},
		{name: "name ignored", give: "ev=OPEN", ignore: []string{"ev"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			query, err := url.ParseQuery(tt.give)
			if err != nil {
				t.Fatalf("url.ParseQuery: got error %v, want nil", err)
			}
			got, err := DecodeQuery(query, nil, tt.ignore...)
			if !errors.Is(err, ErrNoEventName) {
				t.Errorf("DecodeQuery error: got %v, want %v", err, ErrNoEventName)
			}
			if got != nil {
				t.Errorf("DecodeQuery event: got %+v, want nil", got)
			}
		})
	}
}

func TestDefaultQueryParams(t *testing.T) {
	params := DefaultQueryParams()
	for param, target := range params {
		if target == "" {
			t.Errorf("param %q: got empty target, want a field name", param)
		}
	}
	// Each call returns a new map, so a caller may change its copy.
	params["ev"] = "custom_data.ev"
	if got := DefaultQueryParams()["ev"]; got != "name" {
		t.Errorf(`DefaultQueryParams()["ev"]: got %q, want "name"`, got)
	}
}

func TestDecodeQueryInvalidUTF8Names(t *testing.T) {
	query := url.Values{"ev": {"OPEN"}, "a\xff": {"1"}, "a\xfe": {"2"}, "a\uFFFD": {"3"}, "v": {"x\xffy"}}
	ev, err := DecodeQuery(query, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"a\uFFFD": "3", "v": "x\uFFFDy"} // "a\uFFFD" (0xEF...) is first in byte order
	if !reflect.DeepEqual(ev.CustomData, want) {
		t.Errorf("CustomData: got %q, want %q", ev.CustomData, want)
	}
}
