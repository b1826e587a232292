package delivery

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/branchmp/branchmp/internal/mapping"
)

func TestFreezeThaw(t *testing.T) {
	rec := mapping.Record{
		Event: mapping.Event{Name: "[Branch] purchase", Properties: map[string]any{
			"time": int64(1717430400000), "$insert_id": "br-1", "revenue": json.Number("12.50"),
			"big": "9007199254740993", "tags": []any{"a", "<b>"},
		}},
		DistinctID:        "user-1",
		SetOnce:           map[string]any{"branch_first_campaign": "spring"},
		Set:               map[string]any{"plan": "pro", "seats": json.Number("3")},
		IP:                "203.0.113.9",
		TimeMissing:       true,
		DroppedProperties: 2,
	}
	event := mustMarshal(t, rec.Event)

	tests := []struct {
		name   string
		frozen []byte
	}{
		{"current format", freeze(&rec, event)},
		{"earlier format", mustMarshal(t, rec)}, // json.Marshal of the whole Record
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, gotEvent, err := thaw(tt.frozen)
			if err != nil {
				t.Fatalf("thaw: %v", err)
			}
			if string(gotEvent) != string(event) {
				t.Errorf("event:\ngot  %s\nwant %s", gotEvent, event)
			}
			want := rec
			want.Event = mapping.Event{}
			if diff := cmp.Diff(want, *got); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
		})
	}
}

func TestThawRejectsRecordsWithoutEvent(t *testing.T) {
	for _, give := range []string{`{}`, `{"Event":null}`, `{"Event":"x"}`, `not json`, `{"Event":{"event":"x"}`} {
		if _, _, err := thaw([]byte(give)); err == nil {
			t.Errorf("thaw(%s): got nil error, want one", give)
		}
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
