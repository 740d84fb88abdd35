package failover

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// Each node's agent runs Decide on every loop (about every 100 ms): it
// observes its PostgreSQL and etcd (impure, under deadlines), Decide turns
// that into typed steps (pure, here), and a thin executor runs them in
// order, stopping at the first that fails.

// Role is what the local PostgreSQL is, as last observed.
type Role string

const (
	RoleUnknown Role = "unknown" // did not answer within the probe's deadline
	RoleDown    Role = "down"    // not running
	RolePrimary Role = "primary" // running and writable
	RoleStandby Role = "standby" // running, in recovery
)

// PGView is the agent's last observation of its own PostgreSQL.
type PGView struct {
	Role     Role
	Timeline pgops.Timeline
	// LSN: on a primary the flushed end of WAL; on a standby the last WAL
	// received and flushed (pg_last_wal_receive_lsn), what it would keep if
	// promoted now.
	LSN pgops.LSN
	// DownSince: when it last stopped answering (zero while it answers).
	DownSince time.Time
	// Streaming: a standby receives from a primary right now;
	// NotStreamingSince: since when it has not (zero while it does).
	Streaming         bool
	NotStreamingSince time.Time
	// On a primary: its standbys as pg_stat_replication shows them, and the
	// synchronous_standby_names in force.
	Replicas  []ReplicaView
	SyncNames string
}

// ReplicaView is one row of the primary's pg_stat_replication.
type ReplicaView struct {
	Name      string // application_name: the node's name
	Streaming bool
	Sync      bool // sync_state is sync or quorum: commits wait for it
}

// LeaseView is what the agent knows of the leader lease.
type LeaseView struct {
	// Holder names the node whose key is in etcd, from the last read that
	// reached a quorum ("" = nobody holds it).
	Holder string
	// Mine: this agent holds the lease (its lease id is attached to the key).
	Mine bool
	// LastRenew: when this agent sent its last renewal that etcd
	// acknowledged (or the grant). etcd counts the TTL from when it received
	// it, never earlier, and an etcd leader change only extends leases, so
	// LastRenew+TTL is a time before which the lease cannot have expired.
	LastRenew time.Time
}

// Position is what the holder publishes to etcd on every renewal: the
// last point a standby must reach to promote with at most the allowed loss.
type Position struct {
	Node     string         `json:"node"`
	Timeline pgops.Timeline `json:"timeline"`
	LSN      pgops.LSN      `json:"lsn"`
	At       time.Time      `json:"at"`
}

// EtcdView is the agent's view of the etcd cluster.
type EtcdView struct {
	Quorum bool // the last linearizable read succeeded within its deadline
	// NoQuorumSince: since when reads have failed (zero while they work).
	NoQuorumSince time.Time
	Leader        string   // the member that leads etcd's raft ("" unknown)
	Healthy       []string // members that answered their health check
	Witness       string   // the member on the app host, preferred as etcd leader
}

// Observation is one loop's input to Decide.
type Observation struct {
	Now       time.Time
	Node      string   // this node
	Standbys  []string // the other database nodes (the cluster model)
	PG        PGView
	Lease     LeaseView
	Etcd      EtcdView
	Published Position // last Position read from etcd (zero: none yet)
	// SyncStandbys: the standbys the holder has recorded in etcd as
	// synchronous (every acknowledged commit reached them).
	SyncStandbys []string
	// Handover: the target of a planned switchover in progress ("" none).
	Handover string
	// Paused: failover pause is in force (no promotion, no automatic rejoin).
	Paused bool
	// Fenced: this agent fenced its node (a marker on disk that survives a
	// restart of the agent) and it has not rejoined since. A standby on a
	// timeline older than the published one is treated the same (the old
	// primary killed, then booted read-only as every node boots).
	Fenced   bool
	FencedAt time.Time // when (the fence note's time; zero unknown)
	Settings Settings
}

