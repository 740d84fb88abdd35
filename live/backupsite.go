package live

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/pgops"
)

// BackupSite is where a target's backup work runs, as Control is where its
// nodes run: the lab does it on this machine; Kamal in the backup accessory
// next to the standby (base backups, drills: the nodes' own image, its
// PostgreSQL and locales) and in a fresh container of a node's image on its
// server (a restore into that node). The backup commands reach the work
// only through it, so they never ask which target they have.
type BackupSite interface {
	// TakeBase takes a base backup now and applies retention, its
	// progress written to out.
	TakeBase(ctx context.Context, out io.Writer) error
	// Drill restores the latest point into a scratch directory, proves it
	// reached where the primary was, runs check, and stores the record.
	// It returns the record when it ran here; where it ran elsewhere, what
	// it printed went to out and the record is nil (a failed drill is then
	// a *DrillFailed).
	Drill(ctx context.Context, out io.Writer, o DrillOptions) (*backup.DrillRecord, error)
	// NodeData says whether a node's data directory is missing or empty,
	// and what it holds when it is not.
	NodeData(ctx context.Context, node string) (empty bool, what string, err error)
	// RestoreIntoNode restores into a node's data directory (which
	// NodeData found empty) and leaves the recovered cluster stopped.
	RestoreIntoNode(ctx context.Context, out io.Writer, node string, target RestoreTarget) error
	// Here is how a restore runs on this machine (restore --into DIR):
	// PostgreSQL's programs, whom as, and a role of the cluster.
	Here() (LocalRestore, error)
}

// DrillOptions are a drill's: the check to run on the restored copy, and
// whether what it prints is JSON.
type DrillOptions struct {
	Check string
	JSON  bool
}

// DrillFailed is a drill that ran elsewhere and did not pass: Code 1 is a
// failed drill, 2 a drill that could not run (restore drill's exit status).
type DrillFailed struct {
	Code  int
	Where string
}

func (e *DrillFailed) Error() string { return "the restore drill in " + e.Where + " did not pass" }

// RestoreTarget is a point to restore to: the parsed target, and the user's
// words for it (what a restore run elsewhere is given).
type RestoreTarget struct {
	backup.Target
	Text string // "latest" or the time as given
}

// LocalRestore is a restore on this machine: the PostgreSQL programs,
// whom they run as, and a role of the restored cluster to log in as.
type LocalRestore struct {
	BinDir string
	Cred   *syscall.Credential
	User   string
}

// RestoreIntoNode brings a lost cluster back into one of its nodes, which
// then starts as the primary: the nodes are read (GatherNodes) and the
// node's data directory (BackupSite.NodeData), the pure DecideRestoreInto
// refuses anything but a lost cluster, the site restores where the node's
// data lives, and the node is started and waited on.
func RestoreIntoNode(ctx context.Context, t Target, site BackupSite, out io.Writer, node string, target RestoreTarget) error {
	st, err := GatherNodes(ctx, t)
	if err != nil {
		return err
	}
	f := RestoreIntoFacts{Status: st, Node: node}
	if _, ok := t.Cluster.Node(node); ok {
		if f.DataEmpty, f.DataWhat, err = site.NodeData(ctx, node); err != nil {
			return err
		}
	}
	if err := DecideRestoreInto(f); err != nil {
		return err
	}
	fmt.Fprintf(out, "restoring to %s into %s (no node runs: the cluster is lost)\n", target.Target, t.Control.Where(node))
	if err := site.RestoreIntoNode(ctx, out, node, target); err != nil {
		return err
	}
	if err := t.Control.Start(ctx, node); err != nil {
		return fmt.Errorf("the data is restored, but starting %s failed: %w", node, err)
	}
	if _, err := WaitReady(ctx, t.Control, node, 2*time.Minute); err != nil {
		return fmt.Errorf("the data is restored, but %s does not answer: %w", node, err)
	}
	fmt.Fprintf(out, "✓ %s runs the restored data as the primary\n", node)
	for _, n := range t.Cluster.Nodes {
		if n.Name != node {
			fmt.Fprintf(out, "  %s still holds the lost cluster's timeline: `understudy rejoin %s` makes it a standby of %s (pg_rewind, or a fresh clone)\n", n.Name, n.Name, node)
		}
	}
	return nil
}

// WaitArchived reads where the primary is and waits (timeout at most)
// until the backup agent reports the archive holds it: what a drill must
// reach.
func WaitArchived(ctx context.Context, t Target, store backup.Store, timeout time.Duration) (pgops.LSN, pgops.Timeline, error) {
	st, err := GatherNodes(ctx, t)
	if err != nil {
		return 0, 0, err
	}
	p := st.Node(st.Primary)
	if p == nil || p.Facts == nil {
		return 0, 0, errors.New("no single primary answers: a drill proves the archive against the primary's position (`understudy check` says why)")
	}
	lsn := p.Facts.CurrentLSN
	deadline := time.Now().Add(timeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ag, err := backup.ReadAgentStatus(rctx, store)
		cancel()
		if err == nil && ag.ArchivedLSN >= lsn {
			return lsn, ag.ArchivedTLI, nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("the archive did not reach %s within %s (agent: %v): see `understudy status`", lsn, timeout, err)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
