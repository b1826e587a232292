// Package logfield names the zap fields that every branchmp package logs,
// so the same fact has the same key in every line.
//
// Values that are personal data (IP addresses, device ids, user ids) and
// secrets never go into a log field.
package logfield

import (
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Field keys.
const (
	EventID     = "event_id"     // Branch's event id, or the $insert_id when there is none
	EventName   = "event_name"   // Branch's event name as sent
	Generation  = "generation"   // webhook generation: legacy, ontology or query
	BatchSize   = "batch_size"   // records in one Mixpanel request
	Stage       = "stage"        // decode, resolve, map, import, engage or shutdown
	Outcome     = "outcome"      // classified Mixpanel response
	Status      = "status"       // HTTP status code
	Attempt     = "attempt"      // 1-based attempt number
	Delay       = "delay"        // wait before the next attempt
	Reason      = "reason"       // cause of a rejected or dropped request or event
	Count       = "count"        // number of events concerned
	Method      = "method"       // HTTP method of a webhook request
	Path        = "path"         // URL path of a webhook request
	Workers     = "workers"      // worker goroutines
	Queue       = "queue"        // queue capacity
	Pending     = "pending"      // events in the spool, not yet delivered
	DeadLetters = "dead_letters" // dead letters kept
	Seq         = "seq"          // an event's position in the spool
)

// maxValueLength bounds the values of EventID and EventName in a log line.
const maxValueLength = 64

// Clip returns s cut to 64 bytes, with "..." marking a cut, so a webhook
// cannot write megabytes into the log through a field.
func Clip(s string) string {
	if len(s) <= maxValueLength {
		return s
	}
	return strings.ToValidUTF8(s[:maxValueLength], "") + "..."
}

// Sampled returns a logger that writes the first 10 lines with the same
// message each second and every 100th after that, for lines that a flood
// of webhooks could repeat.
func Sampled(log *zap.Logger) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(core zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(core, time.Second, 10, 100)
	}))
}