// StepKind is what a step does.
type StepKind string

const (
	StepRenew          StepKind = "renew"            // renew the lease, publish the position
	StepAcquire        StepKind = "acquire"          // take the free lease (one transaction: key absent, position unchanged)
	StepPromote        StepKind = "promote"          // pg_promote this standby, which holds the lease
	StepFence          StepKind = "fence"            // stop writes now: standby.signal, immediate shutdown
	StepResign         StepKind = "resign"           // give the lease up (delete the key), so another node may take it at once
	StepRejoin         StepKind = "rejoin"           // follow the holder (re-point, pg_rewind or clone)
	StepWaitFenced     StepKind = "wait-fenced"      // stay fenced: rejoin is left to a person
	StepSetSyncNames   StepKind = "set-sync-names"   // ALTER SYSTEM synchronous_standby_names, reload
	StepRecordSync     StepKind = "record-sync"      // record in etcd which standbys are synchronous (guarded by the lease)
	StepMoveEtcdLeader StepKind = "move-etcd-leader" // move etcd's raft leadership off the holder's member
	StepStartReadOnly  StepKind = "start-read-only"  // start a fenced, stopped node (it comes up read-only)
)

// Step is one thing the executor does.
type Step struct {
	Kind   StepKind `json:"kind"`
	Reason string   `json:"reason"`
	// Publish: the position to publish with a renewal.
	Publish *Position `json:"publish,omitempty"`
	// Basis: for an acquire, the position it was decided on (the
	// transaction fails if another was published since).
	Basis *Position `json:"basis,omitempty"`
	// Target: the holder to follow (rejoin), the member to lead etcd.
	Target string `json:"target,omitempty"`
	// SyncNames / Sync: the new synchronous_standby_names / etcd record.
	SyncNames string   `json:"sync_names,omitempty"`
	Sync      []string `json:"sync,omitempty"`
}

// RefusalKind says why a standby does not promote although the lease is
// free.
type RefusalKind string

const (
	RefusePaused      RefusalKind = "paused"
	RefuseNoQuorum    RefusalKind = "no-quorum"
	RefuseHandover    RefusalKind = "handover-elsewhere"
	RefusePGDown      RefusalKind = "postgres-down"
	RefuseOldTimeline RefusalKind = "old-timeline"
	RefuseLagging     RefusalKind = "lagging"
	RefuseNotSync     RefusalKind = "not-synchronous"
	RefuseFenced      RefusalKind = "fenced-waiting"
	RefuseNeverHeld   RefusalKind = "never-held"
)

// Refusal is why this node does not take the free lease; status, check
// and the metrics show it.
type Refusal struct {
	Kind    RefusalKind `json:"kind"`
	Message string      `json:"message"`
	// Lagging: how far behind the published position it is, in bytes.
	LagBytes uint64 `json:"lag_bytes,omitempty"`
}

// Decision is Decide's answer.
type Decision struct {
	Steps   []Step
	Refusal *Refusal
	// Watchdog: the deadline to give the watchdog (zero: disarm it). When it
	// passes with no newer deadline, the watchdog stops PostgreSQL by itself.
	Watchdog time.Time
	// Holds: this node holds a lease that is valid for writes now (the
	// agent's /primary may answer 200 only when this is true).
	Holds bool
}

// ValidUntil is when the lease could first expire at etcd.
func (l LeaseView) ValidUntil(s Settings) time.Time { return l.LastRenew.Add(s.TTL) }

// HoldsAt reports whether the lease is this node's and safe for writes at
// now: before the fence point. The agent's /primary uses it on every check
// (not only every loop), so a frozen loop cannot keep answering 200.
func (l LeaseView) HoldsAt(s Settings, now time.Time) bool {
	return l.Mine && now.Before(l.ValidUntil(s).Add(-s.FenceMargin))
}

