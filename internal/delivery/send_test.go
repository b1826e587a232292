package delivery

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/branchmp/branchmp/internal/mapping"
)

func TestMergeProfiles(t *testing.T) {
	job := func(user, ip string, once, set map[string]any) *Job {
		return &Job{record: &mapping.Record{DistinctID: user, IP: ip, SetOnce: once, Set: set}}
	}
	jobs := []*Job{
		job("u1", "198.51.100.1", map[string]any{"first_campaign": "a"}, map[string]any{"last_campaign": "a", "plan": "free"}),
		job("u2", "198.51.100.2", map[string]any{"first_campaign": "x"}, nil),
		job("u1", "198.51.100.3", map[string]any{"first_campaign": "b", "install": "t1"}, map[string]any{"last_campaign": "b"}),
		job("anonymous", "", nil, nil),
		job("u3", "", map[string]any{"a": "1"}, map[string]any{"b": "1"}),
		job("u3", "198.51.100.4", map[string]any{"a": "2"}, map[string]any{"b": "2"}),
		job("u3", "", nil, map[string]any{"b": "3"}),
	}
	setOnce := func(r *mapping.Record) map[string]any { return r.SetOnce }
	set := func(r *mapping.Record) map[string]any { return r.Set }

	type merged struct {
		User  string
		IP    string
		Props map[string]any
		Jobs  int
	}
	summarize := func(updates []profileUpdate) []merged {
		var out []merged
		for _, u := range updates {
			out = append(out, merged{u.profile.DistinctID, u.profile.IP, u.profile.Properties, len(u.jobs)})
		}
		return out
	}
	tests := []struct {
		name  string
		props func(*mapping.Record) map[string]any
		last  bool
		want  []merged
	}{
		{"set_once keeps first values", setOnce, false, []merged{
			{"u1", "198.51.100.1", map[string]any{"first_campaign": "a", "install": "t1"}, 2},
			{"u2", "198.51.100.2", map[string]any{"first_campaign": "x"}, 1},
			{"u3", "198.51.100.4", map[string]any{"a": "1"}, 2},
		}},
		{"set keeps last values", set, true, []merged{
			{"u1", "198.51.100.3", map[string]any{"last_campaign": "b", "plan": "free"}, 2},
			{"u3", "198.51.100.4", map[string]any{"b": "3"}, 3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summarize(mergeProfiles(jobs, tt.props, tt.last))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("mergeProfiles (-want +got):\n%s", diff)
			}
		})
	}
	// The records' own maps stay as mapped, because a replay or a dead
	// letter stores them.
	if got := jobs[0].record.SetOnce; len(got) != 1 || got["first_campaign"] != "a" {
		t.Errorf("first job's SetOnce after merging: got %v, want it unchanged", got)
	}
}
