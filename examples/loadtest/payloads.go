package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/branchmp/branchmp/internal/fixtures"
)

// idBase makes every event id 19 decimal digits long: idBase plus the
// request's sequence number. The bridge's $insert_id is then "br-" and
// the id, and no two requests of a run share it, so deduplication drops
// none of them.
const idBase = 1_000_000_000_000_000_000

// idPrefix starts every template; the 19 digits of the id follow it.
const idPrefix = `{"id":"`

// payloads are the bundled POST webhook bodies, each rewritten to start
// with an "id" field whose digits are replaced per request.
type payloads struct {
	templates [][]byte
}

func newPayloads() (*payloads, error) {
	var p payloads
	for _, b := range fixtures.Bodies() {
		tpl, err := idTemplate(b.Data)
		if err != nil {
			return nil, fmt.Errorf("fixture %s: %w", b.Name, err)
		}
		p.templates = append(p.templates, tpl)
	}
	if len(p.templates) == 0 {
		return nil, fmt.Errorf("no bundled webhook bodies")
	}
	return &p, nil
}

// idTemplate re-encodes a body without its "id" field, and puts a
// placeholder id first. Numbers keep their digits.
func idTemplate(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var fields map[string]any
	if err := dec.Decode(&fields); err != nil {
		return nil, err
	}
	delete(fields, "id")
	rest, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	tpl := []byte(idPrefix + eventID(0) + `"`)
	if len(rest) > 2 { // more than "{}"
		tpl = append(tpl, ',')
	}
	return append(tpl, rest[1:]...), nil
}

// body returns a new copy of a body for request seq, rotating through the
// fixtures.
func (p *payloads) body(seq uint64) []byte {
	tpl := p.templates[seq%uint64(len(p.templates))]
	out := bytes.Clone(tpl)
	copy(out[len(idPrefix):], eventID(seq))
	return out
}

// eventID returns the Branch event id of request seq.
func eventID(seq uint64) string {
	return strconv.FormatUint(idBase+seq, 10)
}

// insertID returns the $insert_id that every server under test sends for
// request seq.
func insertID(seq uint64) string {
	return "br-" + eventID(seq)
}
