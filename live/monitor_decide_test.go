package live

import (
	"testing"

	"github.com/understudy-dev/understudy/pgops"
)

// The node agents' login in apply's decision.
func TestDecideApplyMonitorRole(t *testing.T) {
	c := decideCluster
	c.MonitorUser = "understudy_monitor"
	ok := pgops.MonitorRoleState{Exists: true, Login: true, PasswordMatches: true, Member: true, Functions: true}
	cases := []struct {
		name    string
		monitor *pgops.MonitorRoleState
		want    string
	}{
		{"as planned", &ok, ""},
		{"missing", &pgops.MonitorRoleState{}, "ensure-monitor@db"},
		{"password changed", &pgops.MonitorRoleState{Exists: true, Login: true, Member: true, Functions: true}, "ensure-monitor@db"},
		{"not in pg_monitor", &pgops.MonitorRoleState{Exists: true, Login: true, PasswordMatches: true, Functions: true}, "ensure-monitor@db"},
		{"a superuser", &pgops.MonitorRoleState{Exists: true, Login: true, PasswordMatches: true, Member: true, Functions: true, Superuser: true}, "ensure-monitor@db"},
		{"not read (no password here)", nil, "ensure-monitor@db"},
	}
	for _, tc := range cases {
		f := healthy()
		f.Monitor = tc.monitor
		steps, err := DecideApply(f, c)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := kinds(steps); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// A setup without agents has no such step.
	f := healthy()
	if steps, _ := DecideApply(f, decideCluster); kinds(steps) != "" {
		t.Errorf("no monitoring user in the plan: %q", kinds(steps))
	}
}
