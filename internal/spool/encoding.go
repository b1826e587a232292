package spool

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"time"
)

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// encodeTime encodes t so that byte order is time order.
func encodeTime(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano()))
}

func decodeTime(v []byte) time.Time {
	if len(v) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v)))
}

// entryVersion is the first byte of an encoded entry.
const entryVersion = 1

// encodeEntry encodes an entry as: version, received time, flags, then the
// key, payload and record, each prefixed with its length as a uvarint.
func encodeEntry(e *Entry) []byte {
	buf := make([]byte, 0, 1+8+1+3*binary.MaxVarintLen64+len(e.Key)+len(e.Payload)+len(e.Record))
	buf = append(buf, entryVersion)
	buf = append(buf, encodeTime(e.Received)...)
	var flags byte
	if e.Query {
		flags |= 1
	}
	buf = append(buf, flags)
	for _, field := range [][]byte{[]byte(e.Key), e.Payload, e.Record} {
		buf = binary.AppendUvarint(buf, uint64(len(field)))
		buf = append(buf, field...)
	}
	return buf
}

var errCorruptEntry = errors.New("spool: corrupt entry")

// decodeEntry decodes an entry that encodeEntry encoded. The entry's
// fields are copies when copyFields is set, and slices of v otherwise.
func decodeEntry(v []byte, copyFields bool) (*Entry, error) {
	if len(v) < 10 || v[0] != entryVersion {
		return nil, errCorruptEntry
	}
	e := &Entry{Received: decodeTime(v[1:9]), Query: v[9]&1 != 0}
	rest := v[10:]
	var fields [3][]byte
	for i := range fields {
		n, size := binary.Uvarint(rest)
		if size <= 0 || uint64(len(rest)-size) < n {
			return nil, errCorruptEntry
		}
		fields[i] = rest[size : size+int(n) : size+int(n)]
		if copyFields {
			fields[i] = slices.Clone(fields[i])
		}
		rest = rest[size+int(n):]
	}
	e.Key = string(fields[0])
	e.Payload = fields[1]
	if len(fields[2]) > 0 {
		e.Record = fields[2]
	}
	return e, nil
}

// storedDeadLetter is a dead letter as JSON, readable with any bbolt
// browser.
type storedDeadLetter struct {
	Seq      uint64          `json:"seq"`
	Key      string          `json:"key"`
	Received time.Time       `json:"received"`
	Query    bool            `json:"query"`
	Payload  []byte          `json:"payload"`
	Record   json.RawMessage `json:"record,omitempty"`
	Stage    string          `json:"stage"`
	Reason   string          `json:"reason"`
	Status   int             `json:"status"`
	Body     string          `json:"body"`
	Attempts int             `json:"attempts"`
	First    time.Time       `json:"first"`
	Last     time.Time       `json:"last"`
}

func toStoredDeadLetter(dl DeadLetter) storedDeadLetter {
	e := dl.Entry
	return storedDeadLetter{
		Seq: e.Seq, Key: e.Key, Received: e.Received, Query: e.Query,
		Payload: e.Payload, Record: e.Record,
		Stage: dl.Stage, Reason: dl.Reason, Status: dl.Status, Body: dl.Body,
		Attempts: dl.Attempts, First: dl.First, Last: dl.Last,
	}
}

func (s storedDeadLetter) deadLetter() DeadLetter {
	var record []byte
	if len(s.Record) > 0 {
		record = []byte(s.Record)
	}
	return DeadLetter{
		Entry: Entry{
			Seq: s.Seq, Key: s.Key, Received: s.Received, Query: s.Query,
			Payload: s.Payload, Record: record,
		},
		Stage: s.Stage, Reason: s.Reason, Status: s.Status, Body: s.Body,
		Attempts: s.Attempts, First: s.First, Last: s.Last,
	}
}
