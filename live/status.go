package live

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/understudy-dev/understudy/internal/version"
	"github.com/understudy-dev/understudy/pgops"
)

// Status is one reading of every node: the data behind `status`, `status
// --json` (schema in docs/status-json.md) and `check`.
type Status struct {
	Taken   time.Time     `json:"taken_at"`
	Primary string        `json:"primary"` // "" when no node is a writable primary
	WALCap  string        `json:"wal_cap"` // max_slot_wal_keep_size in the plan
	Nodes   []NodeStatus  `json:"nodes"`
	Backup  *BackupStatus `json:"backup,omitempty"`

	// Understudy is the build that took the reading (this machine's).
	Understudy version.Build `json:"understudy"`
	// The node agents' answers and the routers' views (setups with agents).
	Agents  []AgentReading  `json:"agents,omitempty"`
	Routers []RouterReading `json:"routers,omitempty"`
	// Lease is automatic failover's lease as read from etcd (nil: off).
	Lease *LeaseReading `json:"lease,omitempty"`
}

// NodeStatus is one node's part of a Status.
type NodeStatus struct {
	Name      string `json:"name"`
	Addr      string `json:"addr"`
	Port      int    `json:"port"`
	Where     string `json:"where"`
	Reachable bool   `json:"reachable"`
	Running   *bool  `json:"running,omitempty"` // set when the node is unreachable
	Error     string `json:"error,omitempty"`
	Role      Role   `json:"role"`

	Facts *pgops.Facts `json:"facts,omitempty"`
	// On a primary: its walsenders and slots.
	Replication []pgops.Replication `json:"replication,omitempty"`
	Slots       []pgops.Slot        `json:"slots,omitempty"`
	Basebackups []pgops.Basebackup  `json:"basebackups,omitempty"`
	// Whether this node's pg_hba file lets each peer in for replication.
	HBA       map[string]HBAVerdict `json:"replication_hba"`
	HBAErrors []string              `json:"hba_errors,omitempty"`
	// On a standby, as its primary sees it.
	LagBytes   *int64   `json:"lag_bytes,omitempty"`
	LagSeconds *float64 `json:"lag_seconds,omitempty"`

	// What it runs PostgreSQL from (the accessory's image; a lab's programs).
	Image *NodeImage `json:"image,omitempty"`
}

// Role is what a node is doing.
type Role string

const (
	RolePrimary Role = "primary" // answers and accepts writes
	RoleStandby Role = "standby" // answers, in recovery
	RoleDown    Role = "down"    // does not answer
)

// Node returns a node's status.
func (s *Status) Node(name string) *NodeStatus {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i]
		}
	}
	return nil
}

// NodeReadTimeout bounds the reading of one node (its connection, every
// query, and the Running check after a failed connection): a server that
// does not answer within it is reported as such, never waited on.
var NodeReadTimeout = 15 * time.Second

// Gather reads every node and, when backups are set up, the backup storage,
// all at once: what status and check show. An unreachable node is reported,
// not an error; so is storage that does not answer (GatherBackup has its own
// deadline).
func Gather(ctx context.Context, t Target) (*Status, error) {
	var bs *BackupStatus
	var agents []AgentReading
	var routers []RouterReading
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		if t.Backup != nil {
			bs = GatherBackup(ctx, t.Backup)
		}
	}()
	var lease *LeaseReading
	go func() {
		defer func() { done <- struct{}{} }()
		agents, routers = GatherRouting(ctx, t)
		lease = readLease(ctx, t)
	}()
	st, err := GatherNodes(ctx, t)
	<-done
	<-done
	if st != nil {
		st.Backup, st.Agents, st.Routers, st.Lease = bs, agents, routers, lease
	}
	return st, err
}

// GatherNodes reads every node at once, and nothing else: what the role
// changes, apply and verify decide on. Backup storage is never read here,
// so a storage provider that hangs cannot stand between a user and a
// writable database. Each node's reading has its own deadline
// (NodeReadTimeout).
func GatherNodes(ctx context.Context, t Target) (*Status, error) {
	st := &Status{Taken: time.Now().UTC(), Understudy: version.Info(), WALCap: t.Cluster.WALCap, Nodes: make([]NodeStatus, len(t.Cluster.Nodes))}
	var wg sync.WaitGroup
	for i, n := range t.Cluster.Nodes {
		st.Nodes[i] = NodeStatus{Name: n.Name, Addr: n.Addr, Port: n.Port, Where: t.Control.Where(n.Name), Role: RoleDown, HBA: map[string]HBAVerdict{}}
		if img, ok := t.Images[n.Name]; ok {
			st.Nodes[i].Image = &img
		}
		wg.Add(1)
		go func(ns *NodeStatus) {
			defer wg.Done()
			nctx, cancel := context.WithTimeout(ctx, NodeReadTimeout)
			defer cancel()
			readNode(nctx, t, ns)
			if nctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
				ns.Error = fmt.Sprintf("no answer within %s (reading its state): %s", NodeReadTimeout, ns.Error)
			}
		}(&st.Nodes[i])
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading the nodes: %w", err)
	}
	for i := range st.Nodes {
		if st.Nodes[i].Role == RolePrimary {
			if st.Primary != "" {
				st.Primary = "" // two writable nodes: no single primary
				break
			}
			st.Primary = st.Nodes[i].Name
		}
	}
	if p := st.Node(st.Primary); p != nil {
		for _, r := range p.Replication {
			if s := st.Node(r.Name); s != nil && s.Role == RoleStandby {
				b, sec := r.LagBytes, r.ReplayLag
				s.LagBytes, s.LagSeconds = &b, &sec
			}
		}
	}
	return st, nil
}

func readNode(ctx context.Context, t Target, ns *NodeStatus) {
	c, err := t.Control.Conn(ctx, ns.Name)
	if err != nil {
		ns.Error = err.Error()
		if run, rerr := t.Control.Running(ctx, ns.Name); rerr == nil {
			ns.Running = &run
		}
		return
	}
	defer c.Close(context.WithoutCancel(ctx))
	fail := func(err error) { ns.Error = err.Error() }
	f, err := pgops.ReadFacts(ctx, c)
	if err != nil {
		fail(err)
		return
	}
	ns.Reachable, ns.Facts = true, &f
	ns.Role = RolePrimary
	if f.InRecovery {
		ns.Role = RoleStandby
	}
	if ns.Slots, err = pgops.ReadSlots(ctx, c); err != nil {
		fail(err)
		return
	}
	if !f.InRecovery {
		if ns.Replication, err = pgops.ReadReplication(ctx, c); err != nil {
			fail(err)
			return
		}
		if ns.Basebackups, err = pgops.ReadBasebackups(ctx, c); err != nil {
			fail(err)
			return
		}
	}
	rules, err := pgops.ReadHBARules(ctx, c)
	if err != nil {
		fail(fmt.Errorf("reading the pg_hba rules: %w", err))
		return
	}
	for _, r := range rules {
		if r.Error != "" {
			ns.HBAErrors = append(ns.HBAErrors, fmt.Sprintf("line %d: %s", r.Line, r.Error))
		}
	}
	for _, peer := range t.Cluster.Nodes {
		if peer.Name != ns.Name {
			ns.HBA[peer.Name] = HBADecides(rules, "replication", t.Cluster.ReplUser, peer.Addr)
		}
	}
}
