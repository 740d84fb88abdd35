package live

import (
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/pgops"
)

// check's major findings on constructed readings: images that disagree
// (both named, and the fix), a server running another major than its image.
func TestMajorFindings(t *testing.T) {
	c := decideCluster
	c.Major = 17
	running := func(num string) *pgops.Facts {
		return &pgops.Facts{Settings: map[string]string{"server_version_num": num}}
	}
	st := &Status{Primary: "db", Nodes: []NodeStatus{
		{Name: "db", Reachable: true, Role: RolePrimary, Image: &NodeImage{Ref: "postgres:17", Major: 17}, Facts: running("170012")},
		{Name: "db-replica", Role: RoleDown, Image: &NodeImage{Ref: "postgres:18", Major: 18}},
	}}
	fs := MajorFindings(st, c)
	if len(fs) != 1 || fs[0].Code != CodeImageMajor || fs[0].Severity != Critical || fs[0].Node != "db-replica" {
		t.Fatalf("findings %+v", fs)
	}
	for _, want := range []string{"db-replica runs the image postgres:18 (PostgreSQL 18)", "db runs the image postgres:17 (PostgreSQL 17)"} {
		if !strings.Contains(fs[0].Problem, want) {
			t.Errorf("the problem lacks %q: %s", want, fs[0].Problem)
		}
	}
	if !strings.Contains(fs[0].Fix, "give db-replica the image postgres:17, as db has") {
		t.Errorf("the fix: %s", fs[0].Fix)
	}
	// check's own list has it too, with the rest of its findings.
	if got := Check(st, c, DefaultThresholds); !hasCode(got, CodeImageMajor) {
		t.Errorf("Check lacks %s: %+v", CodeImageMajor, got)
	}

	// The image was changed under a running node: it still runs 17.
	st.Nodes[1] = NodeStatus{Name: "db-replica", Reachable: true, Role: RoleStandby, Image: &NodeImage{Ref: "postgres:17", Major: 17}, Facts: running("170012")}
	st.Nodes[0].Image = &NodeImage{Ref: "/opt/pg18/bin", Major: 18, Programs: true}
	fs = MajorFindings(st, c)
	var run *Finding
	for i := range fs {
		if fs[i].Code == CodeRunningMajor {
			run = &fs[i]
		}
	}
	if run == nil || run.Node != "db" || !strings.Contains(run.Problem, "db runs PostgreSQL 17, but it is started from the programs in /opt/pg18/bin, which is PostgreSQL 18") {
		t.Fatalf("findings %+v", fs)
	}
	// Same majors, and references that do not say theirs: nothing.
	st.Nodes[0].Image = &NodeImage{Ref: "postgres:17.2", Major: 17}
	st.Nodes[1].Image = &NodeImage{Ref: "shop/db:latest"}
	if fs := MajorFindings(st, c); len(fs) != 0 {
		t.Errorf("findings on agreeing majors: %+v", fs)
	}
}

func hasCode(fs []Finding, code FindingCode) bool {
	for _, f := range fs {
		if f.Code == code {
			return true
		}
	}
	return false
}
