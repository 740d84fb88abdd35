package live_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/ledger"
	"github.com/understudy-dev/understudy/live"
)

// Switchovers back and forth under a write load: every acknowledged commit
// is on the final primary, the other node streams again each time without
// pg_rewind, and no two nodes are ever writable at once.
func TestSwitchoverBackAndForthLosesNothing(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	ctx := ctxT(t)
	if err := ledger.Prepare(ctx, l.AppConnString()); err != nil {
		t.Fatal(err)
	}
	stopWatch := labtest.WatchWritable(t, l)
	load := ledger.Start(ctx, l.AppConnString(), 2)
	var out strings.Builder
	for i, to := range []string{"db-replica", "db", "db-replica", "db"} {
		time.Sleep(300 * time.Millisecond)
		res, err := live.Switchover(ctx, l.Target(), to, live.RoleOptions{Out: &out})
		if err != nil {
			t.Fatalf("switchover %d to %s: %v\n%s", i+1, to, err, out.String())
		}
		if got := labtest.Writable(l); len(got) != 1 || got[0] != to {
			t.Fatalf("after switchover %d the writable nodes are %v", i+1, got)
		}
		t.Logf("switchover %d to %s: writes paused %d ms", i+1, to, res.WriteOutage.Milliseconds())
	}
	time.Sleep(300 * time.Millisecond)
	load.Stop()
	rounds := stopWatch()
	acked, _ := load.Acked()
	lost, err := load.Lost(ctx, l.AppConnString())
	if err != nil {
		t.Fatal(err)
	}
	if acked < 100 || lost != 0 {
		t.Errorf("%d commits acknowledged, %d of them lost", acked, lost)
	}
	if strings.Contains(out.String(), "rewind") && !strings.Contains(out.String(), "without pg_rewind") {
		t.Errorf("a clean switchover used pg_rewind:\n%s", out.String())
	}
	if fs := labtest.Findings(t, l, live.DefaultThresholds); len(fs) > 0 {
		t.Errorf("after the switchovers:\n%s", live.FindingsText(fs))
	}
	t.Logf("%d commits acknowledged, 0 lost; %d split-brain samples", acked, rounds)
}

// A standby that is not streaming, or is far behind, is refused before
// anything changes.
func TestSwitchoverRefusedWhenStandbyNotReady(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	ctx := ctxT(t)
	labtest.Exec(t, l, "db-replica", "SELECT pg_wal_replay_pause()")
	labtest.Exec(t, l, "db", "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g")
	labtest.WaitFor(t, 30*time.Second, "the replay lag to pass 1 MB", func() bool {
		// replay_lsn is NULL until the standby has sent its first feedback.
		return labtest.Query(t, l, "db", "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) > 1048576, false)::text FROM pg_stat_replication") == "true"
	})
	_, err := live.Switchover(ctx, l.Target(), "db-replica", live.RoleOptions{MaxLagBytes: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "behind") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("lagging standby: %v", err)
	}
	labtest.Exec(t, l, "db-replica", "SELECT pg_wal_replay_resume()")
	if err := l.Stop(ctx, "db-replica"); err != nil {
		t.Fatal(err)
	}
	_, err = live.Switchover(ctx, l.Target(), "db-replica", live.RoleOptions{})
	if err == nil || !strings.Contains(err.Error(), "not a running standby") {
		t.Errorf("stopped standby: %v", err)
	}
	if got := labtest.Writable(l); len(got) != 1 || got[0] != "db" {
		t.Errorf("after refusals the writable nodes are %v", got)
	}
}

