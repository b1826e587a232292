package delivery

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/branchmp/branchmp/internal/mapping"
)

// frozenRecord is a mapped event as the spool stores it: the event's
// /import JSON, byte for byte as first sent, and the profile updates. The
// field names are those of mapping.Record, so that records frozen by
// earlier versions, which encoded a whole mapping.Record, still decode.
type frozenRecord struct {
	Event             json.RawMessage
	DistinctID        string
	SetOnce           map[string]any
	Set               map[string]any
	IP                string
	TimeMissing       bool
	DroppedProperties int
}

// freeze encodes a job's record for the spool.
var errNoFrozenEvent = errors.New("frozen record has no event object")

func freeze(rec *mapping.Record, event []byte) []byte {
	dst := make([]byte, 0, len(event)+128)
	dst = append(dst, `{"Event":`...)
	dst = append(dst, event...)
	dst = append(dst, `,"DistinctID":`...)
	dst = mapping.AppendJSON(dst, rec.DistinctID)
	dst = append(dst, `,"SetOnce":`...)
	dst = mapping.AppendJSON(dst, rec.SetOnce)
	dst = append(dst, `,"Set":`...)
	dst = mapping.AppendJSON(dst, rec.Set)
	dst = append(dst, `,"IP":`...)
	dst = mapping.AppendJSON(dst, rec.IP)
	dst = append(dst, `,"TimeMissing":`...)
	dst = mapping.AppendJSON(dst, rec.TimeMissing)
	dst = append(dst, `,"DroppedProperties":`...)
	dst = mapping.AppendJSON(dst, rec.DroppedProperties)
	return append(dst, '}')
}

// thaw decodes a frozen record into the record's profile updates and the
// event's JSON. Numbers stay json.Number, so the updates are sent with the
// digits they were frozen with.
func thaw(data []byte) (*mapping.Record, []byte, error) {
	var f frozenRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		return nil, nil, err
	}
	if len(f.Event) == 0 || f.Event[0] != '{' {
		return nil, nil, errNoFrozenEvent
	}
	rec := &mapping.Record{
		DistinctID:        f.DistinctID,
		SetOnce:           f.SetOnce,
		Set:               f.Set,
		IP:                f.IP,
		TimeMissing:       f.TimeMissing,
		DroppedProperties: f.DroppedProperties,
	}
	return rec, f.Event, nil
}
