package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func primaryView(tl pgops.Timeline) NodeView {
	return NodeView{Node: "db", At: t0.Add(-50 * time.Millisecond), Role: RolePrimary, SystemID: "7", Timeline: tl, WriteLSN: 0x3000060, ValidFor: 2100 * time.Millisecond, FilesAt: t0.Add(-time.Second)}
}

func standbyView(tl pgops.Timeline) NodeView {
	return NodeView{Node: "db-replica", At: t0.Add(-50 * time.Millisecond), Role: RoleStandby, SystemID: "7", Timeline: tl,
		ReceiveLSN: 0x3000060, ReplayLSN: 0x3000000, Receiver: "streaming", Sender: "10.0.1.2:5432", ValidFor: 2100 * time.Millisecond}
}

func peer(v NodeView, fetched time.Time) PeerView {
	return PeerView{Node: v.Node, Fetched: fetched, View: &v}
}

// TestAnswerPrimary is every rule of /primary, case by case. "Never two
// 200s" rests on the cases where a peer is a primary too.
func TestAnswerPrimary(t *testing.T) {
	fresh := t0.Add(-300 * time.Millisecond)
	otherPrimary := func(tl pgops.Timeline) NodeView {
		v := primaryView(tl)
		v.Node = "db-replica"
		return v
	}
	cases := []struct {
		name   string
		self   NodeView
		peers  []PeerView
		lease  LeaseState
		ok     bool
		reason string // a part of the reason
	}{
		{"a primary, peers a streaming standby", primaryView(1), []PeerView{peer(standbyView(1), fresh)}, LeaseState{}, true, "the primary, on timeline 1"},
		{"a primary whose only peer cannot be reached", primaryView(1), []PeerView{{Node: "db-replica", Error: "no answer from its agent"}}, LeaseState{}, true, "the primary"},
		{"a primary with no peers configured", primaryView(3), nil, LeaseState{}, true, "timeline 3"},
		{"a standby", standbyView(1), []PeerView{peer(primaryView(1), fresh)}, LeaseState{}, false, "is a standby, not the primary"},
		{"down: refused", NodeView{Node: "db", At: t0.Add(-10 * time.Millisecond), Role: RoleDown, Error: "connection refused", ValidFor: time.Second}, nil, LeaseState{}, false, "not answering: connection refused"},
		{"down: no answer within the deadline", NodeView{Node: "db", At: t0.Add(-10 * time.Millisecond), Role: RoleDown, Error: "no answer within 1s", ValidFor: time.Second}, nil, LeaseState{}, false, "no answer within 1s"},
		{"never observed", NodeView{Node: "db", Role: RoleDown}, nil, LeaseState{}, false, "not observed yet"},
		{"observation too old: the loop is stuck", func() NodeView { v := primaryView(1); v.At = t0.Add(-3 * time.Second); return v }(), nil, LeaseState{}, false, "old (limit 2.1s)"},
		{"fenced primary", func() NodeView { v := primaryView(2); v.Fenced = true; return v }(), nil, LeaseState{}, false, "fenced"},
		{"a primary whose fence note is not read yet", func() NodeView { v := primaryView(1); v.FilesAt = time.Time{}; return v }(), nil, LeaseState{}, false, "not been read yet"},
		{"draining for a switchover", func() NodeView { v := primaryView(1); v.Draining = true; return v }(), []PeerView{peer(standbyView(1), fresh)}, LeaseState{}, false, "switchover is draining"},
		{"a peer is a primary on a newer timeline", primaryView(1), []PeerView{peer(otherPrimary(2), fresh)}, LeaseState{}, false, "newer timeline (2 > 1)"},
		{"a peer is a primary on an older timeline", primaryView(2), []PeerView{peer(otherPrimary(1), fresh)}, LeaseState{}, true, "the primary, on timeline 2"},
		{"a peer is a primary on the same timeline", primaryView(2), []PeerView{peer(otherPrimary(2), fresh)}, LeaseState{}, false, "also a primary on timeline 2"},
		{"a fenced peer primary on the same timeline is no rival", primaryView(2), []PeerView{peer(func() NodeView { v := otherPrimary(2); v.Fenced = true; return v }(), fresh)}, LeaseState{}, true, "the primary"},
		{"a newer primary seen long ago is no evidence", primaryView(1), []PeerView{peer(otherPrimary(2), t0.Add(-PeerFresh-time.Second))}, LeaseState{}, true, "the primary"},
		{"a newer primary of another cluster is no rival", primaryView(1), []PeerView{peer(func() NodeView { v := otherPrimary(5); v.SystemID = "8"; return v }(), fresh)}, LeaseState{}, true, "the primary"},
		{"a peer that is down is no evidence", primaryView(1), []PeerView{peer(NodeView{Node: "db-replica", Role: RoleDown, Error: "refused"}, fresh)}, LeaseState{}, true, "the primary"},
		{"failover on, this node holds the lease", primaryView(1), nil, LeaseState{Failover: true, Holder: "db"}, true, "the primary"},
		{"failover on, another node holds the lease", primaryView(1), nil, LeaseState{Failover: true, Holder: "db-replica"}, false, "lease is held by db-replica"},
		{"failover on, nobody holds the lease", primaryView(1), nil, LeaseState{Failover: true}, false, "lease is held by no node"},
		{"failover off: the lease holder does not matter", primaryView(1), nil, LeaseState{Holder: "db-replica"}, true, "the primary"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := Answer(c.self, c.peers, c.lease, t0)
			if a.Primary.OK != c.ok || !strings.Contains(a.Primary.Reason, c.reason) {
				t.Errorf("/primary: ok=%v %q; want ok=%v and a reason containing %q", a.Primary.OK, a.Primary.Reason, c.ok, c.reason)
			}
		})
	}
}

