package mapping

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/branchmp/branchmp/identity"
	"github.com/branchmp/branchmp/internal/branch"
	"github.com/branchmp/branchmp/internal/fixtures"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// receivedAt is the arrival time used by every test, so events without a
// timestamp map the same way on every run.
var receivedAt = time.Date(2024, 6, 3, 12, 0, 0, 0, time.UTC)

const goldenDir = "testdata/golden"

// goldenCase is one decoded fixture.
type goldenCase struct {
	name  string
	event *branch.Event
}

// goldenCases decodes every POST and GET fixture. GET fixtures are named
// get-1, get-2 and so on in file order.
func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	var cases []goldenCase
	for _, body := range fixtures.Bodies() {
		ev, err := branch.Decode(body.Data)
		if err != nil {
			t.Fatalf("Decode(%s): got error %v, want nil", body.Name, err)
		}
		cases = append(cases, goldenCase{name: body.Name, event: ev})
	}
	for i, target := range fixtures.GetRequests() {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatalf("url.Parse(%s): got error %v, want nil", target, err)
		}
		ev, err := branch.DecodeQuery(u.Query(), nil)
		if err != nil {
			t.Fatalf("DecodeQuery(%s): got error %v, want nil", target, err)
		}
		cases = append(cases, goldenCase{name: fmt.Sprintf("get-%d", i+1), event: ev})
	}
	return cases
}

// developerIdentity resolves ev the way the bridge's default resolver does:
// the developer identity is the user id.
func developerIdentity(t testing.TB, ev *branch.Event) identity.Identity {
	t.Helper()
	who, err := identity.DeveloperIdentity().Resolve(context.Background(), Identifiers(ev))
	if err != nil {
		t.Fatalf("Resolve: got error %v, want nil", err)
	}
	return who
}

func TestMapGolden(t *testing.T) {
	written := map[string]bool{}
	for _, gc := range goldenCases(t) {
		variants := []struct {
			suffix string
			who    identity.Identity
		}{
			{suffix: "known", who: developerIdentity(t, gc.event)},
			{suffix: "anonymous", who: identity.Identity{}},
		}
		for _, v := range variants {
			file := gc.name + "." + v.suffix + ".json"
			written[file] = true
			t.Run(file, func(t *testing.T) {
				rec := Map(gc.event, v.who, Options{ReceivedAt: receivedAt})
				checkJSON(t, rec)
				checkEncodeOnly(t, gc.event, v.who, Options{ReceivedAt: receivedAt})
				got, err := json.MarshalIndent(rec, "", "  ")
				if err != nil {
					t.Fatalf("json.MarshalIndent: got error %v, want nil", err)
				}
				got = append(got, '\n')
				checkGolden(t, filepath.Join(goldenDir, file), got)
			})
		}
	}

	// A golden file that no case writes is left over from a removed fixture.
	entries, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatalf("ReadDir: got error %v, want nil", err)
	}
	for _, e := range entries {
		if !written[e.Name()] {
			t.Errorf("golden file %s: got no case for it, want it removed", e.Name())
		}
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("MkdirAll: %v", err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("ReadFile: got error %v, want nil (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s mismatch (-want +got):\n%s", path, cmp.Diff(string(want), string(got)))
	}
}
