package branch

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/branchmp/branchmp/internal/fixtures"
)

// maxMillis is the largest Timestamp the decoders return.
const maxMillis = 1e15

func FuzzDecode(f *testing.F) {
	for _, body := range fixtures.Bodies() {
		f.Add(body.Data)
	}
	for _, seed := range []string{
		"", "[]", "null", `{}`, `{"name":"X"} {}`, `{"event":"open","hardware_id":"h"}`,
		`{"name":"X","timestamp":"NaN","user_data":{"identity_id":"a","randomized_bundle_token":"b"}}`,
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := Decode(body)
		if err != nil {
			checkDecodeError(t, body, ev, err)
			return
		}
		if !json.Valid(body) {
			t.Errorf("Decode: got nil error for invalid JSON %q", body)
		}
		if ev.Generation != Legacy && ev.Generation != Ontology {
			t.Errorf("Generation: got %v, want legacy or ontology", ev.Generation)
		}
		checkEvent(t, ev)

		again, err := Decode(body)
		if err != nil {
			t.Fatalf("second Decode: got error %v, want nil", err)
		}
		if diff := cmp.Diff(ev, again); diff != "" {
			t.Errorf("Decode differs between runs (-first +second):\n%s", diff)
		}
	})
}

func checkDecodeError(t *testing.T, body []byte, ev *Event, err error) {
	t.Helper()
	if ev != nil {
		t.Errorf("Decode event: got %+v with error %v, want nil", ev, err)
	}
	invalid := errors.Is(err, ErrInvalidJSON)
	if !invalid && !errors.Is(err, ErrNotObject) && !errors.Is(err, ErrNoEventName) {
		t.Errorf("Decode error: got %v, want one of the package's errors", err)
	}
	if valid := json.Valid(body); invalid == valid {
		t.Errorf("Decode error: got %v for a body with json.Valid %v", err, valid)
	}
}

func FuzzDecodeQuery(f *testing.F) {
	for _, target := range fixtures.GetRequests() {
		_, query, _ := strings.Cut(target, "?")
		f.Add(query)
	}
	for _, seed := range []string{
		"", "ev=", "ev=OPEN&secret=s", "ev=P&revenue=NaN&revenue_in_usd=%2B5",
		"ev=X&ts=1e400&uid=a&user_id=b&identity_id=c&randomized_bundle_token=d",
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, raw string) {
		// ParseQuery returns the parameters it could parse along with the
		// first error, and the bridge decodes those the same way.
		query, _ := url.ParseQuery(raw)
		ev, err := DecodeQuery(query, nil, "secret")
		if err != nil {
			if !errors.Is(err, ErrNoEventName) {
				t.Errorf("DecodeQuery error: got %v, want %v", err, ErrNoEventName)
			}
			if ev != nil {
				t.Errorf("DecodeQuery event: got %+v with error, want nil", ev)
			}
			return
		}
		if ev.Generation != Query {
			t.Errorf("Generation: got %v, want %v", ev.Generation, Query)
		}
		checkEvent(t, ev)
		if got, ok := ev.CustomData["secret"]; ok {
			t.Errorf("CustomData[secret]: got %v, want absent because it is ignored", got)
		}
		for k, v := range ev.CustomData {
			if _, ok := v.(string); !ok {
				t.Errorf("CustomData[%q]: got %T, want string", k, v)
			}
		}

		again, err := DecodeQuery(query, nil, "secret")
		if err != nil {
			t.Fatalf("second DecodeQuery: got error %v, want nil", err)
		}
		if diff := cmp.Diff(ev, again); diff != "" {
			t.Errorf("DecodeQuery differs between runs (-first +second):\n%s", diff)
		}
	})
}

// checkEvent checks what every decoded event must satisfy.
func checkEvent(t *testing.T, ev *Event) {
	t.Helper()
	if ev.Name == "" {
		t.Errorf("Name: got empty, want non-empty")
	}
	if ev.Name != strings.TrimSpace(ev.Name) {
		t.Errorf("Name: got %q, want no surrounding space", ev.Name)
	}
	if ev.Timestamp < 0 || ev.Timestamp > maxMillis {
		t.Errorf("Timestamp: got %d, want 0 or in (0, %d]", ev.Timestamp, int64(maxMillis))
	}
	// The mapping hashes the event's JSON, and a json.Number that is not a
	// JSON number would make that fail.
	if _, err := json.Marshal(ev); err != nil {
		t.Errorf("json.Marshal(event): got error %v, want nil", err)
	}
}
