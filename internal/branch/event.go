// Package branch decodes Branch webhooks into one Event type.
//
// Branch has sent two generations of webhook bodies. Legacy bodies (2014 to
// 2018, still sent by old webhook configurations) carry a lower-case "event",
// an ISO 8601 "event_timestamp", "metadata" and "session_referring_link_data".
// Event-ontology bodies carry "name", "id", "timestamp" in milliseconds,
// "user_data", "last_attributed_touch_data", "event_data", "custom_data" and
// "content_items". Webhooks configured as GET carry the event in the query
// string, under parameter names that the app owner chose.
//
// Decoding is tolerant: ids above 2^53 keep every digit, booleans may be
// strings, objects may be missing or null, and unknown keys are kept.
package branch

import "errors"

// Generation is the shape of the webhook an Event was decoded from.
type Generation uint8

// Webhook generations.
const (
	Legacy   Generation = iota + 1 // "event", "metadata", link data
	Ontology                       // "name", "user_data", touch data
	Query                          // a GET webhook's query string
)

// String returns the generation's name as used in logs.
func (g Generation) String() string {
	switch g {
	case Legacy:
		return "legacy"
	case Ontology:
		return "ontology"
	case Query:
		return "query"
	}
	return "unknown"
}

// Errors returned by the decoders. Each means the request is not a Branch
// event and should get a 400 response.
var (
	ErrNotObject   = errors.New("branch: body is not a JSON object")
	ErrInvalidJSON = errors.New("branch: body is not valid JSON")
	ErrNoEventName = errors.New("branch: no event name (\"name\" or \"event\")")
)

// Event is one Branch event, normalised across generations.
//
// Map values are what encoding/json produces with UseNumber: string,
// json.Number, bool, nil, []any and map[string]any. Nulls are kept here and
// dropped by the mapping.
type Event struct {
	Generation Generation

	// Name is the event name as Branch sent it: "INSTALL" or "install" for
	// standard events, the app's own spelling for custom events.
	Name string

	// ID is Branch's event id in decimal, or empty when the webhook has none
	// (legacy bodies have none).
	ID string

	// Timestamp is the event time in milliseconds since the Unix epoch, or 0
	// when the webhook has none.
	Timestamp int64

	User User

	// Touch is the link data of the last attributed touch: keys such as
	// "~campaign", "~channel", "~feature", "~tags", "+url",
	// "$marketing_title" and the link's custom keys.
	Touch map[string]any

	// FirstTouch is the link data of the first referring link, sent only in
	// legacy bodies.
	FirstTouch map[string]any

	// EventData holds commerce fields such as "revenue" and "currency".
	EventData map[string]any

	// CustomData holds the app's own event properties. In legacy bodies
	// this is "metadata" without "ip".
	CustomData map[string]any

	// ContentItems are the products or content of a commerce event.
	ContentItems []map[string]any

	// Extra holds the other top-level keys, kept as sent.
	Extra map[string]any
}

// User is the user and device part of an event.
type User struct {
	DeveloperIdentity string
	IDFV              string
	IDFA              string
	AAID              string
	AndroidID         string
	BrowserID         string
	BranchID          string
	BranchDeviceID    string

	OS          string
	OSVersion   string
	Platform    string
	Environment string
	AppVersion  string
	SDKVersion  string
	Brand       string
	Model       string
	IP          string
	UserAgent   string
	Country     string
	Language    string

	// Extra holds the other user_data keys, kept as sent.
	Extra map[string]any
}
