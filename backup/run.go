package backup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// HistorySteps reads timeline tli's history from the archive (nil for
// timeline 1, which has none).
func HistorySteps(ctx context.Context, store Store, key *Key, tli pgops.Timeline) ([]pgops.TimelineStep, error) {
	if tli <= 1 {
		return nil, nil
	}
	r, err := store.Get(ctx, walKey(pgops.HistoryFileName(tli)))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, &RestoreError{What: fmt.Sprintf("timeline %d's history file is not in the archive", tli), Fix: "name a timeline the archive has (`understudy backups` lists them)"}
		}
		return nil, err
	}
	defer r.Close()
	o, err := key.Open(r)
	if err != nil {
		return nil, describe(err, pgops.HistoryFileName(tli))
	}
	defer o.Close()
	b, err := io.ReadAll(io.LimitReader(o, 1<<20))
	if err != nil {
		return nil, describe(err, pgops.HistoryFileName(tli))
	}
	return pgops.ParseHistory(string(b))
}

// Plan reads the catalogue and the target timeline's history, then
// decides with PlanRestore.
func Plan(ctx context.Context, store Store, key *Key, target Target) (RestorePlan, Catalog, error) {
	cat, err := ReadCatalog(ctx, store)
	if err != nil {
		return RestorePlan{}, cat, err
	}
	tli := target.Timeline
	if tli == 0 {
		tli = NewestTimeline(cat)
	}
	steps, err := HistorySteps(ctx, store, key, tli)
	if err != nil {
		return RestorePlan{}, cat, err
	}
	t := target
	t.Timeline = tli
	rp, err := PlanRestore(cat, t, steps)
	if err == nil && target.Timeline == 0 {
		rp.Target.Timeline = 0 // recover along 'latest', as decided
	}
	return rp, cat, err
}

// RestoreRequest is a restore into a new directory on this machine.
type RestoreRequest struct {
	Store    Store
	Key      *Key
	Target   Target
	BinDir   string
	Dir      string // the new data directory (missing or empty)
	Port     int    // for the restored server's socket
	User     string // a role of the cluster to log in as (default postgres)
	Cred     *syscall.Credential
	Timeout  time.Duration // for recovery
	Progress func(stage string, p Progress)
}

// WALDir is where a restore puts the WAL it fetched: beside the data
// directory, removed once recovery has ended.
func (r RestoreRequest) WALDir() string { return r.Dir + ".restore-wal" }

// Restore plans, fetches, starts the restored server and waits for it to
// finish recovery. The server is left running (Stop it) as a standalone
// primary on a Unix socket only.
func Restore(ctx context.Context, req RestoreRequest) (Restored, *Server, error) {
	var res Restored
	rp, _, err := Plan(ctx, req.Store, req.Key, req.Target)
	if err != nil {
		return res, nil, err
	}
	res.Base, res.Target, res.Segments = rp.Base.ID, rp.Target.String(), len(rp.Segments)
	walDir := req.WALDir()
	t0 := time.Now()
	if err := Fetch(ctx, req.Store, req.Key, rp, req.BinDir, req.Dir, walDir, req.Progress); err != nil {
		return res, nil, err
	}
	res.Fetch, res.Bytes = time.Since(t0), rp.Base.Bytes
	// PostgreSQL wants its data directory 0700 (or 0750); one that existed
	// empty (a volume's mount point) may be 0755.
	if err := os.Chmod(req.Dir, 0o700); err != nil {
		return res, nil, err
	}
	sock := filepath.Join(walDir, "sock")
	os.MkdirAll(sock, 0o700)
	if req.Cred != nil {
		for _, d := range []string{req.Dir, walDir} {
			filepath.Walk(d, func(p string, _ os.FileInfo, _ error) error {
				os.Lchown(p, int(req.Cred.Uid), int(req.Cred.Gid))
				return nil
			})
		}
	}
	srv := &Server{BinDir: req.BinDir, Dir: req.Dir, WALDir: walDir, Sock: sock, Port: req.Port, User: cmp.Or(req.User, "postgres"), Cred: req.Cred, Log: req.Dir + ".restore.log"}
	t1 := time.Now()
	if err := srv.Start(ctx); err != nil {
		return res, nil, err
	}
	timeout := req.Timeout
	if timeout == 0 {
		timeout = 30 * time.Minute
	}
	got, err := srv.WaitPromoted(ctx, timeout)
	if err != nil {
		// The directory was empty before: leave it so (the log stays).
		srv.Stop(context.WithoutCancel(ctx))
		emptyDir(req.Dir)
		os.RemoveAll(walDir)
		return res, nil, err
	}
	res.Timeline, res.Reached, res.LastCommit = got.Timeline, got.Reached, got.LastCommit
	res.Replay = time.Since(t1)
	return res, srv, nil
}