// Decide is the failover rule for one node, pure.
func Decide(o Observation) Decision {
	s := o.Settings
	var d Decision
	if o.Lease.Mine {
		return decideHolder(o, s)
	}
	switch o.PG.Role {
	case RolePrimary:
		return decidePrimaryWithoutLease(o, s)
	case RoleStandby:
		if !o.Etcd.Quorum {
			// Nothing read now is current: no promotion, no rejoin.
			d.Refusal = &Refusal{Kind: RefuseNoQuorum, Message: "etcd has no quorum from here: this node neither promotes nor rejoins until it has (the last holder read was " + orNobody(o.Lease.Holder) + ")"}
			return d
		}
		if o.Lease.Holder == o.Node {
			// Our own lease, which this agent no longer holds (it lapsed or
			// is about to): wait for etcd to free it.
			return d
		}
		if o.Lease.Holder != "" {
			lost := !o.PG.Streaming && !o.PG.NotStreamingSince.IsZero() && o.Now.Sub(o.PG.NotStreamingSince) >= s.RejoinAfter
			if o.Fenced || o.PG.Timeline < o.Published.Timeline || lost {
				return decideFencedWithHolder(o, s)
			}
			return d // following: nothing to do
		}
		return decideCandidate(o, s)
	default:
		if o.Etcd.Quorum && o.Lease.Holder != "" && o.Lease.Holder != o.Node && !o.Fenced && o.PG.Role == RoleDown &&
			!o.PG.DownSince.IsZero() && o.Now.Sub(o.PG.DownSince) >= s.RejoinAfter {
			// Down for long while another node is the primary (it fails to
			// start, say, on a timeline that forked off): rejoin it.
			return decideFencedWithHolder(o, s)
		}
		if o.Fenced && o.PG.Role == RoleDown && !o.Paused {
			// Fenced (by this agent or its watchdog) and stopped: start it
			// again, read-only, so it can rejoin (on Kamal the container's
			// restart policy already does this).
			d.Steps = append(d.Steps, Step{Kind: StepStartReadOnly, Reason: "fenced and stopped: start it read-only (standby.signal) so it can rejoin"})
		}
		if o.Lease.Holder == "" {
			d.Refusal = &Refusal{Kind: RefusePGDown, Message: fmt.Sprintf("the lease is free but PostgreSQL on %s is %s: this node cannot take over", o.Node, o.PG.Role)}
		}
		return d
	}
}

