package failover

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// TestNeverTwoPrimaries drives Decide on two nodes against a model of etcd
// (lease expiry counted from when a renewal arrives, expired leases revoked
// every 500 ms, a transaction that takes the key only when it is absent),
// with random faults: a node cut off from etcd's quorum, one-way message
// loss and delays up to 400 ms, an agent frozen for up to 10 s (its
// watchdog, a process apart, keeps running), the primary's server killed
// and brought back (booting read-only, as boot.sh does with failover on),
// PostgreSQL down on either node. At every 10 ms it
// asserts that no two nodes are writable, and no two answer /primary 200.
// It also checks that a dead primary is replaced: the failover finishes
// within the TTL plus a few seconds when nothing else is wrong.
func TestNeverTwoPrimaries(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 50
	}
	var failovers int
	var worst time.Duration
	for seed := range seeds {
		r := runSim(t, uint64(seed))
		failovers += r.failovers
		if r.cleanDetect > worst {
			worst = r.cleanDetect
		}
	}
	if failovers == 0 {
		t.Fatal("no failover happened in any run: the simulation tests nothing")
	}
	t.Logf("%d seeds, %d promotions, slowest clean failover %s", seeds, failovers, worst)
	if worst > Defaults().TTL+3*time.Second {
		t.Fatalf("a clean failover took %s, more than TTL+3s", worst)
	}
}

type simNode struct {
	name      string
	role      Role
	timeline  pgops.Timeline
	lsn       pgops.LSN
	received  pgops.LSN
	fenced    bool // marker on disk
	fencingAt time.Time
	promoteAt time.Time
	rejoinAt  time.Time
	downSince time.Time

	pgBack    time.Time // a stopped PostgreSQL restarts (read-only) then
	lease     LeaseView
	leaseID   int
	frozen    time.Time // frozen until
	cut       time.Time // cut from etcd until
	dead      time.Time // server dead until
	nextLoop  time.Time
	watchdog  time.Time
	inflight  []msg
	view      Observation
	holderRd  string
	noQuorum  time.Time
	published Position
}

type msg struct {
	kind    StepKind
	sent    time.Time
	arrive  time.Time
	reply   time.Time
	lost    bool
	leaseID int
	pos     *Position
}

type simEtcd struct {
	holder    string
	leaseID   int
	expiry    map[int]time.Time
	published Position
	nextID    int
	nextCheck time.Time
}

type simResult struct {
	failovers   int
	cleanDetect time.Duration
}

