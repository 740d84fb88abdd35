// Package agent is the node agent: one per database server, it observes
// the local PostgreSQL every ~100 ms under a deadline and answers role
// checks (GET /primary, /replica, /health) from the last observation, with
// Patroni's meanings, so a router (HAProxy's httpchk) sends writes only to
// the primary. It also serves /status (its observation, as JSON, for its
// peers and for `understudy status`) and /metrics (Prometheus text).
//
// The shape: Observe (impure, deadline-bound) → NodeView; the peers' views
// from their agents' /status → PeerView; Answer (pure) → RoleAnswer; thin
// HTTP handlers render it.
package agent

import (
	"encoding"
	"fmt"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// Role is what the local server is doing, as the agent last saw it.
type Role string

const (
	RolePrimary Role = "primary" // answers and accepts writes
	RoleStandby Role = "standby" // answers, in recovery
	RoleDown    Role = "down"    // did not answer within the deadline, or refused
)

// LSN is a WAL position written as PostgreSQL writes it ("0/3000060") in JSON.
type LSN pgops.LSN

var (
	_ encoding.TextMarshaler   = LSN(0)
	_ encoding.TextUnmarshaler = (*LSN)(nil)
)

func (l LSN) MarshalText() ([]byte, error) { return []byte(pgops.LSN(l).String()), nil }

func (l *LSN) UnmarshalText(b []byte) error {
	v, err := pgops.ParseLSN(string(b))
	*l = LSN(v)
	return err
}

// NodeView is one observation of the local PostgreSQL: what the agent
// answers from, and what its /status serves to peers.
type NodeView struct {
	Node       string         `json:"node"`
	At         time.Time      `json:"observed_at"` // when the observation ended
	Took       time.Duration  `json:"took_ns"`
	Role       Role           `json:"role"`
	Error      string         `json:"error,omitempty"` // why the server is down
	SystemID   string         `json:"system_identifier,omitempty"`
	Timeline   pgops.Timeline `json:"timeline,omitempty"`
	WriteLSN   LSN            `json:"write_lsn,omitempty"`   // primary
	ReceiveLSN LSN            `json:"receive_lsn,omitempty"` // standby
	ReplayLSN  LSN            `json:"replay_lsn,omitempty"`  // standby
	LagSeconds float64        `json:"lag_seconds"`           // standby: age of the last replayed transaction while behind
	Receiver   string         `json:"receiver,omitempty"`    // standby: its walreceiver's state
	Sender     string         `json:"sender,omitempty"`      // standby: where it streams from
	Fenced     bool           `json:"fenced,omitempty"`
	// FilesAt is when the fence note (and the control file) were last
	// read, on the agent's slower loop; zero: not yet.
	FilesAt  time.Time `json:"files_read_at,omitzero"`
	Draining bool      `json:"draining,omitempty"` // a switchover drains this primary
	// ValidFor is how long the observation stands: past it, the loop that
	// makes them is stuck, and nothing it said is current.
	ValidFor time.Duration `json:"valid_for_ns"`
}

// Position is the newest WAL position the node knows of.
func (v NodeView) Position() pgops.LSN {
	if v.Role == RolePrimary {
		return pgops.LSN(v.WriteLSN)
	}
	return max(pgops.LSN(v.ReceiveLSN), pgops.LSN(v.ReplayLSN))
}

// PeerView is another node's view as its agent served it, or why it could
// not be had.
type PeerView struct {
	Node    string    `json:"node"`
	Fetched time.Time `json:"fetched_at,omitzero"` // when the view was read
	Error   string    `json:"error,omitempty"`     // the agent did not answer
	View    *NodeView `json:"view,omitempty"`
}

// LeaseState is the failover lease as this agent knows it. Until automatic
// failover exists it is "failover off" (the zero value), and /primary does
// not depend on it.
type LeaseState struct {
	Failover bool   `json:"failover"`
	Holder   string `json:"holder,omitempty"` // the node holding the lease, "" when none
}

// Limits the answers are judged by.
const (
	// PeerFresh is how old a peer's view may be and still count as
	// evidence of a newer primary.
	PeerFresh = 10 * time.Second
)

// RoleAnswer is the agent's judgement of one moment: every endpoint's
// verdict, and the facts behind them (the body of /primary, /replica and
// /health).
type RoleAnswer struct {
	Node       string         `json:"node"`
	Role       Role           `json:"role"`
	Timeline   pgops.Timeline `json:"timeline,omitempty"`
	WriteLSN   LSN            `json:"write_lsn,omitempty"`
	ReceiveLSN LSN            `json:"receive_lsn,omitempty"`
	ReplayLSN  LSN            `json:"replay_lsn,omitempty"`
	// LagBytes: standby only, behind the primary's position as its agent
	// last served it, or behind what this standby received when that is
	// not known (LagBase says which).
	LagBytes   *int64    `json:"lag_bytes,omitempty"`
	LagBase    string    `json:"lag_base,omitempty"`
	LagSeconds float64   `json:"lag_seconds"`
	Fenced     bool      `json:"fenced"`
	Draining   bool      `json:"draining"`
	ObservedAt time.Time `json:"observed_at"`

	Primary Verdict `json:"-"`
	Replica Verdict `json:"-"` // before any lag limit (ReplicaWithin applies it)
	Health  Verdict `json:"-"`
}

// Verdict is one endpoint's answer: OK is 200, else 503, and Reason says
// why in words.
type Verdict struct {
	OK     bool
	Reason string
}

// Answer judges the last observation at now. It is pure: every rule of /primary,
// /replica and /health is here.
//
// /primary is 200 only for a running primary, observed within ValidFor, that
// is not fenced, not being drained by a switchover, holds the lease when
// failover is on, and sees no peer that is a primary on a newer timeline
// (or on the same one: two primaries, which only an operator can settle).
// A peer that cannot be reached is no evidence either way.
func Answer(self NodeView, peers []PeerView, lease LeaseState, now time.Time) RoleAnswer {
	a := RoleAnswer{Node: self.Node, Role: self.Role, Timeline: self.Timeline, WriteLSN: self.WriteLSN,
		ReceiveLSN: self.ReceiveLSN, ReplayLSN: self.ReplayLSN, LagSeconds: self.LagSeconds,
		Fenced: self.Fenced, Draining: self.Draining, ObservedAt: self.At}
	age := now.Sub(self.At)
	switch {
	case self.At.IsZero():
		a.Role = RoleDown
		no := Verdict{Reason: "not observed yet: the agent is starting"}
		a.Primary, a.Replica, a.Health = no, no, no
		return a
	case age > self.ValidFor:
		// The observation loop itself is stuck: nothing known is current.
		a.Role = RoleDown
		no := Verdict{Reason: fmt.Sprintf("the last observation is %s old (limit %s)", age.Round(time.Millisecond), self.ValidFor)}
		a.Primary, a.Replica, a.Health = no, no, no
		return a
	case self.Role == RoleDown:
		no := Verdict{Reason: "PostgreSQL is not answering: " + self.Error}
		a.Primary, a.Replica, a.Health = no, no, no
		return a
	}
	a.Health = Verdict{OK: true, Reason: "PostgreSQL answers as " + string(self.Role)}

	// /primary
	switch {
	case self.Role != RolePrimary:
		a.Primary.Reason = "this node is a " + string(self.Role) + ", not the primary"
	case self.FilesAt.IsZero():
		a.Primary.Reason = "its fence note has not been read yet: the agent is starting"
	case self.Fenced:
		a.Primary.Reason = "this node is fenced (" + pgops.FenceNote + " in its data directory): it was replaced as the primary; `understudy rejoin " + self.Node + "` brings it back as a standby"
	case self.Draining:
		a.Primary.Reason = "a switchover is draining this primary"
	case lease.Failover && lease.Holder != self.Node:
		holder := lease.Holder
		if holder == "" {
			holder = "no node"
		}
		a.Primary.Reason = "the failover lease is held by " + holder
	default:
		a.Primary = Verdict{OK: true, Reason: fmt.Sprintf("the primary, on timeline %d", self.Timeline)}
		for _, p := range peers {
			v := p.View
			if v == nil || v.Role != RolePrimary || now.Sub(p.Fetched) > PeerFresh {
				continue
			}
			if v.SystemID != "" && self.SystemID != "" && v.SystemID != self.SystemID {
				continue // another cluster altogether: not a rival
			}
			switch {
			case v.Timeline > self.Timeline:
				a.Primary = Verdict{Reason: fmt.Sprintf("%s is a primary on a newer timeline (%d > %d): this node was replaced; `understudy rejoin %s` brings it back as a standby", p.Node, v.Timeline, self.Timeline, self.Node)}
			case v.Timeline == self.Timeline && !v.Fenced:
				a.Primary = Verdict{Reason: fmt.Sprintf("%s is also a primary on timeline %d: two primaries, so neither takes writes until an operator decides (`understudy check`)", p.Node, v.Timeline)}
			}
			if !a.Primary.OK {
				break
			}
		}
	}

	// /replica (its lag limit comes with the request)
	if self.Role == RoleStandby {
		switch {
		case self.Receiver != "streaming":
			state := self.Receiver
			if state == "" {
				state = "no walreceiver"
			}
			a.Replica.Reason = "this standby is not streaming (" + state + ")"
		default:
			a.Replica = Verdict{OK: true, Reason: "a streaming standby of " + self.Sender}
		}
		a.LagBytes, a.LagBase = lagBytes(self, peers, now)
	} else {
		a.Replica.Reason = "this node is a " + string(self.Role) + ", not a standby"
	}
	return a
}

// lagBytes is how far a standby's replay is behind the freshest primary
// position a peer's agent served, on the same timeline; else behind what
// it received itself.
func lagBytes(self NodeView, peers []PeerView, now time.Time) (*int64, string) {
	for _, p := range peers {
		v := p.View
		if v == nil || v.Role != RolePrimary || now.Sub(p.Fetched) > PeerFresh || v.Timeline != self.Timeline {
			continue
		}
		d := int64(v.WriteLSN) - int64(self.ReplayLSN)
		return new(max(d, 0)), "primary " + p.Node
	}
	d := int64(self.ReceiveLSN) - int64(self.ReplayLSN)
	return new(max(d, 0)), "received"
}

// ReplicaWithin applies a /replica?lag= limit to an answer.
func ReplicaWithin(a RoleAnswer, lim *LagLimit) Verdict {
	if !a.Replica.OK || lim == nil {
		return a.Replica
	}
	if lim.Bytes >= 0 {
		if a.LagBytes != nil && *a.LagBytes > lim.Bytes {
			return Verdict{Reason: fmt.Sprintf("%d bytes behind (%s), over the limit of %d", *a.LagBytes, a.LagBase, lim.Bytes)}
		}
		return Verdict{OK: true, Reason: fmt.Sprintf("%s, %d bytes behind (limit %d)", a.Replica.Reason, deref(a.LagBytes), lim.Bytes)}
	}
	lag := time.Duration(a.LagSeconds * float64(time.Second))
	if lag > lim.Duration {
		return Verdict{Reason: fmt.Sprintf("replay is %s behind, over the limit of %s", lag.Round(time.Millisecond), lim.Duration)}
	}
	return Verdict{OK: true, Reason: fmt.Sprintf("%s, %s behind (limit %s)", a.Replica.Reason, lag.Round(time.Millisecond), lim.Duration)}
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
