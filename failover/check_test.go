package failover

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	healthy := []MemberHealth{{Name: "db", Healthy: true}, {Name: "db-replica", Healthy: true}, {Name: "app", Healthy: true, Leader: true}}
	witnessDown := []MemberHealth{{Name: "db", Healthy: true}, {Name: "db-replica", Healthy: true}, {Name: "app"}}
	codes := func(ps []Problem) string {
		var c []string
		for _, p := range ps {
			sev := "warn"
			if p.Critical {
				sev = "crit"
			}
			c = append(c, sev+":"+p.Code)
		}
		return strings.Join(c, ",")
	}
	cases := []struct {
		name        string
		reports     []Report
		unreachable []string
		want        string
	}{
		{"all well", []Report{{Node: "db", Holds: true, Quorum: true, Members: healthy}, {Node: "db-replica", Quorum: true, Members: healthy}}, nil, ""},
		{"witness down: a warning", []Report{{Node: "db", Holds: true, Quorum: true, Members: witnessDown}, {Node: "db-replica", Quorum: true, Members: witnessDown}}, nil, "warn:failover-member-down"},
		{"standby's agent down: a warning for the agent, not twice for its member", []Report{{Node: "db", Holds: true, Quorum: true, Members: []MemberHealth{{Name: "db", Healthy: true}, {Name: "db-replica"}, {Name: "app", Healthy: true}}}}, []string{"db-replica"}, "warn:failover-agent-unreachable"},
		{"no quorum: critical", []Report{{Node: "db", Members: witnessDown}, {Node: "db-replica", Members: witnessDown, Refusal: &Refusal{Kind: RefuseNoQuorum}}}, nil, "crit:failover-no-quorum,warn:failover-member-down"},
		{"a lagging standby while the primary holds: a warning", []Report{{Node: "db", Holds: true, Quorum: true, Members: healthy}, {Node: "db-replica", Quorum: true, Members: healthy, Refusal: &Refusal{Kind: RefuseLagging, Message: "x"}}}, nil, "warn:failover-refusal-lagging"},
		{"a refusing standby and no holder: critical", []Report{{Node: "db-replica", Quorum: true, Members: healthy, Refusal: &Refusal{Kind: RefuseLagging, Message: "x"}}}, []string{"db"}, "warn:failover-agent-unreachable,crit:failover-refusal-lagging"},
		{"two holders: critical", []Report{{Node: "db", Holds: true, Quorum: true, Members: healthy}, {Node: "db-replica", Holds: true, Quorum: true, Members: healthy}}, nil, "crit:failover-two-holders"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Check(c.reports, c.unreachable)
			if codes(got) != c.want {
				t.Fatalf("got %s, want %s", codes(got), c.want)
			}
			for _, p := range got {
				if p.Problem == "" || p.Fix == "" {
					t.Fatalf("a problem without words or fix: %+v", p)
				}
			}
		})
	}
}
