package delivery

import (
	"time"

	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/mapping"
)

// Job is one accepted webhook on its way to Mixpanel.
type Job struct {
	Event      *branch.Event
	ReceivedAt time.Time

	// record is the mapped event, frozen on first use so that every retry
	// sends the same distinct_id, time and $insert_id.
	record *mapping.Record
	size   int // bytes of the record's event JSON
}

// NewJob returns a job for an event received at receivedAt.
func NewJob(ev *branch.Event, receivedAt time.Time) *Job {
	return &Job{Event: ev, ReceivedAt: receivedAt}
}

// DeadLetter is an event that the pool gave up on, kept so that a person can
// see why.
type DeadLetter struct {
	Event    *branch.Event   // the decoded webhook
	Record   *mapping.Record // the mapped Mixpanel payload, nil if mapping never ran
	Stage    string          // "resolve", "import", "engage" or "shutdown"
	Reason   string
	Status   int    // last HTTP status, or 0
	Body     string // last response body, or ""
	Attempts int
	First    time.Time // first attempt
	Last     time.Time // when it was dead-lettered
}
