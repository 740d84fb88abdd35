package backup_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/ledger"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/pgops"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// backedUp is a running lab with storage, an agent in this process, and
// the agent's first base backup.
func backedUp(t *testing.T, o labtest.Options, tune func(*backup.AgentConfig)) (*lab.Lab, context.Context, *backup.Agent, backup.BaseInfo) {
	t.Helper()
	o.Backup = true
	l := labtest.Up(t, o)
	a := labtest.Agent(t, l, tune)
	first := labtest.WaitBase(t, l, time.Time{}, 2*time.Minute)
	return l, ctxT(t), a, first
}

// restoreDir is a new, empty place for a restore, removed with the test.
func restoreDir(t *testing.T) string {
	root, err := os.MkdirTemp("", "understudy-restore-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755)
	t.Cleanup(func() { os.RemoveAll(root) })
	return filepath.Join(root, "data")
}

// restore restores the lab's archive to target and returns the running
// server (stopped when the test ends).
func restore(t *testing.T, l *lab.Lab, target backup.Target) (backup.Restored, *backup.Server) {
	t.Helper()
	ports, err := netutil.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	res, srv, err := backup.Restore(ctxT(t), backup.RestoreRequest{Store: labtest.Store(t, l), Key: labtest.Key(t, l), Target: target,
		BinDir: l.Bin, Dir: restoreDir(t), Port: ports[0], Cred: l.Cred(), Timeout: 3 * time.Minute})
	if err != nil {
		t.Fatalf("restore to %s: %v", target, err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	// Once recovery has ended the copy keeps no recovery target and no
	// path into the restore's WAL directory.
	auto, _ := os.ReadFile(filepath.Join(srv.Dir, "postgresql.auto.conf"))
	for _, name := range backup.RecoverySettings {
		if strings.Contains(string(auto), name+" =") {
			t.Errorf("postgresql.auto.conf of the restored copy still sets %s:\n%s", name, auto)
		}
	}
	return res, srv
}

func connString(srv *backup.Server) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", srv.Sock, srv.Port)
}

func query(t *testing.T, srv *backup.Server, sql string) string {
	t.Helper()
	c, err := srv.Conn(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var s string
	if err := c.QueryRow(ctxT(t), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// The point-in-time proof: a writer records every commit the primary
// acknowledges; a table is dropped at T. A restore to T has the table and
// every commit acknowledged before T, and no row written after T. A
// restore to `latest` has every acknowledged commit.
func TestPITRBeforeADroppedTable(t *testing.T) {
	t.Parallel()
	l, ctx, a, base := backedUp(t, labtest.Options{}, nil)
	labtest.Exec(t, l, "db", "CREATE TABLE precious (id int PRIMARY KEY, note text)", "INSERT INTO precious SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
	if !base.FromStandby || base.Source != "db-replica" {
		t.Errorf("the base backup came from %s (standby %v); it should come from the standby", base.Source, base.FromStandby)
	}
	if err := ledger.Prepare(ctx, l.AppConnString()); err != nil {
		t.Fatal(err)
	}
	load := ledger.Start(ctx, l.AppConnString(), 4)
	time.Sleep(3 * time.Second)
	T := time.Now()
	labtest.Exec(t, l, "db", "DROP TABLE precious")
	time.Sleep(2 * time.Second)
	load.Stop()
	end := labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text")
	endLSN, _ := pgops.ParseLSN(end)
	labtest.WaitFor(t, time.Minute, "the archive to reach "+end, func() bool { return a.Status().ArchivedLSN >= endLSN })

	res, srv := restore(t, l, backup.Target{Time: T})
	if got := query(t, srv, "SELECT count(*)::text FROM precious"); got != "1000" {
		t.Errorf("the restore to T has %s rows of the dropped table, want 1000", got)
	}
	before := load.AckedBefore(T)
	missing, err := ledger.Missing(ctx, connString(srv), before)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) == 0 || missing != 0 {
		t.Errorf("the restore to T misses %d of the %d commits acknowledged before T", missing, len(before))
	}
	if after := query(t, srv, fmt.Sprintf("SELECT count(*)::text FROM %s WHERE at > '%s'", ledger.Table, T.UTC().Format(time.RFC3339Nano))); after != "0" {
		t.Errorf("the restore to T holds %s rows written after T", after)
	}
	t.Logf("restore to T: base %s, %d WAL files, fetched in %.1f s, replayed in %.1f s; %d commits before T, last commit %s (T %s)",
		res.Base, res.Segments, res.Fetch.Seconds(), res.Replay.Seconds(), len(before), res.LastCommit.Format(time.RFC3339Nano), T.Format(time.RFC3339Nano))
	srv.Stop(ctx)

	_, srv2 := restore(t, l, backup.Target{Latest: true})
	all := load.AckedBefore(time.Now())
	missing, err = ledger.Missing(ctx, connString(srv2), all)
	if err != nil {
		t.Fatal(err)
	}
	if missing != 0 {
		t.Errorf("the latest restore misses %d of %d acknowledged commits", missing, len(all))
	}
	if got := query(t, srv2, "SELECT count(*)::text FROM pg_tables WHERE tablename = 'precious'"); got != "0" {
		t.Errorf("the latest restore still has the dropped table")
	}
}