func decideHolder(o Observation, s Settings) Decision {
	var d Decision
	until := o.Lease.ValidUntil(s)
	if !o.Lease.HoldsAt(s, o.Now) {
		// The renewals did not get through in time: etcd may free the lease
		// at `until`, and the other node may promote right after. Stop
		// writes now, while the lease is still ours.
		d.Steps = append(d.Steps, Step{Kind: StepFence, Reason: fmt.Sprintf("the lease was last renewed %s ago and could expire in %s: fencing before anyone else can be promoted", ms(o.Now.Sub(o.Lease.LastRenew)), ms(until.Sub(o.Now)))})
		return d
	}
	d.Watchdog = until.Add(-s.WatchdogMargin)
	switch o.PG.Role {
	case RoleStandby:
		if o.Paused {
			// Taken before the pause; keep it, promote after resume.
			d.Steps = append(d.Steps, renewIfDue(o, s, nil)...)
			d.Watchdog = time.Time{}
			return d
		}
		// We took the free lease as a candidate: promote, keep renewing.
		d.Steps = append(d.Steps, renewIfDue(o, s, nil)...)
		d.Steps = append(d.Steps, Step{Kind: StepPromote, Reason: "this node holds the lease and is a standby"})
		d.Watchdog = time.Time{} // not writable yet; armed once primary
		return d
	case RoleUnknown, RoleDown:
		grace := s.PrimaryDownGrace
		if o.PG.Role == RoleUnknown {
			grace = s.PrimaryHungGrace
		}
		down := !o.PG.DownSince.IsZero() && o.Now.Sub(o.PG.DownSince) >= grace
		if down && !o.Paused {
			d.Steps = append(d.Steps,
				Step{Kind: StepFence, Reason: fmt.Sprintf("PostgreSQL has been %s for %s", o.PG.Role, ms(o.Now.Sub(o.PG.DownSince)))},
				Step{Kind: StepResign, Reason: "give the lease up so the standby can take over now rather than after the TTL"})
			return d
		}
		// Keep it through a short outage (a restart, a slow probe).
		d.Steps = append(d.Steps, renewIfDue(o, s, nil)...)
		d.Holds = true
		return d
	}
	// A running primary holding a valid lease.
	d.Holds = true
	pos := &Position{Node: o.Node, Timeline: o.PG.Timeline, LSN: o.PG.LSN, At: o.Now}
	d.Steps = append(d.Steps, renewIfDue(o, s, pos)...)
	if s.Synchronous {
		d.Steps = append(d.Steps, syncSteps(o)...)
	}
	// etcd's leader belongs on the witness: not beside the primary (if that
	// server dies, an election extends the lease by an election timeout),
	// and not on the standby (cut off from the standby alone, the primary
	// could then not reach the leader and would lose its lease, although
	// the witness still sees it).
	witnessUp := o.Etcd.Witness != "" && slices.Contains(o.Etcd.Healthy, o.Etcd.Witness)
	switch {
	case o.Etcd.Leader == "" || o.Etcd.Leader == o.Etcd.Witness:
	case witnessUp:
		d.Steps = append(d.Steps, Step{Kind: StepMoveEtcdLeader, Target: o.Etcd.Witness, Reason: "etcd's leader belongs on the witness, away from both database servers"})
	case o.Etcd.Leader == o.Node:
		if to := otherHealthy(o); to != "" {
			d.Steps = append(d.Steps, Step{Kind: StepMoveEtcdLeader, Target: to, Reason: "etcd's leader runs beside the primary: if this server dies, an etcd election would extend the lease by an election timeout"})
		}
	}
	return d
}

func renewIfDue(o Observation, s Settings, pos *Position) []Step {
	if o.Now.Sub(o.Lease.LastRenew) < s.RenewEvery {
		return nil
	}
	return []Step{{Kind: StepRenew, Publish: pos, Reason: fmt.Sprintf("last renewed %s ago", ms(o.Now.Sub(o.Lease.LastRenew)))}}
}

// syncSteps keep synchronous_standby_names and the etcd record in an order
// that never lets a standby promote without every acknowledged commit:
// a standby is recorded as synchronous only after PostgreSQL reports that
// commits wait for it, and unrecorded before commits stop waiting for it.
func syncSteps(o Observation) []Step {
	var streaming, insync []string
	for _, r := range o.PG.Replicas {
		if r.Streaming && slices.Contains(o.Standbys, r.Name) {
			streaming = append(streaming, r.Name)
			if r.Sync {
				insync = append(insync, r.Name)
			}
		}
	}
	slices.Sort(insync)
	recorded := slices.Clone(o.SyncStandbys)
	slices.Sort(recorded)
	want := ""
	if len(streaming) > 0 {
		want = SyncStandbyNames(o.Standbys)
	}
	var steps []Step
	// Drop from the record every standby commits no longer wait for: first
	// etcd, then PostgreSQL (the second step only runs if the first did).
	keep := []string{}
	for _, n := range recorded {
		if slices.Contains(insync, n) {
			keep = append(keep, n)
		}
	}
	if want == "" && len(recorded) > 0 {
		keep = []string{}
	}
	if !slices.Equal(keep, recorded) {
		steps = append(steps, Step{Kind: StepRecordSync, Sync: keep, Reason: fmt.Sprintf("standbys no longer synchronous: %s", strings.Join(minus(recorded, keep), ", "))})
		recorded = keep
	}
	if o.PG.SyncNames != want {
		why := "the standby streams again: commits wait for it"
		if want == "" {
			why = "no standby streams: commits stop waiting (async until it is back; it may not promote meanwhile)"
		}
		steps = append(steps, Step{Kind: StepSetSyncNames, SyncNames: want, Reason: why})
		return steps
	}
	if want != "" && !slices.Equal(insync, recorded) {
		steps = append(steps, Step{Kind: StepRecordSync, Sync: insync, Reason: "commits wait for these standbys: they may promote without loss"})
	}
	return steps
}

