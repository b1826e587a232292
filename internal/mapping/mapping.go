// Package mapping turns a decoded Branch event and the user's identity into
// a Mixpanel event and profile updates.
//
// The mapping is deterministic: the same event and identity always produce
// the same JSON, so a retried batch is byte-identical and Mixpanel can
// deduplicate it by (distinct_id, time, $insert_id).
package mapping

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
)

// MaxProperties is the most properties Mixpanel keeps on one event.
const MaxProperties = 255

// Event is a Mixpanel event as /import takes it.
type Event struct {
	Name       string         `json:"event"`
	Properties map[string]any `json:"properties"`
}

// Record is everything the bridge sends to Mixpanel for one Branch event.
type Record struct {
	Event Event

	// JSON is Event encoded for /import, with the properties in the order
	// Map set them. It equals json.Marshal's encoding but for that order,
	// and is not stored with the record.
	JSON []byte `json:"-"`

	// DistinctID is the event's distinct_id: the user id for a known user,
	// "$device:<device id>" for an anonymous device, or "" when the event
	// has neither.
	DistinctID string

	// SetOnce and Set are the profile properties for Mixpanel's $set_once
	// and $set. Both are nil for an anonymous event, because profiles are
	// only updated for identified users.
	SetOnce map[string]any
	Set     map[string]any

	// IP is the user's IP address for profile geolocation, or "" when
	// unknown. The sender passes "0" for "" so Mixpanel never geolocates
	// the server's own address.
	IP string

	// TimeMissing reports that the webhook had no timestamp, so the event
	// carries the time of receipt and the property branch_time_missing.
	TimeMissing bool

	// DroppedProperties counts properties left out to stay within
	// MaxProperties.
	DroppedProperties int
}

// Options control the mapping. The zero value uses DefaultEventName, the
// current time for events without a timestamp, and sends IP addresses and
// device ids as they are.
type Options struct {
	EventName EventNamer

	// ReceivedAt is when the webhook arrived. It is the event time of a
	// webhook without a timestamp.
	ReceivedAt time.Time

	// IPAddresses and DeviceIDs set the treatment of the user's IP address
	// and device id. A hashed IP address is sent as branch_ip_hash, since
	// Mixpanel cannot geolocate it. HashKey keys the hash.
	IPAddresses Privacy
	DeviceIDs   Privacy
	HashKey     []byte

	// InsertID, when set, is the event's $insert_id as InsertID returned
	// it before, so the event is not hashed a second time.
	InsertID string

	// EncodeOnly leaves Record.Event.Properties nil and fills only
	// Record.JSON, which saves building the map.
	EncodeOnly bool
}

// Identifiers returns the identifiers of ev for an identity.Resolver, with
// placeholder values removed.
func Identifiers(ev *branch.Event) identity.Identifiers {
	u := &ev.User
	return identity.Identifiers{
		DeveloperIdentity: cleanID(u.DeveloperIdentity),
		IDFV:              cleanID(u.IDFV),
		IDFA:              cleanID(u.IDFA),
		AAID:              cleanID(u.AAID),
		AndroidID:         cleanID(u.AndroidID),
		BrowserID:         cleanID(u.BrowserID),
		BranchID:          cleanID(u.BranchID),
		BranchDeviceID:    cleanID(u.BranchDeviceID),
		OS:                u.OS,
	}
}

// DeviceID returns the id that Mixpanel should know the device by: the
// IDFV, else a non-zero advertising id, else the Android id, else the
// browser id. It returns "" when the event has none of them.
func DeviceID(ids identity.Identifiers) string {
	for _, id := range []string{ids.IDFV, ids.IDFA, ids.AAID, ids.AndroidID, ids.BrowserID} {
		if id != "" {
			return id
		}
	}
	return ""
}

// Map builds the Mixpanel record for ev as seen by the user in who.
func Map(ev *branch.Event, who identity.Identity, opts Options) Record {
	namer := opts.EventName
	if namer == nil {
		namer = DefaultEventName
	}
	ids := Identifiers(ev)
	userID := cleanID(who.UserID)
	deviceID := protect(opts.DeviceIDs, opts.HashKey, DeviceID(ids))
	ip := strings.TrimSpace(ev.User.IP)
	var ipHash string
	if opts.IPAddresses != Keep {
		ipHash = protect(opts.IPAddresses, opts.HashKey, ip)
		ip = ""
	}

	rec := Record{IP: ip}
	name := namer(ev.Name, IsStandardEvent(ev.Name))
	size := 24 + len(ev.Touch) + len(ev.EventData) + len(ev.CustomData) + len(ev.User.Extra) + len(ev.Extra)
	p := newProperties(name, size, opts.EncodeOnly)

	millis := ev.Timestamp
	if millis <= 0 {
		millis = receivedMillis(opts.ReceivedAt)
		rec.TimeMissing = true
	}
	p.set("time", millis)

	switch {
	case userID != "":
		rec.DistinctID = userID
		p.set("$user_id", userID)
	case deviceID != "":
		rec.DistinctID = "$device:" + deviceID
	}
	p.set("distinct_id", rec.DistinctID)
	p.setString("$device_id", deviceID)
	insertID := opts.InsertID
	if insertID == "" {
		insertID = InsertID(ev)
	}
	p.set("$insert_id", insertID)
	p.setString("ip", ip)
	p.setString("branch_ip_hash", ipHash)
	if rec.TimeMissing {
		p.set("branch_time_missing", true)
	}

	addBranchProperties(p, ev)

	rec.Event = Event{Name: name, Properties: p.values}
	rec.JSON = p.encoded()
	rec.DroppedProperties = p.dropped
	if userID != "" {
		rec.SetOnce, rec.Set = profileUpdates(ev, who, millis)
	}
	return rec
}

func receivedMillis(t time.Time) int64 {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UnixMilli()
}

// insertIDPrefix marks $insert_ids derived from a Branch event id.
const insertIDPrefix = "br-"

// InsertID returns the event's $insert_id: "br-" plus Branch's event id when
// the id fits Mixpanel's format (at most 36 letters, digits and dashes) and
// is not a placeholder such as "0", and otherwise the first 32 hex digits of a SHA-256 over the whole decoded
// event. The hash covers every field, so a redelivery of the same webhook
// gets the same id whatever the order of its keys or query parameters.
func InsertID(ev *branch.Event) string {
	if id := ev.ID; !IsPlaceholder(id) && len(insertIDPrefix)+len(id) <= 36 && isInsertIDSafe(id) {
		return insertIDPrefix + id
	}
	// encoding/json sorts map keys, so the encoding is canonical.
	data, err := json.Marshal(ev)
	if err != nil {
		// Decoded events contain only JSON values, so this cannot happen;
		// hash the fields that identify the event instead of failing.
		data = []byte(ev.Name + "\x00" + ev.ID + "\x00" + ev.User.DeveloperIdentity)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16])
}

func isInsertIDSafe(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}
