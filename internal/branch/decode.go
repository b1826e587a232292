package branch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// Decode decodes a POST webhook body of either generation. It returns
// ErrInvalidJSON, ErrNotObject or ErrNoEventName when the body is not a
// Branch event.
func Decode(body []byte) (*Event, error) {
	top, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	return fromObject(top)
}

// fromObject detects the generation of a decoded body and extracts the
// event. A body with "name" is an ontology body, one with "event" a legacy
// body.
func fromObject(top map[string]any) (*Event, error) {
	if name := strings.TrimSpace(stringOf(top["name"])); name != "" {
		return fromOntology(top, name), nil
	}
	if name := strings.TrimSpace(stringOf(top["event"])); name != "" {
		return fromLegacy(top, name), nil
	}
	return nil, ErrNoEventName
}

// decodeObject decodes a body that must be one JSON object, with optional
// whitespace around it. It returns the values that encoding/json's Decoder
// with UseNumber returns for a map[string]any, and accepts and rejects the
// same bodies.
func decodeObject(body []byte) (map[string]any, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrInvalidJSON)
	}
	if trimmed[0] != '{' {
		if json.Valid(trimmed) {
			return nil, ErrNotObject
		}
		return nil, ErrInvalidJSON
	}

	// The untrimmed body keeps the offsets in error messages true.
	top, err := decodeTree(body)
	var syntax *jsontext.SyntacticError
	switch {
	case errors.As(err, &syntax):
		// The error's JSON pointer quotes the body's object names, which
		// the sender chose, so the message that reaches logs leaves it out.
		return nil, fmt.Errorf("%w: %v after offset %d", ErrInvalidJSON, syntax.Err, syntax.ByteOffset)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	return top, nil
}

// ontologyUserKeys maps user_data keys to the User field they fill.
var ontologyUserKeys = map[string]func(*User) *string{
	"developer_identity":      func(u *User) *string { return &u.DeveloperIdentity },
	"idfv":                    func(u *User) *string { return &u.IDFV },
	"idfa":                    func(u *User) *string { return &u.IDFA },
	"aaid":                    func(u *User) *string { return &u.AAID },
	"android_id":              func(u *User) *string { return &u.AndroidID },
	"browser_fingerprint_id":  func(u *User) *string { return &u.BrowserID },
	"randomized_bundle_token": func(u *User) *string { return &u.BranchID },
	"identity_id":             func(u *User) *string { return &u.BranchID },
	"randomized_device_token": func(u *User) *string { return &u.BranchDeviceID },
	"device_fingerprint_id":   func(u *User) *string { return &u.BranchDeviceID },
	"os":                      func(u *User) *string { return &u.OS },
	"os_version":              func(u *User) *string { return &u.OSVersion },
	"platform":                func(u *User) *string { return &u.Platform },
	"environment":             func(u *User) *string { return &u.Environment },
	"app_version":             func(u *User) *string { return &u.AppVersion },
	"sdk_version":             func(u *User) *string { return &u.SDKVersion },
	"brand":                   func(u *User) *string { return &u.Brand },
	"model":                   func(u *User) *string { return &u.Model },
	"ip":                      func(u *User) *string { return &u.IP },
	"user_agent":              func(u *User) *string { return &u.UserAgent },
	"country":                 func(u *User) *string { return &u.Country },
	"language":                func(u *User) *string { return &u.Language },
}

// formerUserKeys are user_data keys that Branch has renamed:
// identity_id is now randomized_bundle_token and device_fingerprint_id is
// now randomized_device_token.
var formerUserKeys = map[string]bool{
	"identity_id":           true,
	"device_fingerprint_id": true,
}

func fromOntology(top map[string]any, name string) *Event {
	ev := &Event{
		Generation:   Ontology,
		Name:         name,
		ID:           strings.TrimSpace(stringOf(top["id"])),
		Timestamp:    millisOf(top["timestamp"]),
		Touch:        objectOf(top["last_attributed_touch_data"]),
		EventData:    objectOf(top["event_data"]),
		CustomData:   objectOf(top["custom_data"]),
		ContentItems: objectsOf(top["content_items"]),
	}
	if ev.Timestamp == 0 {
		ev.Timestamp = millisOf(top["event_timestamp"])
	}
	// The decoded maps belong to this call, so the keys that are not
	// fields stay in them and they become the Extra maps: copying them
	// cost two maps per event.
	user := objectOf(top["user_data"])
	for k, v := range user {
		field, ok := ontologyUserKeys[k]
		if !ok {
			normalizeFlagIn(user, k, v)
			continue
		}
		if !formerUserKeys[k] {
			*field(&ev.User) = strings.TrimSpace(stringOf(v))
			delete(user, k) // deleting while ranging over a map is safe
		}
	}
	// A former key fills its field only when the current key left it empty,
	// so a body that carries both decodes the same way every time.
	for k := range formerUserKeys {
		setIfEmpty(ontologyUserKeys[k](&ev.User), strings.TrimSpace(stringOf(user[k])))
		delete(user, k)
	}
	ev.User.Extra = nilIfEmpty(user)

	for k, v := range top {
		switch k {
		case "name", "id", "timestamp", "user_data", "last_attributed_touch_data",
			"event_data", "custom_data", "content_items":
			delete(top, k)
		default:
			normalizeFlagIn(top, k, v)
		}
	}
	ev.Extra = nilIfEmpty(top)
	return ev
}