// TestAnswerNeverTwoPrimaries runs both nodes' answers over every pair
// of primary timelines and fences, each seeing the other: at most one 200.
func TestAnswerNeverTwoPrimaries(t *testing.T) {
	fetched := t0.Add(-100 * time.Millisecond)
	for tlA := pgops.Timeline(1); tlA <= 3; tlA++ {
		for tlB := pgops.Timeline(1); tlB <= 3; tlB++ {
			for _, fenceA := range []bool{false, true} {
				for _, fenceB := range []bool{false, true} {
					a, b := primaryView(tlA), primaryView(tlB)
					b.Node = "db-replica"
					a.Fenced, b.Fenced = fenceA, fenceB
					ansA := Answer(a, []PeerView{peer(b, fetched)}, LeaseState{}, t0)
					ansB := Answer(b, []PeerView{peer(a, fetched)}, LeaseState{}, t0)
					if ansA.Primary.OK && ansB.Primary.OK {
						t.Errorf("timelines %d/%d fenced %v/%v: both answer 200 (%q, %q)", tlA, tlB, fenceA, fenceB, ansA.Primary.Reason, ansB.Primary.Reason)
					}
					if !fenceA && !fenceB && tlA != tlB && !ansA.Primary.OK && !ansB.Primary.OK {
						t.Errorf("timelines %d/%d: neither answers 200, but the newer one should", tlA, tlB)
					}
				}
			}
		}
	}
}

func TestAnswerReplicaAndHealth(t *testing.T) {
	fresh := t0.Add(-200 * time.Millisecond)
	notStreaming := standbyView(1)
	notStreaming.Receiver = ""
	catchup := standbyView(1)
	catchup.Receiver = "waiting"
	behind := standbyView(1)
	behind.LagSeconds = 12.5
	down := NodeView{Node: "db-replica", At: t0, Role: RoleDown, Error: "refused", ValidFor: time.Second}
	cases := []struct {
		name    string
		self    NodeView
		peers   []PeerView
		lag     string
		replica bool
		health  bool
		reason  string
	}{
		{"streaming standby, no limit", standbyView(1), nil, "", true, true, "streaming standby of 10.0.1.2:5432"},
		{"streaming standby within bytes (received-based)", standbyView(1), nil, "1MB", true, true, "96 bytes behind"},
		{"streaming standby, primary's position from its agent", standbyView(1), []PeerView{peer(func() NodeView { v := primaryView(1); v.WriteLSN = 0x4000000; return v }(), fresh)}, "16MB", true, true, "16777216 bytes behind"},
		{"over a byte limit against the primary", standbyView(1), []PeerView{peer(func() NodeView { v := primaryView(1); v.WriteLSN = 0x5000000; return v }(), fresh)}, "16MB", false, true, "over the limit of 16777216"},
		{"a primary on another timeline is not the measure", standbyView(1), []PeerView{peer(func() NodeView { v := primaryView(2); v.WriteLSN = 0x9000000; return v }(), fresh)}, "1kB", true, true, "96 bytes behind"},
		{"within a duration", standbyView(1), nil, "10s", true, true, "0s behind (limit 10s)"},
		{"over a duration", behind, nil, "10s", false, true, "12.5s behind"},
		{"not streaming", notStreaming, nil, "", false, true, "not streaming (no walreceiver)"},
		{"walreceiver waiting", catchup, nil, "16MB", false, true, "not streaming (waiting)"},
		{"a primary is not a replica", primaryView(1), nil, "", false, true, "not a standby"},
		{"down", down, nil, "", false, false, "not answering"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := Answer(c.self, c.peers, LeaseState{}, t0)
			var lim *LagLimit
			if c.lag != "" {
				var err error
				if lim, err = ParseLagLimit(c.lag); err != nil {
					t.Fatal(err)
				}
			}
			v := ReplicaWithin(a, lim)
			if v.OK != c.replica || !strings.Contains(v.Reason, c.reason) {
				t.Errorf("/replica?lag=%s: ok=%v %q; want ok=%v and %q", c.lag, v.OK, v.Reason, c.replica, c.reason)
			}
			if a.Health.OK != c.health {
				t.Errorf("/health: ok=%v (%q), want %v", a.Health.OK, a.Health.Reason, c.health)
			}
		})
	}
}

func TestParseLagLimit(t *testing.T) {
	good := map[string]LagLimit{
		"0": {Bytes: 0}, "16777216": {Bytes: 16 << 20}, "16MB": {Bytes: 16 << 20}, "16mb": {Bytes: 16 << 20},
		"512kB": {Bytes: 512 << 10}, "1GB": {Bytes: 1 << 30}, "100B": {Bytes: 100}, " 2MB": {Bytes: 2 << 20},
		"500ms": {Bytes: -1, Duration: 500 * time.Millisecond}, "10s": {Bytes: -1, Duration: 10 * time.Second},
		"1m": {Bytes: -1, Duration: time.Minute}, "1.5s": {Bytes: -1, Duration: 1500 * time.Millisecond},
	}
	for in, want := range good {
		got, err := ParseLagLimit(in)
		if err != nil || *got != want {
			t.Errorf("ParseLagLimit(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-1", "-5s", "MB", "1.5MB", "10 parsecs", "99999999999999999999", "9223372036854775807GB"} {
		if _, err := ParseLagLimit(in); err == nil || !strings.Contains(err.Error(), "give bytes") {
			t.Errorf("ParseLagLimit(%q): %v, want an error that says what is accepted", in, err)
		}
	}
}