func runSim(t *testing.T, seed uint64) simResult {
	rng := rand.New(rand.NewPCG(seed, 7))
	s := Defaults()
	now := t0
	e := &simEtcd{expiry: map[int]time.Time{}, nextID: 2}
	e.expiry[1] = now.Add(s.TTL)
	e.holder, e.leaseID = "db", 1
	e.published = Position{Node: "db", Timeline: 1, LSN: 100}
	nodes := []*simNode{
		{name: "db", role: RolePrimary, timeline: 1, lsn: 100, lease: LeaseView{Holder: "db", Mine: true, LastRenew: now}, leaseID: 1},
		{name: "db-replica", role: RoleStandby, timeline: 1, received: 100},
	}
	other := func(n *simNode) *simNode {
		if n == nodes[0] {
			return nodes[1]
		}
		return nodes[0]
	}
	alive := func(n *simNode) bool { return !now.Before(n.dead) }
	reach := func(n *simNode) bool { return alive(n) && !now.Before(n.cut) }
	var res simResult
	var killedAt time.Time // a clean kill: nothing else wrong
	end := now.Add(120 * time.Second)
	step := 10 * time.Millisecond
	nextFault := now.Add(time.Duration(3+rng.IntN(5)) * time.Second)
	for ; now.Before(end); now = now.Add(step) {
		// Faults.
		if !now.Before(nextFault) {
			killedAt = time.Time{} // a failover timed only when nothing else goes wrong
			n := nodes[rng.IntN(2)]
			switch rng.IntN(5) {
			case 0: // cut from etcd
				n.cut = now.Add(time.Duration(rng.IntN(15000)) * time.Millisecond)
			case 1: // freeze the agent
				n.frozen = now.Add(time.Duration(rng.IntN(10000)) * time.Millisecond)
			case 2: // kill the server of the primary
				for _, m := range nodes {
					if m.role == RolePrimary && alive(m) {
						n = m
					}
				}
				n.dead = now.Add(time.Duration(5000+rng.IntN(20000)) * time.Millisecond)
				n.inflight, n.frozen, n.cut = nil, time.Time{}, time.Time{}
				o := other(n)
				if now.After(o.cut) && now.After(o.frozen) && alive(o) && o.role == RoleStandby && !o.fenced && o.timeline == n.timeline && n.lease.Mine {
					killedAt = now
				}
			case 3: // PostgreSQL of a node stops
				if n.role != RoleDown {
					n.role, n.downSince = RoleDown, now
					n.pgBack = now.Add(time.Duration(500+rng.IntN(8000)) * time.Millisecond)
				}
			case 4: // nothing
			}
			nextFault = now.Add(time.Duration(2000+rng.IntN(15000)) * time.Millisecond)
		}
		for _, n := range nodes {
			if n.role == RolePrimary {
				n.lsn += 1000 // writes
			}
			if !alive(n) {
				n.role, n.lease, n.watchdog, n.inflight = RoleDown, LeaseView{}, time.Time{}, nil
				n.fencingAt, n.promoteAt, n.rejoinAt = time.Time{}, time.Time{}, time.Time{}
				continue
			}
			if n.role == RoleDown && n.downSince.IsZero() {
				// The server came back: PostgreSQL starts as it was left.
				n.downSince = now
			}
		}
		// A killed server comes back: its PostgreSQL starts as a primary
		// unless fenced (standby.signal), as after a crash.
		for _, n := range nodes {
			if alive(n) && !n.dead.IsZero() && now.Sub(n.dead) < step {
				// With failover on, a node always boots read-only (boot.sh
				// writes standby.signal); only its agent, holding the lease,
				// promotes it.
				n.role, n.received = RoleStandby, max(n.lsn, n.received)
				n.downSince = time.Time{}
			}
		}
		for _, n := range nodes {
			if alive(n) && n.role == RoleDown && !n.pgBack.IsZero() && !now.Before(n.pgBack) {
				n.role, n.received, n.downSince, n.pgBack = RoleStandby, max(n.lsn, n.received), time.Time{}, time.Time{}
			}
		}
		// Streaming.
		for _, n := range nodes {
			o := other(n)
			if n.role == RoleStandby && o.role == RolePrimary && alive(n) && alive(o) && o.timeline == n.timeline && !n.fenced {
				if o.lsn > n.received {
					n.received = o.lsn
				}
			}
		}
		// etcd: messages arrive, leases expire.
		for _, n := range nodes {
			var keep []msg
			for _, m := range n.inflight {
				if m.arrive.After(now) || m.lost {
					if m.arrive.After(now) {
						keep = append(keep, m)
					}
					continue
				}
				if !m.reply.IsZero() && m.reply.After(now) {
					keep = append(keep, m)
					continue
				}
				// arrived and replied (delivery at etcd happened at m.arrive)
				switch m.kind {
				case StepRenew:
					if exp, ok := e.expiry[m.leaseID]; ok && exp.After(m.arrive) {
						e.expiry[m.leaseID] = m.arrive.Add(s.TTL)
						if m.pos != nil && e.leaseID == m.leaseID {
							e.published = *m.pos
						}
						if n.leaseID == m.leaseID && alive(n) && !now.Before(n.frozen) {
							if m.sent.After(n.lease.LastRenew) {
								n.lease.LastRenew = m.sent
							}
						}
					} else if n.leaseID == m.leaseID {
						n.lease = LeaseView{}
						n.leaseID = 0
					}
				case StepAcquire:
					if e.holder == "" && e.published == *m.pos {
						id := e.nextID
						e.nextID++
						e.expiry[id] = m.arrive.Add(s.TTL)
						e.holder, e.leaseID = n.name, id
						pos := Position{Node: n.name, Timeline: n.timeline, LSN: n.lsn}
						if n.role == RoleStandby {
							pos.Timeline, pos.LSN = n.timeline+1, n.received
						}
						e.published = pos
						n.leaseID = id
						n.lease = LeaseView{Holder: n.name, Mine: true, LastRenew: m.sent}
					}
				case StepResign:
					if e.leaseID == m.leaseID {
						delete(e.expiry, m.leaseID)
						e.holder, e.leaseID = "", 0
					}
				}
			}
			n.inflight = keep
		}
		if !now.Before(e.nextCheck) {
			for id, exp := range e.expiry {
				if !exp.After(now) {
					delete(e.expiry, id)
					if e.leaseID == id {
						e.holder, e.leaseID = "", 0
					}
				}
			}
			e.nextCheck = now.Add(500 * time.Millisecond)
		}
		// Slow actions finish.
		for _, n := range nodes {
			if !n.fencingAt.IsZero() && !now.Before(n.fencingAt) {
				n.fencingAt = time.Time{}
				if n.role == RolePrimary || n.role == RoleUnknown {
					n.role, n.downSince = RoleDown, now
				}
			}
			if !n.promoteAt.IsZero() && !now.Before(n.promoteAt) {
				n.promoteAt = time.Time{}
				if n.role == RoleStandby && n.lease.Mine {
					n.role = RolePrimary
					n.timeline++
					n.lsn = n.received
					n.fenced = false
					res.failovers++
					if !killedAt.IsZero() {
						if d := now.Sub(killedAt); d > res.cleanDetect {
							res.cleanDetect = d
						}
						killedAt = time.Time{}
					}
				}
			}
			if !n.rejoinAt.IsZero() && !now.Before(n.rejoinAt) {
				n.rejoinAt = time.Time{}
				o := other(n)
				n.role, n.timeline, n.received, n.fenced = RoleStandby, o.timeline, o.lsn, false
			}
			// The watchdog: a process apart from the agent; it runs while the
			// agent is frozen.
			if !n.watchdog.IsZero() && !now.Before(n.watchdog) && n.role == RolePrimary && n.fencingAt.IsZero() {
				n.fencingAt = now.Add(time.Duration(rng.IntN(200)) * time.Millisecond)
				n.fenced = true
			}
		}
		// Agents' loops.
		for _, n := range nodes {
			if !alive(n) || now.Before(n.frozen) || now.Before(n.nextLoop) {
				continue
			}
			n.nextLoop = now.Add(100 * time.Millisecond)
			if reach(n) {
				n.holderRd, n.published = e.holder, e.published
				n.noQuorum = time.Time{}
			} else if n.noQuorum.IsZero() {
				n.noQuorum = now
			}
			o := Observation{
				Now: now, Node: n.name, Standbys: []string{other(n).name},
				PG:        PGView{Role: n.role, Timeline: n.timeline, LSN: n.lsn, DownSince: n.downSince},
				Lease:     n.lease,
				Etcd:      EtcdView{Quorum: reach(n), NoQuorumSince: n.noQuorum},
				Published: n.published,
				Fenced:    n.fenced,
				Settings:  s,
			}
			o.Lease.Holder = n.holderRd
			if n.role == RoleStandby {
				o.PG.LSN = n.received
				o.PG.Streaming = other(n).role == RolePrimary && other(n).timeline == n.timeline && alive(other(n)) && !n.fenced
			}
			if n.role != RoleDown {
				o.PG.DownSince = time.Time{}
			}
			d := Decide(o)
			n.watchdog = d.Watchdog
			for _, st := range d.Steps {
				lat1 := time.Duration(rng.IntN(400)) * time.Millisecond
				lat2 := time.Duration(rng.IntN(400)) * time.Millisecond
				m := msg{kind: st.Kind, sent: now, arrive: now.Add(lat1), reply: now.Add(lat1 + lat2), leaseID: n.leaseID, pos: st.Publish}
				if !reach(n) || rng.IntN(20) == 0 {
					m.lost = true
					m.arrive = now
				}
				switch st.Kind {
				case StepRenew, StepResign:
					n.inflight = append(n.inflight, m)
				case StepAcquire:
					m.pos = st.Basis
					n.inflight = append(n.inflight, m)
				case StepFence:
					n.fenced = true
					n.lease, n.leaseID = LeaseView{}, 0
					if n.fencingAt.IsZero() && (n.role == RolePrimary || n.role == RoleUnknown) {
						n.fencingAt = now.Add(time.Duration(rng.IntN(200)) * time.Millisecond)
					}
				case StepPromote:
					if n.promoteAt.IsZero() {
						n.promoteAt = now.Add(time.Duration(200+rng.IntN(600)) * time.Millisecond)
					}
				case StepRejoin:
					if n.rejoinAt.IsZero() && other(n).role == RolePrimary {
						n.rejoinAt = now.Add(2 * time.Second)
					}
				}
				if st.Kind == StepResign {
					n.lease = LeaseView{}
				}
			}
		}
		// The invariants.
		var writable, routed []string
		for _, n := range nodes {
			if alive(n) && n.role == RolePrimary {
				writable = append(writable, n.name)
				if n.lease.HoldsAt(s, now) {
					routed = append(routed, n.name)
				}
			}
		}
		if len(writable) > 1 || len(routed) > 1 {
			t.Fatalf("seed %d at +%s: writable %v, /primary 200 on %v\netcd %+v\n%s", seed, now.Sub(t0), writable, routed, *e, dump(nodes))
		}
	}
	return res
}

func dump(nodes []*simNode) string {
	out := ""
	for _, n := range nodes {
		out += fmt.Sprintf("%s: role %s tl %d lsn %d recv %d fenced %v lease %+v cut %s frozen %s dead %s\n", n.name, n.role, n.timeline, n.lsn, n.received, n.fenced, n.lease, n.cut.Format("05.000"), n.frozen.Format("05.000"), n.dead.Format("05.000"))
	}
	return out
}
