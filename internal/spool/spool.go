// Package spool keeps accepted webhooks from the moment they are accepted
// until Mixpanel has confirmed them, and keeps the ones given up on as dead
// letters that a person can list, replay and purge.
//
// Two implementations share the Spool interface: Memory, the default, which
// loses everything when the process exits, and Bolt, an on-disk store that
// survives crashes: a log that each Append is flushed to, and a bbolt file
// that the logged entries move into. Another engine (NATS JetStream, Redis
// Streams) can replace them behind the same interface.
package spool

import (
	"errors"
	"time"
)

// Errors returned by Append.
var (
	ErrDuplicate = errors.New("spool: duplicate event within the dedup window")
	ErrFull      = errors.New("spool: full")
	ErrClosed    = errors.New("spool: closed")
	ErrTooLarge  = errors.New("spool: entry too large")
)

// Entry is one accepted webhook.
type Entry struct {
	Seq      uint64    // assigned by Append, increasing
	Key      string    // dedup key: the event's $insert_id
	Received time.Time // when the webhook was accepted
	Query    bool      // Payload is a URL query (GET or form POST), not JSON
	Payload  []byte    // the body after decompression, or the raw query

	// Record is the mapped Mixpanel record as JSON, frozen by Freeze the
	// first time the event is mapped; nil before that.
	Record []byte

	// Value is the decoded event, kept only in memory to save decoding it
	// again. It is nil for entries read back from disk, unless a Bolt
	// spool kept it since Append (see BoltOptions.MaxValueBytes).
	Value any
}

// size estimates the bytes an entry takes in a spool, without Value.
func (e *Entry) size() int64 {
	return int64(len(e.Key) + len(e.Payload) + len(e.Record) + 64)
}

// DeadLetter is an entry that delivery gave up on, with the reason.
type DeadLetter struct {
	// ID identifies the dead letter, assigned by the spool. One entry may
	// have several dead letters, for example one per failed profile update.
	ID       uint64
	Entry    Entry
	Stage    string    // decode, resolve, map, import, engage set_once, engage set, shutdown, or spool for an unreadable entry
	Reason   string    // cause of the failure
	Status   int       // last HTTP status from Mixpanel, or 0
	Body     string    // last response body from Mixpanel
	Attempts int       // sends tried
	First    time.Time // first attempt
	Last     time.Time // when it was dead-lettered
}

// Stats describe a spool's contents.
type Stats struct {
	Pending     int   // entries not yet delivered or dead-lettered
	Bytes       int64 // estimated size of the pending entries
	DeadLetters int
	DeadBytes   int64 // estimated size of the dead letters
}

// Spool is a store of pending entries and dead letters. Implementations
// are safe for concurrent use.
type Spool interface {
	// Append stores e and sets e.Seq. It returns ErrDuplicate when an entry
	// with the same Key was appended within the dedup window, and ErrFull
	// when the spool is at its size limit.
	Append(e *Entry) error

	// Load returns up to max pending entries with Seq above after, in Seq
	// order.
	Load(after uint64, max int) ([]*Entry, error)

	// Freeze stores the mapped records of pending entries, keyed by Seq,
	// in one write.
	Freeze(records map[uint64][]byte) error

	// Done removes delivered entries.
	Done(seqs ...uint64) error

	// DeadLetter removes the entries of dls from the pending ones and keeps
	// the dead letters, assigning each an ID. When the dead letters exceed
	// their count or byte limit, the oldest are deleted.
	DeadLetter(dls ...DeadLetter) error

	// DeadLetters returns up to max dead letters, oldest first.
	DeadLetters(max int) ([]DeadLetter, error)

	// Replay appends the dead letters with the given IDs (all of them when
	// ids is empty) as new pending entries with their frozen records,
	// bypassing the dedup check, and removes them from the dead letters.
	// It returns how many it replayed.
	Replay(ids ...uint64) (int, error)

	// Purge deletes the dead letters with the given IDs (all of them when
	// ids is empty) and returns how many it deleted.
	Purge(ids ...uint64) (int, error)

	Stats() Stats

	// Probe returns an error when the spool cannot be written.
	Probe() error

	// Close releases the spool. Pending entries of a Bolt spool stay on
	// disk for the next Open.
	Close() error
}
