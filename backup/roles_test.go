package backup_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/ledger"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
)

// WAL keeps flowing across a switchover, a promote and a rejoin: the
// archive has no gap, timeline history files are kept, a restore to a
// time after the switchover works, and a latest restore has what the
// primary has. The agent follows a standby, so the primary keeps no slot
// for it.
func TestBackupsFollowSwitchoverPromoteAndRejoin(t *testing.T) {
	t.Parallel()
	l, ctx, a, _ := backedUp(t, labtest.Options{}, nil)
	if err := ledger.Prepare(ctx, l.AppConnString()); err != nil {
		t.Fatal(err)
	}
	load := ledger.Start(ctx, l.AppConnString(), 2)
	defer load.Stop()
	time.Sleep(2 * time.Second)
	if _, err := live.Switchover(ctx, l.Target(), "db-replica", live.RoleOptions{}); err != nil {
		t.Fatalf("switchover: %v", err)
	}
	// The switchover moved the backup slot in its own steps: the new
	// primary holds none the moment it returns, and the agent streams from
	// the new standby without a retry loop's wait.
	if n := labtest.Query(t, l, "db-replica", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'"); n != "0" {
		t.Errorf("right after the switchover, the new primary db-replica holds %s backup slot(s)", n)
	}
	labtest.WaitFor(t, 20*time.Second, "the agent to stream from db, the standby after the switchover", func() bool {
		st := a.Status()
		return st.Source == "db" && st.SourceStandby && st.Receiving
	})
	time.Sleep(2 * time.Second)
	T1 := time.Now()
	time.Sleep(time.Second)
	if _, err := live.Promote(ctx, l.Target(), "db", live.RoleOptions{Fence: true}); err != nil {
		t.Fatalf("promote: %v", err)
	}
	time.Sleep(2 * time.Second)
	if _, err := live.Rejoin(ctx, l.Target(), "db-replica", live.RoleOptions{}); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	time.Sleep(time.Second)
	load.Stop()

	end, _ := pgops.ParseLSN(labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text"))
	tli := pgops.Timeline(3)
	labtest.WaitFor(t, time.Minute, "the archive to reach the end of timeline 3", func() bool {
		st := a.Status()
		return st.ArchivedTLI == tli && st.ArchivedLSN >= end
	})
	labtest.WaitFor(t, time.Minute, "the agent to stream from the rejoined standby", func() bool {
		st := a.Status()
		return st.Source == "db-replica" && st.SourceStandby && st.Receiving
	})
	labtest.WaitFor(t, 30*time.Second, "the primary to keep no backup slot", func() bool {
		return labtest.Query(t, l, "db", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'") == "0"
	})

	store, key := labtest.Store(t, l), labtest.Key(t, l)
	cat, err := backup.ReadCatalog(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	hist := map[pgops.Timeline]bool{}
	for _, f := range cat.WAL {
		if f.History {
			hist[f.Seg.TLI] = true
		}
	}
	if !hist[2] || !hist[3] {
		t.Errorf("history files kept: %v, want timelines 2 and 3", hist)
	}
	steps, err := backup.HistorySteps(ctx, store, key, tli)
	if err != nil {
		t.Fatal(err)
	}
	if w := backup.RecoveryWindow(cat, steps); !w.OK || w.Gap != "" {
		t.Errorf("the recovery window across the role changes: %+v", w)
	}

	res, srv := restore(t, l, backup.Target{Time: T1})
	before := load.AckedBefore(T1)
	if missing, err := ledger.Missing(ctx, connString(srv), before); err != nil || missing != 0 {
		t.Errorf("the restore to a time after the switchover misses %d of %d commits (%v)", missing, len(before), err)
	}
	// The restore stops on timeline 2 (the switchover's) and branches the
	// next timeline the archive has no history for.
	if res.Timeline != 4 {
		t.Errorf("the restore to T1 ended on timeline %d, want 4", res.Timeline)
	}
	srv.Stop(ctx)

	// The user names the older timeline: the restore follows timeline 2
	// to its end, the point where the promote branched timeline 3, and
	// none of what timeline 3 wrote.
	var branch pgops.LSN
	for _, st := range steps {
		if st.Parent == 2 {
			branch = st.Switch
		}
	}
	res2, srv2tl := restore(t, l, backup.Target{Latest: true, Timeline: 2})
	if branch == 0 || res2.Reached > branch {
		t.Errorf("the timeline 2 restore reached %s, past timeline 2's end %s", res2.Reached, branch)
	}
	if res2.Timeline != 4 {
		t.Errorf("the timeline 2 restore ended on timeline %d, want 4 (a branch of 2)", res2.Timeline)
	}
	if missing, err := ledger.Missing(ctx, connString(srv2tl), before); err != nil || missing != 0 {
		t.Errorf("the timeline 2 restore misses %d of %d commits from before T1 (%v)", missing, len(before), err)
	}
	onTL2 := query(t, srv2tl, "SELECT count(*)::text FROM "+ledger.Table)
	srv2tl.Stop(ctx)

	_, srv2 := restore(t, l, backup.Target{Latest: true})
	want := labtest.Query(t, l, "db", "SELECT count(*)::text FROM "+ledger.Table)
	if got := query(t, srv2, "SELECT count(*)::text FROM "+ledger.Table); got != want {
		t.Errorf("the latest restore has %s ledger rows, the primary %s", got, want)
	}
	if n2, nAll := atoi(onTL2), atoi(want); n2 >= nAll {
		t.Errorf("the timeline 2 restore has %d ledger rows, as many as the primary on timeline 3 (%d): it did not stop at timeline 2's end", n2, nAll)
	}
}

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}
