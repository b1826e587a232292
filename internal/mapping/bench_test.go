package mapping

import (
	"testing"
	"time"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/fixtures"
)

func BenchmarkMap(b *testing.B) {
	opts := Options{ReceivedAt: time.Unix(1717430400, 0)}
	for _, f := range fixtures.Bodies() {
		ev, err := branch.Decode(f.Data)
		if err != nil {
			b.Fatal(err)
		}
		who := identity.Identity{UserID: ev.User.DeveloperIdentity}
		b.Run(f.Name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Map(ev, who, opts)
			}
		})
		// The workers map with EncodeOnly.
		only := opts
		only.EncodeOnly = true
		b.Run(f.Name+"/encode-only", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Map(ev, who, only)
			}
		})
	}
}

// BenchmarkDecodeMapEncode is the work per event from webhook body to the
// JSON that /import receives: decode, then map with the encoding.
func BenchmarkDecodeMapEncode(b *testing.B) {
	opts := Options{ReceivedAt: time.Unix(1717430400, 0)}
	for _, f := range fixtures.Bodies() {
		b.Run(f.Name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(f.Data)))
			for b.Loop() {
				ev, err := branch.Decode(f.Data)
				if err != nil {
					b.Fatal(err)
				}
				// As the workers map: the event's JSON, without the map.
				only := opts
				only.EncodeOnly = true
				Map(ev, identity.Identity{UserID: ev.User.DeveloperIdentity}, only)
			}
		})
	}
}
