package failover

import (
	"fmt"
	"sort"
	"strings"
)

// RenderMetrics is the failover part of an agent's /metrics, in the
// Prometheus text format (0.0.4), from its runner's report: whether this
// node holds the lease, whether it reaches a quorum, each member's health,
// why it refuses to promote (one series per kind, 1 for the current one),
// and the runner's counters.
func RenderMetrics(r Report) string {
	var b strings.Builder
	family := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	bit := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	family("understudy_failover_lease_held", "gauge", "1 when this node holds the failover lease and may take writes.")
	fmt.Fprintf(&b, "understudy_failover_lease_held{node=%q} %d\n", r.Node, bit(r.Holds))
	family("understudy_failover_quorum", "gauge", "1 when this node's last read of etcd reached a quorum.")
	fmt.Fprintf(&b, "understudy_failover_quorum{node=%q} %d\n", r.Node, bit(r.Quorum))
	family("understudy_failover_paused", "gauge", "1 while failover is paused.")
	fmt.Fprintf(&b, "understudy_failover_paused{node=%q} %d\n", r.Node, bit(r.Paused))
	family("understudy_failover_member_up", "gauge", "1 when the etcd member answers its status request from this node.")
	members := append([]MemberHealth(nil), r.Members...)
	sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
	for _, m := range members {
		fmt.Fprintf(&b, "understudy_failover_member_up{member=%q} %d\n", m.Name, bit(m.Healthy))
	}
	family("understudy_failover_member_leader", "gauge", "1 for the etcd member that leads etcd's raft.")
	for _, m := range members {
		fmt.Fprintf(&b, "understudy_failover_member_leader{member=%q} %d\n", m.Name, bit(m.Leader))
	}
	family("understudy_failover_refusal", "gauge", "1 for the reason this node does not take over although the lease is free (0 for the others).")
	for _, k := range []RefusalKind{RefusePaused, RefuseNoQuorum, RefuseHandover, RefusePGDown, RefuseOldTimeline, RefuseLagging, RefuseNotSync, RefuseFenced, RefuseNeverHeld} {
		fmt.Fprintf(&b, "understudy_failover_refusal{node=%q,kind=%q} %d\n", r.Node, k, bit(r.Refusal != nil && r.Refusal.Kind == k))
	}
	if r.Refusal != nil && r.Refusal.Kind == RefuseLagging {
		family("understudy_failover_refusal_lag_bytes", "gauge", "How far this standby's received WAL is behind the last published position, when that stops it from promoting.")
		fmt.Fprintf(&b, "understudy_failover_refusal_lag_bytes{node=%q} %d\n", r.Node, r.Refusal.LagBytes)
	}
	for _, c := range []struct {
		name, help string
		v          int64
	}{
		{"understudy_failover_renewals_total", "Lease renewals that went through.", r.Counts.Renewals},
		{"understudy_failover_renew_failures_total", "Lease renewals that failed.", r.Counts.RenewFailures},
		{"understudy_failover_acquired_total", "Times this node took the lease.", r.Counts.Acquired},
		{"understudy_failover_promotions_total", "Promotions by the failover loop.", r.Counts.Promotions},
		{"understudy_failover_fences_total", "Fences of this node by the failover loop.", r.Counts.Fences},
		{"understudy_failover_resigns_total", "Times this node gave the lease up.", r.Counts.Resigns},
		{"understudy_failover_rejoins_total", "Rejoins of this node by the failover loop.", r.Counts.Rejoins},
	} {
		family(c.name, "counter", c.help)
		fmt.Fprintf(&b, "%s{node=%q} %d\n", c.name, r.Node, c.v)
	}
	return b.String()
}
