package branchmp

import (
	"encoding/json"
	"math"
	"net/url"
	"time"

	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/spool"
)

// DeadLetter is an event or profile update that the bridge gave up on.
type DeadLetter struct {
	ID        uint64    // identifies the dead letter for Replay and Purge
	EventName string    // Branch's event name, when the webhook decodes
	EventID   string    // Branch's event id, or "" when it had none
	InsertID  string    // the event's $insert_id
	Received  time.Time // when the webhook was accepted
	Stage     string    // decode, resolve, map, import, engage set_once, engage set, shutdown, or spool for an entry the disk spool could not read
	Reason    string    // cause of the failure
	Status    int       // last HTTP status from Mixpanel, or 0
	Body      string    // last response body from Mixpanel
	Attempts  int       // tries
	First     time.Time // first try
	Last      time.Time // when it was dead-lettered

	// Webhook is the webhook as received: the JSON body, or the query
	// string of a GET or form webhook when WebhookIsQuery is set.
	Webhook        []byte
	WebhookIsQuery bool

	// Record is the mapped Mixpanel event and profile updates as JSON, or
	// nil when the event never got that far.
	Record json.RawMessage
}

// DeadLetters returns up to limit dead letters, oldest first; a limit of 0
// or less returns all of them. They are kept in SpoolDir when it is set and
// in memory otherwise, up to MaxDeadLetters.
func (b *Bridge) DeadLetters(limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = math.MaxInt
	}
	stored, err := b.spool.DeadLetters(limit)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, len(stored))
	for i, dl := range stored {
		e := dl.Entry
		out[i] = DeadLetter{
			ID: dl.ID, InsertID: e.Key, Received: e.Received,
			Stage: dl.Stage, Reason: dl.Reason, Status: dl.Status, Body: dl.Body,
			Attempts: dl.Attempts, First: dl.First, Last: dl.Last,
			Webhook: e.Payload, WebhookIsQuery: e.Query, Record: e.Record,
		}
		if ev, err := b.decodeEntry(&e); err == nil {
			out[i].EventName, out[i].EventID = ev.Name, ev.ID
		}
	}
	return out, nil
}

// Replay queues the dead letters with the given IDs for delivery again, or
// every dead letter when no ID is given, and returns how many it queued.
// An event that was mapped before is sent with the same distinct_id, time
// and $insert_id, so replaying twice does not duplicate it in Mixpanel.
func (b *Bridge) Replay(ids ...uint64) (int, error) {
	return b.pool.Replay(ids...)
}

// Purge deletes the dead letters with the given IDs, or every dead letter
// when no ID is given, and returns how many it deleted.
func (b *Bridge) Purge(ids ...uint64) (int, error) {
	return b.spool.Purge(ids...)
}

// decodeEntry decodes a spooled webhook the way ServeHTTP decoded it.
func (b *Bridge) decodeEntry(e *spool.Entry) (*branch.Event, error) {
	if !e.Query {
		return branch.Decode(e.Payload)
	}
	query, err := url.ParseQuery(string(e.Payload))
	if err != nil {
		return nil, err
	}
	return branch.DecodeQuery(query, b.queryParams, b.ignore...)
}