// normalizeFlagIn replaces m[k], whose value is v, with its normalized
// flag value. Replacing the value of an existing key is safe while ranging
// over m.
func normalizeFlagIn(m map[string]any, k string, v any) {
	if flagKeys[k] {
		m[k] = normalizeFlag(k, v)
	}
}

func nilIfEmpty(m map[string]any) map[string]any {
	if len(m) == 0 {
		return nil
	}
	return m
}

// flagKeys are fields that Branch documents as booleans but sometimes
// sends as the strings "true" and "false".
var flagKeys = map[string]bool{
	"attributed": true, "deep_linked": true, "first_event_for_user": true,
	"existing_user": true, "referred": true, "reinstall": true,
	"limit_ad_tracking": true, "is_test_event": true,
}

// normalizeFlag returns v as a bool when k is a flag field and v is a
// boolean in any accepted spelling, and v unchanged otherwise.
func normalizeFlag(k string, v any) any {
	if !flagKeys[k] {
		return v
	}
	if b, ok := BoolOf(v); ok {
		return b
	}
	return v
}

// legacyTopKeys maps legacy top-level keys to the User field they fill.
var legacyTopKeys = map[string]func(*User) *string{
	"identity":               func(u *User) *string { return &u.DeveloperIdentity },
	"google_advertising_id":  func(u *User) *string { return &u.AAID },
	"idfa":                   func(u *User) *string { return &u.IDFA },
	"idfv":                   func(u *User) *string { return &u.IDFV },
	"android_id":             func(u *User) *string { return &u.AndroidID },
	"browser_fingerprint_id": func(u *User) *string { return &u.BrowserID },
	"identity_id":            func(u *User) *string { return &u.BranchID },
	"device_fingerprint_id":  func(u *User) *string { return &u.BranchDeviceID },
	"os":                     func(u *User) *string { return &u.OS },
	"os_version":             func(u *User) *string { return &u.OSVersion },
	"app_version":            func(u *User) *string { return &u.AppVersion },
	"sdk":                    func(u *User) *string { return &u.SDKVersion },
	"brand":                  func(u *User) *string { return &u.Brand },
	"model":                  func(u *User) *string { return &u.Model },
	"user_agent":             func(u *User) *string { return &u.UserAgent },
	"ip":                     func(u *User) *string { return &u.IP },
}

func fromLegacy(top map[string]any, name string) *Event {
	ev := &Event{
		Generation: Legacy,
		Name:       name,
		ID:         strings.TrimSpace(stringOf(top["id"])),
		Timestamp:  millisOf(top["event_timestamp"]),
		Touch:      legacyLinkData(objectOf(top["session_referring_link_data"])),
		FirstTouch: legacyLinkData(objectOf(top["first_referring_link_data"])),
	}
	if ev.Timestamp == 0 {
		ev.Timestamp = millisOf(top["timestamp"])
	}

	var hardwareID, metadataIP string
	for k, v := range top {
		if field, ok := legacyTopKeys[k]; ok {
			*field(&ev.User) = strings.TrimSpace(stringOf(v))
			continue
		}
		switch k {
		case "event", "id", "event_timestamp", "timestamp",
			"session_referring_link_data", "first_referring_link_data":
		case "hardware_id":
			hardwareID = strings.TrimSpace(stringOf(v))
		case "metadata":
			for mk, mv := range objectOf(v) {
				if mk == "ip" {
					metadataIP = strings.TrimSpace(stringOf(mv))
					continue
				}
				ev.CustomData = put(ev.CustomData, mk, normalizeFlag(mk, mv))
			}
		default:
			ev.Extra = put(ev.Extra, k, normalizeFlag(k, v))
		}
	}

	if metadataIP != "" {
		ev.User.IP = metadataIP
	}

	// Legacy bodies name the device id hardware_id: the IDFV (or IDFA) on
	// iOS and the Android id on Android.
	if hardwareID != "" {
		if strings.EqualFold(ev.User.OS, "ios") {
			setIfEmpty(&ev.User.IDFV, hardwareID)
		} else {
			setIfEmpty(&ev.User.AndroidID, hardwareID)
		}
	}
	return ev
}

// legacyLinkFields maps the link-level fields of legacy link data to the
// link data keys that current bodies use.
var legacyLinkFields = map[string]string{
	"channel":   "~channel",
	"campaign":  "~campaign",
	"feature":   "~feature",
	"stage":     "~stage",
	"tags":      "~tags",
	"alias":     "~alias",
	"branch_id": "~id",
}

// legacyLinkData merges a legacy link object into one map: the link's "data"
// object, plus link-level fields that "data" does not already carry. Other
// link-level fields (dates, state, app id) describe the link, not the event,
// and are left out.
func legacyLinkData(link map[string]any) map[string]any {
	if link == nil {
		return nil
	}
	out := make(map[string]any, len(link))
	for k, v := range objectOf(link["data"]) {
		out[k] = v
	}
	for field, key := range legacyLinkFields {
		v, ok := link[field]
		if !ok || v == nil {
			continue
		}
		if _, exists := out[key]; !exists {
			out[key] = v
		}
	}
	return out
}

func objectsOf(v any) []map[string]any {
	list, _ := v.([]any)
	var out []map[string]any
	for _, item := range list {
		if m := objectOf(item); m != nil {
			out = append(out, m)
		}
	}
	return out
}

func put(m map[string]any, k string, v any) map[string]any {
	if m == nil {
		m = make(map[string]any)
	}
	m[k] = v
	return m
}

func setIfEmpty(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}
