package mapping

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
)

// properties is an event's property map that keeps the first value set for
// each key and stops at MaxProperties. The bridge's own properties are set
// first, so webhook data can neither replace nor crowd them out.
//
// It also encodes the event as properties are set. The json field contains
// the event's JSON so far, with the properties in the order they were set.
// That order is the same for the same event, and keeping it saves sorting
// the keys.
//
// Without a values map (Options.EncodeOnly) it keeps only the set of keys,
// which saves the map's values and boxing each string value.
type properties struct {
	values  map[string]any      // nil when only encoding
	keys    map[string]struct{} // the keys set, when only encoding
	count   int
	dropped int
	json    []byte
}

// newProperties returns an empty property set for an event called name,
// sized for about size properties.
func newProperties(name string, size int, encodeOnly bool) *properties {
	size = min(size, MaxProperties)
	p := &properties{json: make([]byte, 0, 256+24*size)}
	if encodeOnly {
		p.keys = make(map[string]struct{}, size)
	} else {
		p.values = make(map[string]any, size)
	}
	p.json = append(p.json, `{"event":`...)
	p.json = appendString(p.json, name)
	p.json = append(p.json, `,"properties":{`...)
	return p
}

// encoded returns the event's JSON, closing its objects.
func (p *properties) encoded() []byte {
	return append(p.json, "}}"...)
}

func (p *properties) set(key string, value any) {
	if value == nil || !p.add(key) {
		return
	}
	if p.values != nil {
		p.values[key] = value
	}
	p.json = AppendJSON(p.json, value)
}

func (p *properties) setString(key, value string) {
	if value == "" || !p.add(key) {
		return
	}
	if p.values != nil {
		p.values[key] = value
	}
	p.json = appendString(p.json, value)
}

// add records key and appends it to the JSON, ready for its value. It
// returns false when key is already set or the event is full.
func (p *properties) add(key string) bool {
	if p.values != nil {
		if _, exists := p.values[key]; exists {
			return false
		}
	} else if _, exists := p.keys[key]; exists {
		return false
	}
	if p.count >= MaxProperties {
		p.dropped++
		return false
	}
	if p.keys != nil {
		p.keys[key] = struct{}{}
	}
	if p.count > 0 {
		p.json = append(p.json, ',')
	}
	p.count++
	p.json = appendString(p.json, key)
	p.json = append(p.json, ':')
	return true
}

// setUntrusted adds webhook data: keys that Mixpanel treats specially are
// renamed, nulls are dropped and nested objects are flattened into
// "parent.child" keys.
func (p *properties) setUntrusted(key string, value any, depth int) {
	key = safeKey(key)
	if object, ok := value.(map[string]any); ok && depth < maxNesting {
		for _, k := range sortedKeys(object) {
			p.setUntrusted(key+"."+k, object[k], depth+1)
		}
		return
	}
	p.set(key, sanitize(value, depth))
}

func (p *properties) setAllUntrusted(prefix string, m map[string]any) {
	for _, k := range sortedKeys(m) {
		p.setUntrusted(prefix+k, m[k], 0)
	}
}

// setAllUntrustedExcept is setAllUntrusted without the keys that skip
// reports, which saves copying m without them.
func (p *properties) setAllUntrustedExcept(prefix string, m map[string]any, skip func(string) bool) {
	for _, k := range sortedKeys(m) {
		if !skip(k) {
			p.setUntrusted(prefix+k, m[k], 0)
		}
	}
}

// reservedKeys are property names that Mixpanel reads as instructions
// (dedup, identity, time, auth, geolocation, dropping the event). Webhook
// data must not set them, so such keys get the prefix "branch_".
var reservedKeys = map[string]bool{
	"token": true, "$token": true, "distinct_id": true, "$distinct_id": true,
	"time": true, "$time": true, "$insert_id": true, "$user_id": true,
	"$device_id": true, "$ignore": true, "$ignore_time": true, "bucket": true,
	"$bucket": true, "ip": true, "$ip": true, "mp_lib": true,
	"$lib_version": true, "$import": true, "mp_processing_time_ms": true,
}

