package delivery

import (
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/mapping"
	"github.com/branchmp/branchmp/internal/spool"
)

// Job is one accepted webhook on its way to Mixpanel.
type Job struct {
	entry *spool.Entry
	event *branch.Event

	// record is the mapped event, frozen on first use so that every retry
	// sends the same distinct_id, time and $insert_id.
	record *mapping.Record
	size   int // bytes of the record's event JSON
}

// eventID returns the id that log lines use for the job: Branch's event id,
// else the dedup key.
func (j *Job) eventID() string {
	if j.event != nil && j.event.ID != "" {
		return j.event.ID
	}
	return j.entry.Key
}

func (j *Job) eventName() string {
	if j.event != nil {
		return j.event.Name
	}
	return ""
}