// SyncStandbyNames is synchronous_standby_names for quorum commit on any
// one of the standbys.
func SyncStandbyNames(standbys []string) string {
	q := make([]string, len(standbys))
	for i, n := range standbys {
		q[i] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
	}
	return "ANY 1 (" + strings.Join(q, ", ") + ")"
}

func decidePrimaryWithoutLease(o Observation, s Settings) Decision {
	var d Decision
	switch {
	case !o.Etcd.Quorum:
		// Failover just turned on, or this agent just restarted, and etcd
		// does not answer yet (a slow link, an election): give it a TTL
		// before fencing a primary nobody else can have replaced (nodes
		// boot read-only; only a lease holder's agent promotes).
		if !o.Etcd.NoQuorumSince.IsZero() && o.Now.Sub(o.Etcd.NoQuorumSince) >= s.TTL {
			d.Steps = append(d.Steps, Step{Kind: StepFence, Reason: fmt.Sprintf("PostgreSQL here is a writable primary without the lease, and etcd has had no quorum for %s", ms(o.Now.Sub(o.Etcd.NoQuorumSince)))})
		}
	case o.Lease.Holder == o.Node:
		// The key still names this node (the agent restarted and could not
		// adopt its lease yet): nobody else can be promoted while it exists;
		// once etcd frees it, this primary takes it back (below).
	case o.Lease.Holder != "":
		d.Steps = append(d.Steps, Step{Kind: StepFence, Reason: fmt.Sprintf("PostgreSQL here is a writable primary but %s holds the lease", o.Lease.Holder)})
	case o.Fenced:
		d.Steps = append(d.Steps, Step{Kind: StepFence, Reason: "this node was fenced and came back as a primary"})
	case o.Published.Node == "" || (o.Published.Node == o.Node && o.PG.Timeline >= o.Published.Timeline):
		// Failover was just turned on (nothing published yet), or the agent
		// restarted while its primary kept running and the lease lapsed:
		// nobody promoted meanwhile (the last position is still ours).
		basis := o.Published
		d.Steps = append(d.Steps, Step{Kind: StepAcquire, Basis: &basis, Reason: "the primary takes the free lease (the last position published is its own)"})
	default:
		d.Steps = append(d.Steps, Step{Kind: StepFence, Reason: fmt.Sprintf("PostgreSQL here is a writable primary on timeline %d, but the last primary with the lease was %s on timeline %d", o.PG.Timeline, o.Published.Node, o.Published.Timeline)})
	}
	return d
}

func decideFencedWithHolder(o Observation, s Settings) Decision {
	var d Decision
	if o.PG.Streaming && o.PG.Timeline >= o.Published.Timeline {
		return d
	}
	if s.Rejoin == RejoinWait || o.Paused {
		why := "rejoin is set to wait: run `understudy rejoin " + o.Node + "`"
		if o.Paused {
			why = "failover is paused: `understudy failover resume`, or `understudy rejoin " + o.Node + "`"
		}
		d.Steps = append(d.Steps, Step{Kind: StepWaitFenced, Target: o.Lease.Holder, Reason: fmt.Sprintf("fenced; %s is the primary; %s", o.Lease.Holder, why)})
		d.Refusal = &Refusal{Kind: RefuseFenced, Message: why}
		return d
	}
	d.Steps = append(d.Steps, Step{Kind: StepRejoin, Target: o.Lease.Holder, Reason: fmt.Sprintf("fenced former primary: follow %s, which holds the lease", o.Lease.Holder)})
	return d
}