// Interrupted right after the primary stopped, or with the primary killed
// just before its clean stop: the switchover rolls back and exactly one
// node is writable, the old primary, with every acknowledged commit.
func TestSwitchoverInterruptedRollsBack(t *testing.T) {
	t.Parallel()
	for _, stage := range []string{"after-stop", "kill-before-stop"} {
		l := labtest.Up(t, labtest.Options{})
		ctx, cancel := context.WithCancel(ctxT(t))
		if err := ledger.Prepare(ctx, l.AppConnString()); err != nil {
			t.Fatal(err)
		}
		stopWatch := labtest.WatchWritable(t, l)
		load := ledger.Start(context.Background(), l.AppConnString(), 2)
		time.Sleep(200 * time.Millisecond)
		hook := func(s string) {
			switch {
			case stage == "after-stop" && s == "after-stop":
				cancel() // understudy interrupted (Ctrl-C) with the primary down
			case stage == "kill-before-stop" && s == "before-stop":
				if err := l.Kill("db"); err != nil {
					t.Error(err)
				}
			}
		}
		_, err := live.Switchover(ctx, l.Target(), "db-replica", live.RoleOptions{Hook: hook})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "rolled back") {
			t.Errorf("%s: want a rollback, got %v", stage, err)
		}
		if got := labtest.Writable(l); len(got) != 1 || got[0] != "db" {
			t.Errorf("%s: writable nodes after the rollback: %v", stage, got)
		}
		time.Sleep(300 * time.Millisecond)
		load.Stop()
		stopWatch()
		lost, err := load.Lost(context.Background(), l.AppConnString())
		if err != nil || lost != 0 {
			t.Errorf("%s: %d acknowledged commits lost (%v)", stage, lost, err)
		}
	}
}

// The primary is killed with -9. promote refuses nothing (it is gone),
// fences it and promotes the standby. Started again, the old primary comes
// back read-only; rejoin makes it a streaming standby (pg_rewind if it
// diverged). In network namespaces, so the rewind runs over a real link.
func TestPromoteAfterCrashThenRejoin(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{NetNS: true})
	ctx := ctxT(t)
	stopWatch := labtest.WatchWritable(t, l)
	defer stopWatch()
	labtest.Exec(t, l, "db", "CREATE TABLE t (i int)", "INSERT INTO t SELECT generate_series(1, 1000)")
	at := labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text")
	labtest.WaitFor(t, 30*time.Second, "the standby to replay the first rows", func() bool {
		return labtest.Query(t, l, "db-replica", "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", at) == "true"
	})
	// Keep the standby from hearing about the last writes: cut its link,
	// write, then crash the primary. That is a real divergence.
	if err := l.Cut(ctx, "db-replica", true); err != nil {
		t.Fatal(err)
	}
	labtest.Exec(t, l, "db", "INSERT INTO t SELECT generate_series(1001, 2000)")
	if err := l.Kill("db"); err != nil {
		t.Fatal(err)
	}
	// Promote while the standby is still cut off: the dead primary's kernel
	// would otherwise deliver the WAL still in its socket buffer once the
	// link is back, and nothing would have diverged.
	var out strings.Builder
	res, err := live.Promote(ctx, l.Target(), "db-replica", live.RoleOptions{Out: &out})
	if err != nil {
		t.Fatalf("promote: %v\n%s", err, out.String())
	}
	if err := l.Cut(ctx, "db-replica", false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Lost, "never reached db-replica") {
		t.Errorf("the loss report does not say what was lost: %q", res.Lost)
	}
	if !strings.Contains(out.String(), "fenced db") {
		t.Errorf("db was not fenced:\n%s", out.String())
	}
	// The old primary restarted by hand (or by Docker) stays read-only.
	if err := l.Start(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if rec, err := live.WaitReady(ctx, l, "db", time.Minute); err != nil || !rec {
		t.Fatalf("restarted old primary: in recovery %v, %v", rec, err)
	}
	if got := labtest.Writable(l); len(got) != 1 || got[0] != "db-replica" {
		t.Fatalf("writable nodes: %v", got)
	}
	out.Reset()
	res, err = live.Rejoin(ctx, l.Target(), "db", live.RoleOptions{Out: &out})
	if err != nil {
		t.Fatalf("rejoin: %v\n%s", err, out.String())
	}
	if !strings.HasPrefix(res.Path, "pg_rewind") {
		t.Errorf("a diverged primary rejoined by %q", res.Path)
	}
	labtest.Exec(t, l, "db-replica", "INSERT INTO t VALUES (-1)")
	labtest.WaitFor(t, 30*time.Second, "the rejoined node to have the new primary's rows", func() bool {
		return labtest.Query(t, l, "db", "SELECT count(*)::text FROM t WHERE i = -1") == "1"
	})
	if fs := labtest.Findings(t, l, live.DefaultThresholds); len(fs) > 0 {
		t.Errorf("after rejoin:\n%s", live.FindingsText(fs))
	}
}

