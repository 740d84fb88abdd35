package live

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/pgops"
)

// Role changes with automatic failover on (Cluster.Failover): the node
// agents hold a leader lease in etcd, and only the holder's agent makes
// its node writable. A switchover is then a lease handover: the old
// primary stops cleanly, the candidate is proven to have all its WAL, the
// lease is handed to it in etcd, and its agent takes it and promotes. An
// emergency promote publishes the candidate's own position with a
// handover, so its agent takes the free lease and promotes even when it
// had refused (lagging, not synchronous): the loss is accepted by a person.

// Step kinds of role changes through the lease.
const (
	StepProveWAL     StepKind = "prove-wal"      // Node has all of Upstream's WAL up to its shutdown checkpoint
	StepHandOver     StepKind = "hand-over"      // the lease goes from Upstream to Node in etcd: only Node may take it
	StepLeaseFor     StepKind = "lease-for"      // the free lease: publish Node's position and a handover to it
	StepAwaitPromote StepKind = "await-promoted" // Node's agent took the lease and promoted it: Node is writable
)

// LeaseControl is the failover lease in etcd, as role changes and
// `failover pause|resume|status` use it.
type LeaseControl interface {
	// ReadLease reads the lease and its records with a quorum.
	ReadLease(ctx context.Context) (LeaseReading, error)
	// HandOver gives the lease from its holder `from` to `to`: the key is
	// deleted (only if from holds it) and to recorded as the only node that
	// may take it next.
	HandOver(ctx context.Context, from, to string) error
	// LeaseFor lets `to` take the free lease: its position becomes the
	// last published one and it is recorded as the only node that may take
	// the lease next. It fails while anyone holds the lease.
	LeaseFor(ctx context.Context, to string, tl pgops.Timeline, lsn pgops.LSN) error
	SetPaused(ctx context.Context, paused bool) error
}

// StoreLease is a LeaseControl over failover's Store, which Open opens
// for each call (the lab's through its members; Kamal's through SSH,
// remote.Lease) and whose close ends it.
type StoreLease struct {
	Open func(ctx context.Context) (*failover.Store, func(), error)
}

var _ LeaseControl = StoreLease{}

func (l StoreLease) with(ctx context.Context, f func(*failover.Store) error) error {
	st, closeStore, err := l.Open(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	return f(st)
}

// ReadLease reads the lease with a quorum.
func (l StoreLease) ReadLease(ctx context.Context) (LeaseReading, error) {
	var r LeaseReading
	err := l.with(ctx, func(st *failover.Store) error {
		s, err := st.Read(ctx)
		if err != nil {
			return err
		}
		r = LeaseReading{Holder: s.Holder, Handover: s.Handover, Paused: s.Paused, PublishedBy: s.Position.Node, Timeline: s.Position.Timeline, LSN: s.Position.LSN}
		return nil
	})
	return r, err
}

// HandOver hands the lease from `from` to `to`.
func (l StoreLease) HandOver(ctx context.Context, from, to string) error {
	return l.with(ctx, func(st *failover.Store) error { return st.HandOver(ctx, from, to) })
}

// LeaseFor lets `to` take the free lease with its own position.
func (l StoreLease) LeaseFor(ctx context.Context, to string, tl pgops.Timeline, lsn pgops.LSN) error {
	return l.with(ctx, func(st *failover.Store) error {
		return st.LeaseFor(ctx, to, failover.Position{Node: to, Timeline: tl, LSN: lsn, At: time.Now()})
	})
}

// SetPaused pauses or resumes failover.
func (l StoreLease) SetPaused(ctx context.Context, paused bool) error {
	return l.with(ctx, func(st *failover.Store) error { return st.SetPaused(ctx, paused) })
}

// LeaseReading is the lease as read from etcd.
type LeaseReading struct {
	Holder   string `json:"holder"` // "" nobody
	Handover string `json:"handover,omitempty"`
	Paused   bool   `json:"paused,omitempty"`
	// The last position a holder published.
	PublishedBy string         `json:"published_by,omitempty"`
	Timeline    pgops.Timeline `json:"timeline,omitempty"`
	LSN         pgops.LSN      `json:"lsn,omitempty"`
	Error       string         `json:"error,omitempty"` // why it could not be read
}

// readLease reads the lease when failover is on (nil when off).
func readLease(ctx context.Context, t Target) *LeaseReading {
	if t.Cluster.Failover == nil {
		return nil
	}
	if t.Lease == nil {
		return &LeaseReading{Error: "failover is on, but this target has no way to reach etcd"}
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := t.Lease.ReadLease(rctx)
	if err != nil {
		return &LeaseReading{Error: err.Error()}
	}
	return &r
}

// leasePreflight refuses a role change that the lease would undo or block.
func leasePreflight(st *Status, to string, planned bool) error {
	l := st.Lease
	if l == nil {
		return nil
	}
	switch {
	case l.Error != "":
		return fmt.Errorf("failover is on, and the lease cannot be read (%s): a role change must go through it; bring etcd's members back (the agents and the witness)", l.Error)
	case l.Paused:
		return errors.New("failover is paused, and with it every promotion by the agents, which a role change goes through: `understudy failover resume` first")
	case l.Handover != "" && l.Handover != to:
		return fmt.Errorf("a handover of the lease to %s is in progress: wait a few seconds and run `understudy status`", l.Handover)
	case planned && l.Holder != st.Primary:
		return fmt.Errorf("the failover lease is held by %s, not by the primary %s: wait for the agents to settle (`understudy status`)", orNobody(l.Holder), st.Primary)
	case !planned && l.Holder != "" && l.Holder != to:
		return fmt.Errorf("%s holds the failover lease: its agent renews it, so it is alive and its node takes writes. For a planned swap run `understudy switchover %s`", l.Holder, to)
	}
	return nil
}

func orNobody(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}

// awaitPromoted waits until node is writable and its agent answers
// /primary 200 (with failover on, only the lease holder's does).
func awaitPromoted(ctx context.Context, t Target, node string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := t.Control.Conn(cctx, node)
		if err == nil {
			var rec bool
			err = c.QueryRow(cctx, "SELECT pg_is_in_recovery()").Scan(&rec)
			c.Close(context.WithoutCancel(ctx))
			if err == nil && !rec {
				cancel()
				return nil
			}
			if err == nil {
				err = errors.New("still in recovery")
			}
		}
		cancel()
		last = err.Error()
		if lr := readLease(ctx, t); lr != nil && lr.Error == "" {
			last += fmt.Sprintf("; the lease is held by %s", orNobody(lr.Holder))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s's agent did not take the lease and promote it within %s (%s): see its agent's log and `understudy status`", node, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// awaitLease waits until node's agent holds the lease (failover turned on:
// the first holder takes it once its agent runs with --failover).
func awaitLease(ctx context.Context, t Target, node string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		lr := readLease(ctx, t)
		if lr != nil && lr.Error == "" && lr.Holder == node {
			return nil
		}
		if time.Now().After(deadline) {
			last := "failover is off"
			if lr != nil {
				last = lr.Error
				if last == "" {
					last = "the lease is held by " + orNobody(lr.Holder)
				}
			}
			return fmt.Errorf("%s's agent did not take the failover lease within %s (%s): see its agent's log (kamal accessory logs) and `understudy failover status`", node, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