func decideCandidate(o Observation, s Settings) Decision {
	var d Decision
	own := o.Published.Node == o.Node // our own last position as primary
	refuse := func(k RefusalKind, lag uint64, f string, a ...any) Decision {
		d.Refusal = &Refusal{Kind: k, LagBytes: lag, Message: fmt.Sprintf(f, a...)}
		return d
	}
	switch {
	case o.Paused:
		return refuse(RefusePaused, 0, "failover is paused: nobody is promoted (`understudy failover resume`)")
	case !o.Etcd.Quorum:
		return refuse(RefuseNoQuorum, 0, "etcd has no quorum from here: promoting could make a second primary; fix the network or bring an etcd member back")
	case o.Published.Node == "":
		return refuse(RefuseNeverHeld, 0, "no primary has held the lease yet: a standby never takes it first (the primary's agent takes it when failover starts)")
	case o.Handover != "" && o.Handover != o.Node:
		return refuse(RefuseHandover, 0, "a planned switchover hands the lease to %s", o.Handover)
	case o.Fenced && (s.Rejoin == RejoinWait) && !own:
		return refuse(RefuseFenced, 0, "fenced and set to wait for `understudy rejoin %s`", o.Node)
	case o.Fenced && own && !o.FencedAt.IsZero() && o.Now.Sub(o.FencedAt) < s.TTL:
		// It fenced itself for a reason (its PostgreSQL hung, it lost
		// etcd): a healthy standby goes first; only if none takes the lease
		// does it take its own back.
		return refuse(RefuseFenced, 0, "fenced %s ago: the standby goes first; this node takes its lease back only if nobody else does within %s", ms(o.Now.Sub(o.FencedAt)), s.TTL)
	case o.PG.Timeline < o.Published.Timeline:
		return refuse(RefuseOldTimeline, 0, "this node is on timeline %d but %s was primary on timeline %d: it must rejoin, not promote", o.PG.Timeline, o.Published.Node, o.Published.Timeline)
	case s.Synchronous && !own && !slices.Contains(o.SyncStandbys, o.Node):
		return refuse(RefuseNotSync, 0, "synchronous mode, but the primary had stopped waiting for this standby (it was away): it may lack acknowledged commits, so it does not promote; bring %s back, or `understudy promote %s` to accept the loss", o.Published.Node, o.Node)
	}
	if !own && o.PG.LSN+pgops.LSN(s.MaxLagOnFailover) < o.Published.LSN {
		lag := uint64(o.Published.LSN - o.PG.LSN)
		return refuse(RefuseLagging, lag, "received WAL %s is %d bytes behind %s, the last position %s published (limit %d): promoting would lose more than allowed; bring %s back, or `understudy promote %s` to accept the loss", o.PG.LSN, lag, o.Published.LSN, o.Published.Node, s.MaxLagOnFailover, o.Published.Node, o.Node)
	}
	basis := o.Published
	why := "the lease is free, etcd has quorum"
	if !own {
		why += fmt.Sprintf(", received WAL %s is within %d bytes of %s's last position %s", o.PG.LSN, s.MaxLagOnFailover, o.Published.Node, o.Published.LSN)
	}
	d.Steps = append(d.Steps, Step{Kind: StepAcquire, Basis: &basis, Reason: why})
	return d
}

func otherHealthy(o Observation) string {
	if o.Etcd.Witness != "" && o.Etcd.Witness != o.Node && slices.Contains(o.Etcd.Healthy, o.Etcd.Witness) {
		return o.Etcd.Witness
	}
	for _, m := range o.Etcd.Healthy {
		if m != o.Node {
			return m
		}
	}
	return ""
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func orNobody(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