// promote refuses while the primary is up and writable, unless told to fence it.
func TestPromoteRefusesLivePrimaryUnlessFenced(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	ctx := ctxT(t)
	_, err := live.Promote(ctx, l.Target(), "db-replica", live.RoleOptions{})
	if err == nil || !strings.Contains(err.Error(), "two primaries") || !strings.Contains(err.Error(), "--fence") {
		t.Fatalf("promote with a live primary: %v", err)
	}
	if got := labtest.Writable(l); len(got) != 1 || got[0] != "db" {
		t.Fatalf("after the refusal: %v", got)
	}
	stopWatch := labtest.WatchWritable(t, l)
	res, err := live.Promote(ctx, l.Target(), "db-replica", live.RoleOptions{Fence: true})
	stopWatch()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Lost, "nothing lost") {
		t.Errorf("a fenced clean stop should lose nothing: %q", res.Lost)
	}
	res, err = live.Rejoin(ctx, l.Target(), "db", live.RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Path, "re-point") {
		t.Errorf("a cleanly fenced primary rejoined by %q", res.Path)
	}
}

// With two standbys, the one left out follows the new primary (re-pointed
// by a reload, no restart), and so does the old primary.
func TestSwitchoverThreeNodesOthersFollow(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{Names: []string{"db", "db-r1", "db-r2"}})
	ctx := ctxT(t)
	started := labtest.Query(t, l, "db-r2", "SELECT pg_postmaster_start_time()::text")
	var out strings.Builder
	if _, err := live.Switchover(ctx, l.Target(), "db-r1", live.RoleOptions{Out: &out}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "db-r2 now follows db-r1") {
		t.Errorf("db-r2 was not re-pointed:\n%s", out.String())
	}
	if got := labtest.Query(t, l, "db-r2", "SELECT pg_postmaster_start_time()::text"); got != started {
		t.Error("db-r2 was restarted; a reload is enough")
	}
	labtest.Exec(t, l, "db-r1", "CREATE TABLE after_switch (i int)", "INSERT INTO after_switch VALUES (1)")
	for _, n := range []string{"db", "db-r2"} {
		labtest.WaitFor(t, 30*time.Second, n+" to replay the new primary's write", func() bool {
			return labtest.Query(t, l, n, "SELECT (to_regclass('after_switch') IS NOT NULL)::text") == "true"
		})
	}
	if fs := labtest.Findings(t, l, live.DefaultThresholds); len(fs) > 0 {
		t.Errorf("after the switchover:\n%s", live.FindingsText(fs))
	}
}

// A node whose data directory holds some other cluster cannot follow or be
// rewound: rejoin sets its files aside (nothing deleted) and it clones afresh.
func TestRejoinForeignClusterClonesAfresh(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	ctx := ctxT(t)
	if err := l.Stop(ctx, "db-replica"); err != nil {
		t.Fatal(err)
	}
	dd := l.DataDir("db-replica")
	if out, err := l.Run(ctx, "db-replica", `rm -rf "$PGDATA"/* && initdb -D "$PGDATA" -U postgres >/dev/null && touch "$PGDATA/standby.signal" && echo foreign > "$PGDATA/marker.txt"`); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	res, err := live.Rejoin(ctx, l.Target(), "db-replica", live.RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Path, "fresh clone: it holds a different cluster") {
		t.Errorf("path: %s", res.Path)
	}
	old, _ := filepath.Glob(filepath.Join(dd, ".understudy-old-*", "marker.txt"))
	if len(old) != 1 {
		t.Errorf("the foreign cluster's files were not kept aside: %v", old)
	}
	if got, want := labtest.Query(t, l, "db-replica", "SELECT system_identifier::text FROM pg_control_system()"), labtest.Query(t, l, "db", "SELECT system_identifier::text FROM pg_control_system()"); got != want {
		t.Errorf("after rejoin the standby is system %s, the primary %s", got, want)
	}
}