func safeKey(key string) string {
	if reservedKeys[key] {
		return "branch_" + strings.TrimPrefix(key, "$")
	}
	return key
}

// maxNesting bounds how deep objects are flattened and lists followed;
// deeper values become JSON strings.
const maxNesting = 4

// sanitize makes a decoded JSON value safe for Mixpanel: integers beyond
// 2^53 become strings so no digit is lost, as do numbers beyond the float64
// range. Objects inside lists are flattened, nulls inside lists are dropped.
func sanitize(value any, depth int) any {
	switch v := value.(type) {
	case json.Number:
		if s, changed := sanitizeNumber(v); changed {
			return s
		}
		return value // the same number, without boxing it again
	case []any:
		if depth >= maxNesting {
			return jsonString(v)
		}
		out := make([]any, 0, len(v))
		for _, item := range v {
			if item == nil {
				continue
			}
			out = append(out, sanitize(item, depth+1))
		}
		return out
	case map[string]any:
		if depth >= maxNesting {
			return jsonString(v)
		}
		flat := make(map[string]any, len(v))
		flatten(flat, "", v, depth)
		return flat
	}
	return value
}

// flatten copies m into dst with nested objects as "parent.child" keys.
// Keys are visited in sorted order and the first value for a key wins, so
// a literal "a.b" and a nested {"a":{"b":…}} give the same result every
// time.
func flatten(dst map[string]any, prefix string, m map[string]any, depth int) {
	for _, k := range sortedKeys(m) {
		v := m[k]
		if v == nil {
			continue
		}
		if child, ok := v.(map[string]any); ok && depth < maxNesting {
			flatten(dst, prefix+k+".", child, depth+1)
			continue
		}
		if _, exists := dst[prefix+k]; !exists {
			dst[prefix+k] = sanitize(v, depth+1)
		}
	}
}

// sanitizeNumber returns n as a string and true when it must be sent as
// one, and false when n can stay a number.
func sanitizeNumber(n json.Number) (string, bool) {
	s := n.String()
	if strings.ContainsAny(s, ".eE") {
		// A number beyond the float64 range, such as 1e400, has no
		// float64 value, so it is sent as a string too.
		_, err := strconv.ParseFloat(s, 64)
		return s, err != nil
	}
	return s, !exactInt(s)
}

// exactInt reports whether the decimal integer s is within ±2^53, without
// allocating: by its digit count, and by comparing digits when it has as
// many as 2^53.
func exactInt(s string) bool {
	digits := strings.TrimPrefix(s, "-")
	digits = strings.TrimLeft(digits, "0")
	const limit = "9007199254740992" // 2^53
	switch {
	case len(digits) < len(limit):
		return true
	case len(digits) > len(limit):
		return false
	}
	return digits <= limit
}

