// Package live works on running nodes: apply brings them to the plan,
// status and check read and judge them, verify proves replication works.
// It reaches nodes only through Control, so the same code runs against the
// local lab and against Kamal accessories on servers.
package live

import (
	"context"
	"fmt"
	"github.com/understudy-dev/understudy/backup"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// Control is how to reach and control the nodes of one cluster.
type Control interface {
	// Conn opens a superuser connection to a node's server.
	Conn(ctx context.Context, node string) (*pgx.Conn, error)
	// Start runs a node from its boot script (Kamal: accessory boot). It
	// returns once the node is started, not once it is ready.
	Start(ctx context.Context, node string) error
	// Stop shuts a node's server down cleanly and waits for it (Kamal:
	// stop the container, never postgres inside it).
	Stop(ctx context.Context, node string) error
	// Running reports whether a node's server or its boot script runs.
	Running(ctx context.Context, node string) (bool, error)
	// Where names a node for messages, e.g. "lab node db (127.0.0.1:5433)".
	Where(node string) string
	// Run runs a shell script (pgconf's role scripts) in the node's
	// environment, with PGDATA set, as the postgres user, while its server
	// is stopped (Kamal: kamal accessory exec, a fresh container with the
	// accessory's volumes). It returns the script's output.
	Run(ctx context.Context, node, script string) (string, error)
}

// Rebooter is implemented by controls whose restart must also bring new
// files and command line (Kamal: accessory reboot). apply uses it for a
// restart instead of Stop and Start.
type Rebooter interface {
	Reboot(ctx context.Context, node string) error
}

// BootScriptRefresher is implemented by controls whose nodes' boot
// script is a file on their servers that only a reboot replaces (Kamal: a
// files: entry, uploaded by accessory boot and reboot). apply puts a
// changed one in place without restarting the node, so that the next
// start, by apply or by Docker's restart policy, runs it (with failover
// turned on: read-only).
type BootScriptRefresher interface {
	BootScriptCurrent(ctx context.Context, node string) (bool, error)
	RefreshBootScript(ctx context.Context, node string) error
}

// ControlReader is implemented by controls that can read a stopped node's
// control file without starting anything next to it (Kamal: docker cp of
// global/pg_control out of the stopped container; the lab: the file). A
// switchover reads it between the stop and the promote, while writes wait.
type ControlReader interface {
	ReadControl(ctx context.Context, node string) (pgops.ControlData, error)
}

// RoleChangePreparer is implemented by controls whose role-change steps
// can fail for reasons of their own (Kamal: docker access on the server,
// the image present there, a fresh container with the node's volumes).
// A role change calls it for every node it will act on before it stops
// anything, so whatever fails afterwards has already worked once.
type RoleChangePreparer interface {
	PrepareRoleChange(ctx context.Context, nodes ...string) error
}

// Reacher is implemented by controls that can prove, before anything
// changes, that every node's server can be reached (Kamal: an SSH login).
type Reacher interface {
	Reach(ctx context.Context, node string) error
}

// ReachAll checks every node's server when the control can (Kamal: an
// SSH login to each); a command that changes things calls it first, so bad
// SSH settings change nothing.
func ReachAll(ctx context.Context, t Target) error { return reachAll(ctx, t) }

// reachAll checks the named nodes' servers (all when none is named) when
// the control can.
func reachAll(ctx context.Context, t Target, nodes ...string) error {
	r, ok := t.Control.(Reacher)
	if !ok {
		return nil
	}
	if len(nodes) == 0 {
		for _, n := range t.Cluster.Nodes {
			nodes = append(nodes, n.Name)
		}
	}
	for _, n := range nodes {
		if err := r.Reach(ctx, n); err != nil {
			return fmt.Errorf("nothing was changed: %w", err)
		}
	}
	return nil
}

// Outsider is implemented by controls that can open a TCP connection from
// an address that is not a node (the lab's third network namespace), so
// verify can prove that the nodes refuse replication from anywhere else.
// OutsiderAddr returns "" when the control cannot do it.
type Outsider interface {
	OutsiderAddr() string
	DialOutsider(ctx context.Context, network, addr string) (net.Conn, error)
}

// Target is one cluster as apply, status, check and verify see it.
type Target struct {
	Cluster  pgconf.Cluster
	Control  Control
	Password string // the replication role's password
	// MonitorPassword is the node agents' login's password (the role is
	// Cluster.MonitorUser); "" when the setup has no agents.
	MonitorPassword string
	Backup          *BackupAccess
	// BackupAgent runs the backup accessory (Kamal); nil on the lab, whose
	// agent `lab up --backup` starts.
	BackupAgent BackupAgentDeployer
	// Backups is where the backup work runs (base backups, drills,
	// restores); nil when the target has no backups set up.
	Backups BackupSite
	// Images: what each node runs PostgreSQL from (nil: not known).
	Images map[string]NodeImage
	// Routing reads the node agents and routers; nil without agents.
	Routing RoutingReader
	// RoutingDeployers run the agents' and the router's accessories
	// (Kamal); none on the lab, whose `lab up` starts them.
	RoutingDeployers []RoutingDeployer
	// Lease is automatic failover's lease in etcd (nil: failover off, or
	// no way to reach etcd from here).
	Lease LeaseControl
}

// NodeImage is what a node runs PostgreSQL from: on Kamal its accessory's
// image, in a lab the directory of PostgreSQL's programs. Major is 0 when
// the reference does not say.
type NodeImage struct {
	Ref      string `json:"ref"`
	Major    int    `json:"major,omitempty"`
	Programs bool   `json:"programs,omitempty"` // Ref is a directory of programs (a lab)
}

func (i NodeImage) String() string {
	if i.Programs {
		return "the programs in " + i.Ref
	}
	return "the image " + i.Ref
}

// BackupAccess is how status and check read the backups: the bucket, and
// the key when this machine has it (KeyErr says why not).
type BackupAccess struct {
	Store  backup.Store
	Where  string
	Key    *backup.Key
	KeyErr error
	Err    error // the bucket cannot be opened (its secrets do not resolve)
}
