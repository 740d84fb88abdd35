package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/live"
)

// BackupSite is the lab's live.BackupSite: every part of the backup work
// runs on this machine, with the lab's PostgreSQL programs, as the lab's
// user, into the lab's directories.
type BackupSite struct{ l *Lab }

var _ live.BackupSite = (*BackupSite)(nil)

// BackupSite is where the lab's backup work runs; nil when the lab has no
// backups.
func (l *Lab) BackupSite() *BackupSite {
	if l.state.Backup == nil {
		return nil
	}
	return &BackupSite{l: l}
}

func (s *BackupSite) open() (*backup.S3, *backup.Key, error) {
	store, err := s.l.BackupStore()
	if err != nil {
		return nil, nil, err
	}
	key, err := s.l.BackupKey()
	if err != nil {
		return nil, nil, fmt.Errorf("restoring needs the backup key here: %w", err)
	}
	return store, key, nil
}

// TakeBase takes a base backup here, from the lab's standby.
func (s *BackupSite) TakeBase(ctx context.Context, out io.Writer) error {
	store, key, err := s.open()
	if err != nil {
		return err
	}
	cfg := s.l.AgentConfig(io.Discard)
	return live.TakeBaseHere(ctx, &cfg, store, store.Where(), key, s.l.state.Backup.Policy, out)
}

// Here is a restore on this machine: the lab's programs, as the lab's user.
func (s *BackupSite) Here() (live.LocalRestore, error) {
	return live.LocalRestore{BinDir: s.l.Bin, Cred: s.l.Cred(), User: "postgres"}, nil
}

// request is a restore of target into dir, served on a free port.
func (s *BackupSite) request(target backup.Target, dir string) (backup.RestoreRequest, error) {
	store, key, err := s.open()
	if err != nil {
		return backup.RestoreRequest{}, err
	}
	ports, err := netutil.FreePorts(1)
	if err != nil {
		return backup.RestoreRequest{}, err
	}
	h, _ := s.Here()
	return backup.RestoreRequest{Store: store, Key: key, Target: target, BinDir: h.BinDir, Dir: dir, Port: ports[0], Cred: h.Cred, User: h.User}, nil
}

// Drill restores the latest point into a scratch directory here, once the
// archive holds where the primary is.
func (s *BackupSite) Drill(ctx context.Context, out io.Writer, o live.DrillOptions) (*backup.DrillRecord, error) {
	scratch, err := os.MkdirTemp("", "understudy-drill-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	os.Chmod(scratch, 0o755) // the lab's postgres user makes the directory inside
	req, err := s.request(backup.Target{Latest: true}, filepath.Join(scratch, "drill"))
	if err != nil {
		return nil, err
	}
	expected, tli, err := live.WaitArchived(ctx, s.l.Target(), req.Store, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "drill: restoring the latest backup; it must reach %s (where the primary was)\n", expected)
	rec, err := backup.Drill(ctx, backup.DrillRequest{RestoreRequest: req, Expected: expected, ExpectedTLI: tli, Check: o.Check})
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// NodeData says whether a node's data directory is missing or empty.
func (s *BackupSite) NodeData(ctx context.Context, node string) (bool, string, error) {
	err := backup.CheckEmptyTarget(s.l.DataDir(node))
	return err == nil, fmt.Sprint(err), nil
}

// RestoreIntoNode restores into the node's data directory and stops the
// recovered server, so the node's boot script starts it.
func (s *BackupSite) RestoreIntoNode(ctx context.Context, out io.Writer, node string, target live.RestoreTarget) error {
	req, err := s.request(target.Target, s.l.DataDir(node))
	if err != nil {
		return err
	}
	req.Progress = live.RestoreProgress(out)
	res, srv, err := backup.Restore(ctx, req)
	if err != nil {
		return err
	}
	if err := srv.Stop(ctx); err != nil {
		return err
	}
	fmt.Fprint(out, live.RestoredText(res))
	return nil
}