func jsonString(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// addBranchProperties adds the device, attribution and event data of ev.
func addBranchProperties(p *properties, ev *branch.Event) {
	u := &ev.User
	p.set("branch_event", ev.Name)
	p.setString("branch_event_id", ev.ID)
	p.setString("$os", normalizeOS(u.OS))
	p.setString("$os_version", u.OSVersion)
	p.setString("$app_version_string", u.AppVersion)
	p.setString("$model", u.Model)
	p.setString("$brand", u.Brand)
	p.setString("branch_platform", u.Platform)
	p.setString("branch_environment", u.Environment)
	p.setString("branch_sdk_version", u.SDKVersion)
	p.setString("branch_country", u.Country)
	p.setString("branch_language", u.Language)

	touch := ev.Touch
	p.setString("utm_campaign", linkString(touch, "~campaign"))
	p.setString("utm_source", linkString(touch, "~channel"))
	p.setString("utm_medium", linkString(touch, "~feature"))
	p.setAllUntrusted("", touch)
	p.setAllUntrusted("", ev.EventData)
	if items := contentItems(ev.ContentItems); len(items) > 0 {
		p.set("content_items", items)
	}
	p.setAllUntrusted("", ev.CustomData)
	p.setAllUntrustedExcept("branch_", u.Extra, isPersonalKey)
	p.setAllUntrustedExcept("branch_", ev.Extra, isPersonalOrTimestamp)
}

// personalKeys are user_data and top-level keys that identify a person or
// device. They are never copied into properties: the one device id Mixpanel
// needs goes out as $device_id, under the IPAddresses and DeviceIDs
// settings, and the rest would bypass those settings.
var personalKeys = map[string]bool{
	"ip": true, "ip_address": true, "local_ip": true, "user_agent": true,
	"idfa": true, "idfv": true, "aaid": true, "oaid": true, "android_id": true,
	"google_advertising_id": true, "hardware_id": true, "mac_address": true,
	"cross_platform_id": true, "past_cross_platform_ids": true, "prob_cross_platform_ids": true,
	"developer_identity": true, "identity": true, "identity_id": true,
	"randomized_bundle_token": true, "randomized_device_token": true,
	"device_fingerprint_id": true, "browser_fingerprint_id": true,
}

func isPersonalKey(k string) bool { return personalKeys[k] }

// isPersonalOrTimestamp also skips the top-level copy of the event time,
// which Mixpanel already has as "time".
func isPersonalOrTimestamp(k string) bool {
	return personalKeys[k] || k == "event_timestamp"
}

func contentItems(items []map[string]any) []any {
	out := make([]any, 0, len(items))
	for _, item := range items {
		flat := make(map[string]any, len(item))
		flatten(flat, "", item, 1)
		out = append(out, flat)
	}
	return out
}

// linkString returns a link data field as a string, or "" when it is
// missing, null or not a scalar.
func linkString(link map[string]any, key string) string {
	switch v := link[key].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// profileTimeLayout is the date format Mixpanel reads in profile
// properties.
const profileTimeLayout = "2006-01-02T15:04:05"

// profileUpdates returns the $set_once and $set properties for a known
// user. First-touch attribution comes from the legacy first referring link
// when present, else from the event's own touch; $set_once keeps only the
// first value Mixpanel receives.
func profileUpdates(ev *branch.Event, who identity.Identity, millis int64) (setOnce, set map[string]any) {
	setOnce = map[string]any{}
	set = map[string]any{}

	first := ev.FirstTouch
	if first == nil {
		first = ev.Touch
	}
	addAttribution(setOnce, true, first)
	if strings.EqualFold(ev.Name, "install") {
		setOnce["branch_install_time"] = time.UnixMilli(millis).UTC().Format(profileTimeLayout)
	}

	addAttribution(set, false, ev.Touch)
	for _, k := range sortedKeys(who.Properties) {
		if v := who.Properties[k]; v != nil {
			set[k] = v
		}
	}

	if len(setOnce) == 0 {
		setOnce = nil
	}
	if len(set) == 0 {
		set = nil
	}
	return setOnce, set
}

// attributionField is a link field copied to a profile, with its profile
// property names spelled out so no name is built per event.
type attributionField struct {
	link, first, last string
}

var attributionFields = []attributionField{
	{"~campaign", "branch_first_campaign", "branch_last_campaign"},
	{"~channel", "branch_first_channel", "branch_last_channel"},
	{"~feature", "branch_first_feature", "branch_last_feature"},
}

// addAttribution copies the link's campaign, channel and feature to dst,
// under their branch_first_ names when first is true and branch_last_
// names otherwise.
func addAttribution(dst map[string]any, first bool, link map[string]any) {
	for _, f := range attributionFields {
		if v := linkString(link, f.link); v != "" {
			name := f.last
			if first {
				name = f.first
			}
			dst[name] = v
		}
	}
}
