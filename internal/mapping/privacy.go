package mapping

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// Privacy is the treatment of a personal identifier before it is sent.
type Privacy uint8

// Privacy settings.
const (
	Keep Privacy = iota // send it as it is
	Drop                // leave it out
	Hash                // send its keyed hash
)

// hashedIDLength is the number of hex digits kept of a hashed id: 128 bits,
// enough that distinct ids do not collide in practice.
const hashedIDLength = 32

// protect applies p to value, hashing with key.
func protect(p Privacy, key []byte, value string) string {
	switch {
	case value == "":
		return ""
	case p == Drop:
		return ""
	case p == Hash:
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(value))
		return hex.EncodeToString(mac.Sum(nil))[:hashedIDLength]
	}
	return value
}
