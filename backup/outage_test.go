package backup_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
)

// resumeSegment is the segment pg_receivewal starts at when it next runs
// on this spool: the newest partial segment itself, or the one after the
// newest complete segment (pg_receivewal docs: it resumes where its
// directory ends, at a segment boundary). "" for an empty spool.
func resumeSegment(dir string) string {
	entries, _ := os.ReadDir(dir)
	newest, partial := "", false
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".partial")
		if len(name) == 24 && (name > newest || name == newest && name != e.Name()) {
			newest, partial = name, name != e.Name()
		}
	}
	if newest == "" || partial {
		return newest
	}
	seg, ok := pgops.ParseSegmentName(newest, 16<<20)
	if !ok {
		return newest
	}
	seg.No++
	return seg.Name(16 << 20)
}

func dirBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// Storage down for longer than the slot cap allows: the primary keeps
// writing and keeps no WAL for the backups, the agent's spool stays under
// its cap, check goes critical; when the storage is back, the agent says
// plainly that WAL was lost and takes a new base backup, and check is
// clean again.
func TestStorageOutagePastTheCapNeverHurtsThePrimary(t *testing.T) {
	t.Parallel()
	const spoolCap = 32 << 20
	l, ctx, a, first := backedUp(t, labtest.Options{WALCap: "64MB"}, func(c *backup.AgentConfig) { c.SpoolCap = spoolCap })

	if err := l.StopStorage(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	labtest.Tool(t, l, "db", "pgbench", "-i", "-s", "10", "-q") // about 160 MB of WAL, while the storage is down
	labtest.WaitFor(t, time.Minute, "the agent to stop receiving", func() bool { return a.Status().Paused != "" })
	// However far pg_receivewal got before it stopped, keep writing (about
	// 20 MB of WAL a round: random text that TOAST cannot compress) until
	// the slot is further behind than its cap.
	labtest.Exec(t, l, "db", "CREATE TABLE filler (x text)")
	labtest.WaitFor(t, 2*time.Minute, "the standby to remove WAL its backup slot needed (past the cap)", func() bool {
		labtest.Exec(t, l, "db", "INSERT INTO filler SELECT (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 60) i) FROM generate_series(1, 10000) g", "CHECKPOINT")
		at := labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text")
		labtest.WaitFor(t, time.Minute, "the standby to replay the checkpoint", func() bool {
			return labtest.Query(t, l, "db-replica", "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", at) == "true"
		})
		labtest.Exec(t, l, "db-replica", "CHECKPOINT")
		s := labtest.Query(t, l, "db-replica", "SELECT coalesce((SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'understudy_backup'), 'none')")
		// Removed, not only unreserved; and removed past where the agent's
		// pg_receivewal resumes (its slot's position may lag what it wrote,
		// and it resumes after the newest complete segment it holds): the
		// gap is real.
		oldest := labtest.Query(t, l, "db-replica", "SELECT coalesce(min(name), '') FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'")
		return s == "lost" && oldest > resumeSegment(filepath.Join(l.Dir, "backup", "spool"))
	})
	if n := labtest.Query(t, l, "db", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'"); n != "0" {
		t.Errorf("the primary has a backup slot")
	}
	if spool := dirBytes(filepath.Join(l.Dir, "backup", "spool")); spool > spoolCap+3*16<<20 {
		t.Errorf("the spool holds %d MB, over its %d MB cap", spool>>20, spoolCap>>20)
	}
	// The primary took every write.
	if n := labtest.Query(t, l, "db", "SELECT count(*)::text FROM pgbench_accounts"); n != "1000000" {
		t.Errorf("pgbench_accounts has %s rows on the primary", n)
	}
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, live.CodeBackupStorage, live.Critical, "") || !labtest.Has(fs, live.CodeBackupSlotLost, live.Critical, "db-replica") {
		t.Errorf("during the outage check found:\n%s", live.FindingsText(fs))
	}

	if err := l.StartStorage(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("storage was down %.1f s", time.Since(down).Seconds())
	labtest.WaitFor(t, 2*time.Minute, "the agent to report the gap", func() bool { return a.Status().Gap != "" || a.Status().LastBase != first.ID })
	second := labtest.WaitBase(t, l, down, 3*time.Minute)
	labtest.WaitFor(t, time.Minute, "the gap to be closed by the new base backup, in the agent's report", func() bool {
		st, err := backup.ReadAgentStatus(ctx, labtest.Store(t, l))
		return err == nil && st.Gap == "" && st.LastGap != ""
	})
	labtest.Exec(t, l, "db", "CREATE TABLE after_outage (x int)", "INSERT INTO after_outage VALUES (42)")
	end := labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text")
	labtest.WaitFor(t, time.Minute, "the archive to catch up with "+end, func() bool {
		lsn, err := pgops.ParseLSN(end)
		return err == nil && a.Status().ArchivedLSN >= lsn
	})
	fs = labtest.Findings(t, l, live.DefaultThresholds)
	for _, f := range fs {
		if f.Severity == live.Critical {
			t.Errorf("after the outage: %s", live.FindingsText(fs))
			break
		}
	}
	cat, err := backup.ReadCatalog(ctx, labtest.Store(t, l))
	if err != nil {
		t.Fatal(err)
	}
	w := backup.RecoveryWindow(cat, nil)
	if !w.OK || w.Earliest.Before(second.Finished) {
		t.Errorf("the window after the gap: %+v; it should start at the new base backup (%s)", w, second.Finished)
	}
	_, srv := restore(t, l, backup.Target{Latest: true})
	if got := query(t, srv, "SELECT x::text FROM after_outage"); got != "42" {
		t.Errorf("the restore after the outage: %s", got)
	}
}
