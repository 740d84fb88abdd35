package live

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/understudy-dev/understudy/failover"
)

// Automatic failover in `status` and `check`: the lease as read from etcd
// (Status.Lease) and each node agent's failover report (its /status).

// failoverReport decodes an agent's failover report (nil: failover off
// there, or not readable).
func failoverReport(raw json.RawMessage) *failover.Report {
	if len(raw) == 0 {
		return nil
	}
	var r failover.Report
	if json.Unmarshal(raw, &r) != nil {
		return nil
	}
	return &r
}

// CheckFailover maps failover.Check's problems over the agents' reports to
// findings: a member down warns, no quorum and two holders are critical, a
// refusal warns (critical while nobody holds the lease). Pure.
func CheckFailover(st *Status, failoverOn bool) []Finding {
	if !failoverOn {
		return nil
	}
	var reps []failover.Report
	var unreachable []string
	for _, a := range st.Agents {
		switch {
		case a.Error != "":
			unreachable = append(unreachable, a.Node)
		case a.Failover != nil:
			reps = append(reps, *a.Failover)
		default:
			unreachable = append(unreachable, a.Node) // answers, but runs no failover loop
		}
	}
	var out []Finding
	for _, p := range failover.Check(reps, unreachable) {
		sev := Warning
		if p.Critical {
			sev = Critical
		}
		out = append(out, Finding{sev, FindingCode(p.Code), p.Node, p.Problem, p.Fix})
	}
	if l := st.Lease; l != nil && l.Error != "" {
		out = append(out, Finding{Warning, CodeLeaseUnreadable, "", "the failover lease cannot be read from here: " + firstLine(l.Error),
			"check that this machine reaches the etcd members (the agents and the witness) and holds FAILOVER_SECRET"})
	}
	return out
}

// CodeLeaseUnreadable: the operator's machine cannot read the lease.
const CodeLeaseUnreadable FindingCode = "failover-lease-unreadable"

// FailoverText renders automatic failover for `status`: the holder, the
// published position, pause and handover, each etcd member's health and
// every refusal to take over.
func FailoverText(st *Status, failoverOn bool) string {
	if !failoverOn {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nautomatic failover:\n")
	if l := st.Lease; l != nil {
		if l.Error != "" {
			fmt.Fprintf(&b, "  lease: cannot be read from here (%s)\n", firstLine(l.Error))
		} else {
			fmt.Fprintf(&b, "  lease: held by %s", orNobody(l.Holder))
			if l.PublishedBy != "" {
				fmt.Fprintf(&b, "; last position %s on timeline %d, published by %s", l.LSN, l.Timeline, l.PublishedBy)
			}
			b.WriteString("\n")
			if l.Paused {
				b.WriteString("  PAUSED: no promotion and no automatic rejoin (`understudy failover resume`)\n")
			}
			if l.Handover != "" {
				fmt.Fprintf(&b, "  a handover to %s is in progress\n", l.Handover)
			}
		}
	}
	var members []failover.MemberHealth
	for _, a := range st.Agents {
		if a.Failover == nil {
			continue
		}
		r := a.Failover
		if len(members) == 0 {
			members = r.Members
		}
		line := fmt.Sprintf("  %s's agent: ", a.Node)
		switch {
		case r.Holds:
			line += "holds the lease"
		case !r.Quorum:
			line += "no etcd quorum from here"
		default:
			line += "follows " + orNobody(r.Holder)
		}
		if r.Refusal != nil {
			line += fmt.Sprintf("; refuses to take over (%s): %s", r.Refusal.Kind, r.Refusal.Message)
		}
		if r.Error != "" {
			line += "; last error: " + firstLine(r.Error)
		}
		b.WriteString(line + "\n")
	}
	if len(members) > 0 {
		var ms []string
		for _, m := range members {
			s := m.Name + " up"
			if !m.Healthy {
				s = m.Name + " DOWN"
			}
			if m.Leader {
				s += " (etcd leader)"
			}
			ms = append(ms, s)
		}
		fmt.Fprintf(&b, "  etcd members: %s\n", strings.Join(ms, ", "))
	}
	return b.String()
}
