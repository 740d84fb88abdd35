package live_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/live"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// From nothing at all: apply starts the primary, creates the role and the
// slot, clones the standby and waits until it streams. Re-run, it changes
// nothing and says so.
func TestApplyFromEmptyThenNothingToDo(t *testing.T) {
	t.Parallel()
	l := labtest.New(t, labtest.Options{})
	ctx := ctxT(t)
	var out bytes.Buffer
	res, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Out: &out, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out.String())
	}
	joined := strings.Join(res.Actions, "\n")
	for _, want := range []string{"started the primary db", "created replication role replicator", "created slot understudy_db_replica", "cloned db-replica from db"} {
		if !strings.Contains(joined, want) {
			t.Errorf("apply did not report %q; actions:\n%s", want, joined)
		}
	}
	// The slot came before the clone: the clone reused it rather than making its own.
	if i, j := strings.Index(joined, "created slot"), strings.Index(joined, "cloned"); i > j {
		t.Errorf("slot created after the clone:\n%s", joined)
	}
	if !strings.Contains(out.String(), "clone ") {
		t.Errorf("no clone progress shown:\n%s", out.String())
	}
	st, err := live.Gather(ctx, l.Target())
	if err != nil {
		t.Fatal(err)
	}
	rep := st.Node("db-replica")
	if st.Primary != "db" || rep.Role != "standby" || rep.Facts.Receiver == nil || rep.Facts.Receiver.Status != "streaming" || rep.Facts.Receiver.SlotName != "understudy_db_replica" {
		t.Fatalf("after apply: primary %q, replica %+v", st.Primary, rep)
	}
	if fs := live.Check(st, l.Cluster, live.DefaultThresholds); len(fs) > 0 {
		t.Errorf("a freshly applied cluster has findings:\n%s", live.FindingsText(fs))
	}

	out.Reset()
	res, err = live.Apply(ctx, l.Target(), live.ApplyOptions{Out: &out})
	if err != nil {
		t.Fatalf("second apply: %v", err)
	}
	if len(res.Actions) != 0 {
		t.Errorf("second apply changed things on a healthy cluster: %v", res.Actions)
	}
	// The password reached no log.
	for _, n := range []string{"db", "db-replica"} {
		b, _ := os.ReadFile(l.LogFile(n))
		if strings.Contains(string(b), l.Password()) {
			t.Errorf("%s's log contains the replication password", n)
		}
	}
}

// A managed setting overridden with ALTER SYSTEM is reset. A reloadable one
// is reloaded with no restart; one that needs a restart is named, with its
// reason, and nothing restarts until the user agrees.
func TestApplyReloadsAndRestartsOnlyWithConsent(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	ctx := ctxT(t)
	labtest.Exec(t, l, "db", "ALTER SYSTEM SET max_slot_wal_keep_size = -1", "SELECT pg_reload_conf()")
	labtest.Exec(t, l, "db-replica", "ALTER SYSTEM SET wal_log_hints = off")
	labtest.Restart(t, l, "db-replica")
	if got := labtest.Query(t, l, "db-replica", "SHOW wal_log_hints"); got != "off" {
		t.Fatalf("setup: wal_log_hints is %s", got)
	}
	pidBefore := labtest.Query(t, l, "db-replica", "SELECT pg_postmaster_start_time()::text")

	var out bytes.Buffer
	_, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Out: &out})
	if !errors.Is(err, live.ErrRestartDeclined) {
		t.Fatalf("apply without consent: want a declined restart, got %v\n%s", err, out.String())
	}
	if !strings.Contains(err.Error(), "wal_log_hints") || !strings.Contains(err.Error(), "pg_rewind") || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("the refusal does not name the setting, its reason and the way on: %v", err)
	}
	if got := labtest.Query(t, l, "db", "SHOW max_slot_wal_keep_size"); got != "1GB" {
		t.Errorf("the reloadable cap was not restored on the primary: %s", got)
	}
	if got := labtest.Query(t, l, "db-replica", "SELECT pg_postmaster_start_time()::text"); got != pidBefore {
		t.Errorf("the standby was restarted without consent")
	}

	res, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true, Out: &out, Timeout: time.Minute})
	if err != nil {
		t.Fatalf("apply --yes: %v\n%s", err, out.String())
	}
	if got := labtest.Query(t, l, "db-replica", "SHOW wal_log_hints"); got != "on" {
		t.Errorf("after apply --yes wal_log_hints is %s", got)
	}
	if !strings.Contains(strings.Join(res.Actions, "\n"), "restarted db-replica") {
		t.Errorf("actions: %v", res.Actions)
	}
	if got := labtest.Query(t, l, "db", "SELECT pg_postmaster_start_time()::text"); got == "" {
		t.Fatal("primary gone")
	}
	res, err = live.Apply(ctx, l.Target(), live.ApplyOptions{})
	if err != nil || len(res.Actions) != 0 {
		t.Errorf("third apply: %v %v", res.Actions, err)
	}
}

// What `apply --dry-run` shows is what apply runs, on five starting states
// of a real cluster: the steps PlanApply decides and the steps Apply then
// carries out are the same, kind by kind and node by node.
func TestApplyRunsExactlyThePlanShown(t *testing.T) {
	t.Parallel()
	l := labtest.New(t, labtest.Options{})
	ctx := ctxT(t)
	kinds := func(steps []live.Step) string {
		var k []string
		for _, s := range steps {
			k = append(k, string(s.Kind)+"@"+s.Node)
		}
		return strings.Join(k, " ")
	}
	check := func(state, want string) {
		t.Helper()
		plan, err := live.PlanApply(ctx, l.Target())
		if err != nil {
			t.Fatalf("%s: plan: %v", state, err)
		}
		res, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true, Timeout: 2 * time.Minute})
		if err != nil {
			t.Fatalf("%s: apply: %v", state, err)
		}
		if kinds(plan) != kinds(res.Steps) {
			t.Errorf("%s: the plan shown was\n  %s\nbut apply ran\n  %s", state, kinds(plan), kinds(res.Steps))
		}
		if kinds(plan) != want {
			t.Errorf("%s: plan %q, want %q", state, kinds(plan), want)
		}
	}
	check("fresh", "start-primary@db check-settings@db ensure-role@db rewind-grants@db check-hba@db ensure-slot@db start-standby@db-replica")
	check("healthy", "")

	if err := l.Stop(ctx, "db-replica"); err != nil {
		t.Fatal(err)
	}
	labtest.Exec(t, l, "db", "SELECT pg_drop_replication_slot('understudy_db_replica')")
	check("slot missing", "ensure-slot@db start-standby@db-replica")

	labtest.Exec(t, l, "db-replica", "ALTER SYSTEM SET wal_log_hints = off")
	labtest.Restart(t, l, "db-replica")
	// The plan is read twice (the one shown, then apply's own): both must
	// see the same cluster, so the restarted standby streams again first.
	labtest.WaitFor(t, time.Minute, "db-replica to stream again after its restart", func() bool {
		return labtest.Query(t, l, "db", "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = 'db-replica' AND state = 'streaming'") == "1"
	})
	check("restart needed", "reload@db-replica restart@db-replica")

	labtest.Exec(t, l, "db", "ALTER ROLE replicator PASSWORD 'not-the-planned-one'")
	check("role password changed", "ensure-role@db")
	check("healthy again", "")
}
