package mapping

import "strings"

// standardEvents are Branch's standard event names, upper case as the event
// ontology sends them. Legacy bodies send the first ones in lower case.
var standardEvents = map[string]bool{
	"INSTALL": true, "OPEN": true, "REINSTALL": true, "CLICK": true,
	"WEB_SESSION_START": true, "WEB_TO_APP_AUTO_REDIRECT": true, "PAGEVIEW": true,
	"ADD_TO_CART": true, "ADD_TO_WISHLIST": true, "VIEW_CART": true,
	"INITIATE_PURCHASE": true, "ADD_PAYMENT_INFO": true, "PURCHASE": true,
	"SPEND_CREDITS": true, "SUBSCRIBE": true, "START_TRIAL": true,
	"CLICK_AD": true, "VIEW_AD": true, "RESERVE": true,
	"SEARCH": true, "VIEW_ITEM": true, "VIEW_ITEMS": true, "RATE": true,
	"SHARE": true, "INITIATE_STREAM": true, "COMPLETE_STREAM": true,
	"COMPLETE_REGISTRATION": true, "COMPLETE_TUTORIAL": true,
	"ACHIEVE_LEVEL": true, "UNLOCK_ACHIEVEMENT": true, "INVITE": true,
	"LOGIN": true, "OPT_IN": true, "OPT_OUT": true,
	"REFERRED SESSION": true,
}

// IsStandardEvent reports whether name is one of Branch's standard events,
// in either generation's spelling.
func IsStandardEvent(name string) bool {
	return standardEvents[strings.ToUpper(name)]
}

// EventNamer returns the Mixpanel event name for a Branch event name.
// standard reports whether Branch defines the event.
type EventNamer func(name string, standard bool) string

// DefaultEventName names standard events "[Branch] " plus the name in lower
// case with spaces for underscores ("[Branch] install", "[Branch] add to
// cart"), the convention of Branch's own Mixpanel export. Custom events keep
// the app's spelling after the same prefix ("[Branch] Signed Up").
func DefaultEventName(name string, standard bool) string {
	if !standard {
		return "[Branch] " + name
	}
	return "[Branch] " + strings.ToLower(strings.ReplaceAll(name, "_", " "))
}

// placeholders are values that mean "no id". Mixpanel rejects events whose
// distinct_id or $insert_id is one of them, and SDKs send several of them
// when an id is not available.
var placeholders = map[string]bool{
	"": true, "null": true, "undefined": true, "nil": true, "<nil>": true,
	"none": true, "n/a": true, "na": true, "anon": true, "anonymous": true,
	"unknown": true, "true": true, "false": true, "-1": true,
	"[]": true, "{}": true, "lmy47d": true, "$device:": true,
}

// IsPlaceholder reports whether id is a placeholder rather than an id: one
// of Mixpanel's rejected values (compared without case) or a string of only
// zeros and dashes, such as an all-zero advertising id.
func IsPlaceholder(id string) bool {
	id = strings.TrimSpace(id)
	if placeholders[strings.ToLower(id)] {
		return true
	}
	return strings.Trim(id, "0-") == ""
}

// cleanID returns id, or "" when it is a placeholder.
func cleanID(id string) string {
	id = strings.TrimSpace(id)
	if IsPlaceholder(id) {
		return ""
	}
	return id
}

// normalizeOS returns the operating system in Mixpanel's spelling, so
// Branch's events group with those of Mixpanel's SDKs.
func normalizeOS(os string) string {
	switch strings.ToUpper(os) {
	case "IOS":
		return "iOS"
	case "ANDROID":
		return "Android"
	case "IPADOS":
		return "iPadOS"
	case "MAC_OS", "MACOS", "MAC OS X", "OS X":
		return "Mac OS X"
	case "WINDOWS":
		return "Windows"
	case "LINUX":
		return "Linux"
	case "CHROME_OS", "CHROME OS":
		return "Chrome OS"
	}
	return os
}
