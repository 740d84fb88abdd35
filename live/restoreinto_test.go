package live

import (
	"strings"
	"testing"
)

func TestDecideRestoreInto(t *testing.T) {
	yes, no := true, false
	st := func(db, replica NodeStatus) *Status {
		db.Name, replica.Name = "db", "db-replica"
		return &Status{Nodes: []NodeStatus{db, replica}}
	}
	down := NodeStatus{Running: &no}
	cases := []struct {
		name string
		f    RestoreIntoFacts
		want string // "" for allowed
	}{
		{"the cluster is lost", RestoreIntoFacts{Status: st(down, down), Node: "db", DataEmpty: true}, ""},
		{"the other node is a standby without a primary", RestoreIntoFacts{Status: st(down, NodeStatus{Reachable: true, Role: RoleStandby}), Node: "db", DataEmpty: true}, ""},
		{"the node runs", RestoreIntoFacts{Status: st(NodeStatus{Reachable: true, Role: RolePrimary}, down), Node: "db", DataEmpty: true}, "db is running"},
		{"its container runs but does not answer", RestoreIntoFacts{Status: st(NodeStatus{Running: &yes}, down), Node: "db", DataEmpty: true}, "db is running"},
		{"another primary runs", RestoreIntoFacts{Status: st(down, NodeStatus{Reachable: true, Role: RolePrimary}), Node: "db", DataEmpty: true}, "second primary"},
		{"data is there", RestoreIntoFacts{Status: st(down, down), Node: "db", DataWhat: "PG_VERSION, base, global"}, "not empty (PG_VERSION"},
		{"no such node", RestoreIntoFacts{Status: st(down, down), Node: "web", DataEmpty: true}, "not a node"},
	}
	for _, tc := range cases {
		err := DecideRestoreInto(tc.f)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want a refusal saying %q", tc.name, err, tc.want)
		}
	}
}
