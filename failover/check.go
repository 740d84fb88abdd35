package failover

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing `understudy check` reports about failover, from
// the agents' reports (pure; live.Check maps it to its findings).
type Problem struct {
	Critical bool   `json:"critical"` // else a warning
	Code     string `json:"code"`
	Node     string `json:"node,omitempty"`
	Problem  string `json:"problem"`
	Fix      string `json:"fix"`
}

// Check reads the database nodes' failover reports (one per agent that
// answered; a node whose agent did not is named in unreachable): a member
// down is a warning (failover still works, with no margin), no quorum is
// critical (failover would not happen), two holders are critical, and a
// standby's refusal to promote is a warning while a primary holds the
// lease and critical when none does.
func Check(reports []Report, unreachable []string) []Problem {
	var ps []Problem
	for _, n := range unreachable {
		ps = append(ps, Problem{Code: "failover-agent-unreachable", Node: n,
			Problem: fmt.Sprintf("%s's agent does not answer: its etcd member is down with it", n),
			Fix:     fmt.Sprintf("start %s's agent (it runs the etcd member); failover works while the other two members are up", n)})
	}
	down := map[string]bool{}
	quorum := false
	var holders []string
	for _, r := range reports {
		if r.Quorum {
			quorum = true
		}
		if r.Holds {
			holders = append(holders, r.Node)
		}
		for _, m := range r.Members {
			if !m.Healthy {
				down[m.Name] = true
			}
		}
	}
	if len(reports) > 0 && !quorum {
		ps = append(ps, Problem{Critical: true, Code: "failover-no-quorum",
			Problem: "no agent reaches an etcd quorum: a dead primary would not be replaced, and the primary fences itself once its lease runs out",
			Fix:     "bring etcd members back (each database server's agent and the witness on the app host); two of the three are needed"})
	}
	var names []string
	for n := range down {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if contains(unreachable, n) {
			continue
		}
		ps = append(ps, Problem{Code: "failover-member-down", Node: n,
			Problem: fmt.Sprintf("etcd member %s does not answer: failover still works, but one more member down stops it", n),
			Fix:     fmt.Sprintf("restart %s's agent or witness; a member that lost its data rejoins by itself", n)})
	}
	if len(holders) > 1 {
		ps = append(ps, Problem{Critical: true, Code: "failover-two-holders",
			Problem: "several agents report holding the lease: " + strings.Join(holders, ", "),
			Fix:     "run `understudy status`; this should be impossible, report it with the agents' logs"})
	}
	for _, r := range reports {
		if r.Refusal == nil || r.Refusal.Kind == RefuseNoQuorum {
			continue
		}
		ps = append(ps, Problem{Critical: len(holders) == 0, Code: "failover-refusal-" + string(r.Refusal.Kind), Node: r.Node,
			Problem: fmt.Sprintf("%s would not take over: %s", r.Node, r.Refusal.Message),
			Fix:     refusalFix(r.Refusal.Kind, r.Node)})
	}
	return ps
}

func refusalFix(k RefusalKind, node string) string {
	switch k {
	case RefusePaused:
		return "`understudy failover resume` when the maintenance is over"
	case RefuseLagging, RefuseNotSync:
		return "bring the old primary back (it has the missing WAL), or `understudy promote " + node + "` to accept the loss"
	case RefuseOldTimeline, RefuseFenced:
		return "`understudy rejoin " + node + "`"
	default:
		return "`understudy status` shows the nodes and the lease"
	}
}
