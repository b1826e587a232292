package branch

import (
	"net/url"
	"strings"
	"testing"

	"github.com/branchmp/branchmp/internal/fixtures"
)

func BenchmarkDecode(b *testing.B) {
	for _, f := range fixtures.Bodies() {
		b.Run(f.Name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(f.Data)))
			for b.Loop() {
				if _, err := Decode(f.Data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeObject measures JSON decoding alone, with decodeObject and
// with the encoding/json decoder that it replaced.
func BenchmarkDecodeObject(b *testing.B) {
	decoders := []struct {
		name   string
		decode func([]byte) (map[string]any, error)
	}{
		{"jsontext", decodeObject},
		{"encoding-json", decodeObjectEncodingJSON},
	}
	for _, d := range decoders {
		for _, f := range fixtures.Bodies() {
			b.Run(d.name+"/"+f.Name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(f.Data)))
				for b.Loop() {
					if _, err := d.decode(f.Data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkDecodeQuery(b *testing.B) {
	params := DefaultQueryParams()
	for i, target := range fixtures.GetRequests() {
		raw := target[strings.IndexByte(target, '?')+1:]
		b.Run(string(rune('a'+i)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				q, err := url.ParseQuery(raw)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := DecodeQuery(q, params); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
