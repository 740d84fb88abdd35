package backup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/pgops"
)

// A wrong key, a damaged object, a missing segment, a directory that holds
// a cluster: each restore refuses with what to do, and leaves nothing in
// the directory it was given.
func TestRestoreRefusesAndWritesNothing(t *testing.T) {
	t.Parallel()
	l, ctx, a, _ := backedUp(t, labtest.Options{}, nil)
	labtest.Tool(t, l, "db", "pgbench", "-i", "-s", "2", "-q")
	labtest.Exec(t, l, "db", "SELECT pg_switch_wal()", "CREATE TABLE after_switch (x int)", "SELECT pg_switch_wal()", "INSERT INTO after_switch VALUES (1)")
	end, _ := pgops.ParseLSN(labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text"))
	labtest.WaitFor(t, time.Minute, "the archive to catch up", func() bool { return a.Status().ArchivedLSN >= end })
	store, key := labtest.Store(t, l), labtest.Key(t, l)
	cat, err := backup.ReadCatalog(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	var complete []backup.WALFile
	for _, f := range cat.WAL {
		if !f.History && !f.Partial && f.Seg.No > uint64(cat.Bases[0].EndLSN)/cat.SegSize {
			complete = append(complete, f)
		}
	}
	if len(complete) < 2 {
		t.Fatalf("want at least two complete segments after the base backup, have %d", len(complete))
	}
	objPath := func(key string) string {
		cfg := l.S3Config()
		return filepath.Join(l.StorageDir(), cfg.Bucket, cfg.Prefix, key)
	}

	try := func(name string, k *backup.Key, dir string, target backup.Target, want string) {
		t.Helper()
		if dir == "" {
			dir = restoreDir(t)
		}
		_, srv, err := backup.Restore(ctx, backup.RestoreRequest{Store: store, Key: k, Target: target, BinDir: l.Bin, Dir: dir, Port: 1, Cred: l.Cred(), Timeout: time.Minute})
		if srv != nil {
			srv.Stop(context.Background())
		}
		var re *backup.RestoreError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), want) || re.Fix == "" {
			t.Errorf("%s: got %v, want a refusal naming %q with a fix", name, err, want)
		}
		for _, d := range []string{dir, dir + ".restore-wal"} {
			if entries, _ := os.ReadDir(d); len(entries) > 0 && name != "over a cluster" {
				t.Errorf("%s: %s keeps %d entries after the refusal", name, d, len(entries))
			}
		}
	}

	other, _ := backup.GenerateKey()
	try("wrong key", other, "", backup.Target{Latest: true}, "encrypted to key")

	seg := complete[0]
	p := objPath("wal/" + seg.Name)
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), orig...)
	bad[len(bad)/2] ^= 0x40
	os.WriteFile(p, bad, 0o644)
	try("damaged WAL", key, "", backup.Target{Latest: true}, "WAL file "+seg.Name+" is damaged")
	os.WriteFile(p, orig, 0o644)

	bp := objPath("base/" + cat.Bases[0].ID + "/data.tar.zst.age")
	borig, err := os.ReadFile(bp)
	if err != nil {
		t.Fatal(err)
	}
	bbad := append([]byte(nil), borig...)
	bbad[len(bbad)/3] ^= 0x01
	os.WriteFile(bp, bbad, 0o644)
	try("damaged base", key, "", backup.Target{Latest: true}, "is damaged")
	os.WriteFile(bp, borig, 0o644)

	try("over a cluster", key, l.DataDir("db-replica"), backup.Target{Latest: true}, "holds a PostgreSQL cluster")
	if _, err := os.Stat(filepath.Join(l.DataDir("db-replica"), "recovery.signal")); err == nil {
		t.Errorf("a recovery.signal was written into the standby's data directory")
	}

	os.Rename(p, p+".aside")
	try("missing WAL", key, "", backup.Target{Latest: true}, seg.Name+" is missing")
	os.Rename(p+".aside", p)

	// With everything back in place, the same restore works.
	_, srv := restore(t, l, backup.Target{Latest: true})
	if got := query(t, srv, "SELECT count(*)::text FROM after_switch"); got != "1" {
		t.Errorf("the restore after the refusals has %s rows, want 1", got)
	}
}
