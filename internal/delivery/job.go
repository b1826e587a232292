package delivery

import (
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/logfield"
	"github.com/branchmp/branchmp/internal/mapping"
	"github.com/branchmp/branchmp/internal/spool"
)

// Job is one accepted webhook on its way to Mixpanel.
type Job struct {
	entry *spool.Entry
	event *branch.Event

	// record is the mapped event, frozen on first use so that every retry
	// sends the same distinct_id, time and $insert_id. Once the event is
	// encoded, record keeps only the profile updates.
	record  *mapping.Record
	encoded []byte // the event's /import JSON, encoded once
	frozen  []byte // the record as JSON, waiting to be stored in a durable spool
	cost    int64  // share of Config.InflightBytes the job holds; 0 once given back
}

// eventID returns the id that log lines use for the job: Branch's event id
// when it looks like one (letters, digits and dashes), else the dedup key,
// a hash. Any other id may be data a sender put there, so it is not logged.
func (j *Job) eventID() string {
	if j.event != nil && j.event.ID != "" && len(j.event.ID) <= 64 && isPlainID(j.event.ID) {
		return j.event.ID
	}
	return j.entry.Key
}

func (j *Job) eventName() string {
	if j.event != nil {
		return logfield.Clip(j.event.Name)
	}
	return ""
}

func isPlainID(id string) bool {
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}
