// Package failover is automatic failover on a leader lease kept in etcd:
// the timings, the pure decision each node's agent takes from what it
// observed (Decide), the lease and the records in etcd (Store), the etcd
// member the agents embed (Member), its certificates (derived from one
// secret), and the watchdog that stops a primary whose agent froze.
//
// The rule it enforces: PostgreSQL on a node may take writes only while
// that node's agent holds the lease, and another node is promoted only
// after etcd itself let the lease expire. See docs/failover.md.
package failover

import (
	"fmt"
	"time"
)

// Settings are the failover knobs. The zero value is not valid; start from
// Defaults.
type Settings struct {
	// TTL is the lease's time to live in etcd (whole seconds: etcd counts
	// lease TTLs in seconds).
	TTL time.Duration
	// RenewEvery is how often the holder renews.
	RenewEvery time.Duration
	// FenceMargin: the holder fences itself this long before its lease
	// could expire (counted from when it sent its last successful renewal),
	// so the fence is done before etcd can let anyone else take the lease.
	FenceMargin time.Duration
	// WatchdogMargin: the watchdog, a process apart from the agent's loop,
	// stops PostgreSQL this long before the lease could expire if the agent
	// has not moved the deadline forward (a frozen agent).
	WatchdogMargin time.Duration
	// MaxLagOnFailover: a standby whose received WAL is further than this
	// behind the last position the primary published refuses to promote.
	MaxLagOnFailover uint64
	// PrimaryDownGrace: a holder whose own PostgreSQL is not running
	// (connections refused) for this long fences it and gives the lease up,
	// so the standby takes over without waiting for the TTL.
	PrimaryDownGrace time.Duration
	// PrimaryHungGrace: the same for a PostgreSQL that runs but does not
	// answer within the probe's deadline: longer, since a loaded server is
	// slow, not dead.
	PrimaryHungGrace time.Duration
	// RejoinAfter: a standby that has not streamed from the holder for this
	// long (or whose PostgreSQL stays down) is rejoined.
	RejoinAfter time.Duration
	// Rejoin: what a former primary does when it finds another holder.
	Rejoin RejoinMode
	// Synchronous: synchronous_standby_names = 'ANY 1 (...)' while the
	// standby is in sync; a standby promotes only while etcd lists it as
	// synchronous.
	Synchronous bool
}

// RejoinMode is what a node that was a primary without the lease does once
// it is fenced.
type RejoinMode string

const (
	// RejoinAuto: follow the holder by itself (re-point, pg_rewind or a
	// clone, as `understudy rejoin` decides).
	RejoinAuto RejoinMode = "auto"
	// RejoinWait: stay fenced (read-only, not following) until a person
	// runs `understudy rejoin`.
	RejoinWait RejoinMode = "wait"
)

// Defaults are chosen for "under 10 s from a dead primary to app writes on
// the standby" with no false failovers on a loaded server and a slow link.
// The reasoning, in the order time passes after the primary's server dies:
//
//   - The holder renewed at most RenewEvery (1 s) before it died, so etcd
//     lets the lease expire TTL-RenewEvery..TTL later (5-6 s); etcd checks
//     for expired leases every 500 ms. The etcd leader is kept away from the
//     holder's member (Decide's MoveEtcdLeader), so the primary's death costs
//     no etcd election, which would extend every lease by an election
//     timeout (etcd's lessor.Promote).
//   - The standby's agent sees the key gone on its next loop (100 ms), takes
//     the lease in one transaction and promotes (pg_promote, ~0.3-1 s).
//   - Its /primary turns 200 on the next observation; the router marks it up
//     within one check interval (about 0.5 s) and the app's next write lands.
//     Total: about 6.5-8.5 s, under 10 s; the worst case, with an etcd
//     election on top (the holder's member was the etcd leader), ~10-11 s.
//
// No false failovers: the holder fences only when it has had no successful
// renewal for TTL-FenceMargin (5 s): five renewals in a row lost or slow. An
// etcd election (1-2 s with the default 1 s election timeout) or a 200 ms
// link (a renewal is two round trips: ensureLeadership's heartbeat, then
// the renewal) stays well inside that. A CPU-starved agent is covered the
// same way: it needs one renewal through in five seconds.
//
// Safety does not depend on these numbers being right, only on their order:
// FenceMargin > WatchdogMargin > 0, and the fence itself (an immediate
// shutdown, milliseconds) finishing inside WatchdogMargin.
func Defaults() Settings {
	return Settings{
		TTL:              6 * time.Second,
		RenewEvery:       1 * time.Second,
		FenceMargin:      1 * time.Second,
		WatchdogMargin:   500 * time.Millisecond,
		MaxLagOnFailover: 1 << 20,
		PrimaryDownGrace: 3 * time.Second,
		PrimaryHungGrace: 6 * time.Second,
		RejoinAfter:      10 * time.Second,
		Rejoin:           RejoinAuto,
	}
}

// Validate says what is wrong with a set of settings, and how to fix it.
func (s Settings) Validate() error {
	switch {
	case s.TTL < 2*time.Second || s.TTL%time.Second != 0:
		return fmt.Errorf("failover ttl %s: etcd counts lease TTLs in whole seconds and needs at least 2 s; use e.g. 6s", s.TTL)
	case s.RenewEvery <= 0 || s.RenewEvery*3 > s.TTL:
		return fmt.Errorf("failover renew interval %s: renew at least three times per TTL (%s), e.g. every %s", s.RenewEvery, s.TTL, s.TTL/6)
	case s.WatchdogMargin <= 0 || s.FenceMargin <= s.WatchdogMargin:
		return fmt.Errorf("failover margins: the agent's fence (%s before expiry) must come before the watchdog's (%s), and both before the lease expires", s.FenceMargin, s.WatchdogMargin)
	case s.TTL-s.FenceMargin <= 2*s.RenewEvery:
		return fmt.Errorf("failover fence margin %s leaves less than two renewals (%s each) before the fence; lower it or raise the TTL", s.FenceMargin, s.RenewEvery)
	case s.PrimaryDownGrace <= 0 || s.PrimaryHungGrace < s.PrimaryDownGrace:
		return fmt.Errorf("failover primary-down grace %s must be positive, and the hung grace %s at least as long", s.PrimaryDownGrace, s.PrimaryHungGrace)
	case s.RejoinAfter <= 0:
		return fmt.Errorf("failover rejoin-after %s must be positive", s.RejoinAfter)
	case s.Rejoin != RejoinAuto && s.Rejoin != RejoinWait:
		return fmt.Errorf("failover rejoin %q: use %q (the old primary follows the new one by itself) or %q (it stays fenced until you run understudy rejoin)", s.Rejoin, RejoinAuto, RejoinWait)
	}
	return nil
}
