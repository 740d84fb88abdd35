package live_test

import (
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
)

// Issue 18: what rejoin says pg_rewind undid, against what promote said.
func TestRewoundText(t *testing.T) {
	crashed := live.RejoinReading{Control: &pgops.ControlData{State: "in production", Timeline: 1}, Switchpoint: 0x3000110, WALEnd: 0x3000110}
	if got := live.RewoundText(crashed, "db-replica", "why"); strings.Contains(got, "those changes were undone") || !strings.Contains(got, "only that checkpoint was undone") {
		t.Errorf("a crash with nothing past the switchpoint: %q", got)
	}
	crashed.WALEnd = 0x3000200
	if got := live.RewoundText(crashed, "db-replica", "why"); !strings.Contains(got, "those changes were undone") {
		t.Errorf("a crash with WAL past the switchpoint: %q", got)
	}
	crashed.WALEnd = 0 // could not be read
	if got := live.RewoundText(crashed, "db-replica", "why"); !strings.Contains(got, "those changes were undone") {
		t.Errorf("an unread end of WAL: %q", got)
	}
}

// Issue 18: the primary crashes after the standby got all of its WAL:
// promote says nothing was lost, and rejoin, whose pg_rewind first runs
// crash recovery on the old primary (writing a checkpoint past the
// switchpoint), says that only that checkpoint was undone, not that
// changes were; the old primary then has every row.
func TestRejoinAfterACrashThatLostNothing(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	ctx := ctxT(t)
	labtest.Exec(t, l, "db", "CREATE TABLE t (i int)", "INSERT INTO t SELECT generate_series(1, 1000)")
	at := labtest.Query(t, l, "db", "SELECT pg_current_wal_insert_lsn()::text")
	labtest.WaitFor(t, 30*time.Second, "the standby to receive all of the primary's WAL", func() bool {
		return labtest.Query(t, l, "db-replica", "SELECT (pg_last_wal_receive_lsn() >= $1::pg_lsn)::text", at) == "true"
	})
	if err := l.Kill("db"); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	res, err := live.Promote(ctx, l.Target(), "db-replica", live.RoleOptions{Out: &out})
	if err != nil {
		t.Fatalf("promote: %v\n%s", err, out.String())
	}
	if !strings.Contains(res.Lost, "nothing lost") {
		t.Fatalf("promote after a crash with all WAL received: %q", res.Lost)
	}
	out.Reset()
	res, err = live.Rejoin(ctx, l.Target(), "db", live.RoleOptions{Out: &out})
	if err != nil {
		t.Fatalf("rejoin: %v\n%s", err, out.String())
	}
	t.Logf("rejoin: %s", res.Path)
	if strings.HasPrefix(res.Path, "pg_rewind") && (strings.Contains(res.Path, "those changes were undone") || !strings.Contains(res.Path, "only that checkpoint was undone")) {
		t.Errorf("rejoin contradicts promote's \"nothing lost\": %s", res.Path)
	}
	if !strings.HasPrefix(res.Path, "pg_rewind") && !strings.HasPrefix(res.Path, "re-point") {
		t.Errorf("rejoin took %q", res.Path)
	}
	if got := labtest.Query(t, l, "db", "SELECT count(*)::text FROM t"); got != "1000" {
		t.Errorf("the rejoined db has %s rows, want 1000", got)
	}
}
