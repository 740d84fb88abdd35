package failover

import (
	"os/exec"
	"strings"
	"testing"
)

func TestRenderMetrics(t *testing.T) {
	r := Report{Node: "db-replica", Quorum: true,
		Members: []MemberHealth{{Name: "db", Healthy: true}, {Name: "app", Healthy: true, Leader: true}, {Name: "db-replica"}},
		Refusal: &Refusal{Kind: RefuseLagging, LagBytes: 2 << 20}, Counts: Counts{Renewals: 3, Fences: 1}}
	text := RenderMetrics(r)
	for _, want := range []string{
		`understudy_failover_lease_held{node="db-replica"} 0`,
		`understudy_failover_member_up{member="db-replica"} 0`,
		`understudy_failover_member_leader{member="app"} 1`,
		`understudy_failover_refusal{node="db-replica",kind="lagging"} 1`,
		`understudy_failover_refusal{node="db-replica",kind="paused"} 0`,
		`understudy_failover_refusal_lag_bytes{node="db-replica"} 2097152`,
		`understudy_failover_fences_total{node="db-replica"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %s in\n%s", want, text)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool (Debian's prometheus package) is not installed: the format is not linted")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
