package live_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/live"
)

// Each problem check claims to find, provoked for real on a streaming
// cluster, then (where apply can) fixed by apply.

func TestCheckStandbyStoppedAndSlotDropped(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	ctx := ctxT(t)
	if err := l.Stop(ctx, "db-replica"); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 30*time.Second, "the slot to go inactive", func() bool {
		return labtest.Query(t, l, "db", "SELECT active::text FROM pg_replication_slots WHERE slot_name = 'understudy_db_replica'") == "false"
	})
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "unreachable", live.Critical, "db-replica") || !labtest.Has(fs, "slot-inactive", live.Warning, "db-replica") {
		t.Errorf("stopped standby: findings:\n%s", live.FindingsText(fs))
	}
	if live.Worst(fs) != live.Critical {
		t.Errorf("worst = %v", live.Worst(fs))
	}
	labtest.Exec(t, l, "db", "SELECT pg_drop_replication_slot('understudy_db_replica')")
	fs = labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "slot-missing", live.Critical, "db-replica") {
		t.Errorf("dropped slot: findings:\n%s", live.FindingsText(fs))
	}
	// apply puts the slot back before starting the standby, which resumes
	// from its own data directory (no clone) and streams again.
	res, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Actions, "\n")
	if !strings.Contains(joined, "created slot understudy_db_replica") || strings.Contains(joined, "cloned") {
		t.Errorf("apply actions: %s", joined)
	}
	if fs := labtest.Findings(t, l, live.DefaultThresholds); len(fs) > 0 {
		t.Errorf("after apply:\n%s", live.FindingsText(fs))
	}
}

func TestCheckPrimaryDown(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	if err := l.Stop(ctxT(t), "db"); err != nil {
		t.Fatal(err)
	}
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "unreachable", live.Critical, "db") || !labtest.Has(fs, "no-primary", live.Critical, "") {
		t.Errorf("findings:\n%s", live.FindingsText(fs))
	}
}

// The replication password changed on the primary only: the standby cannot
// log in, check says it is not streaming, apply restores the role.
func TestCheckNotStreamingThenApplyFixesRole(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	labtest.Exec(t, l, "db", "ALTER ROLE replicator PASSWORD 'something-else'",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
	labtest.WaitFor(t, 30*time.Second, "check to see the standby disconnected", func() bool {
		return labtest.Has(labtest.Findings(t, l, live.DefaultThresholds), "not-streaming", live.Critical, "db-replica")
	})
	res, err := live.Apply(ctxT(t), l.Target(), live.ApplyOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(res.Actions, "\n"), "updated replication role replicator") {
		t.Errorf("apply actions: %v", res.Actions)
	}
	if fs := labtest.Findings(t, l, live.DefaultThresholds); len(fs) > 0 {
		t.Errorf("after apply:\n%s", live.FindingsText(fs))
	}
}

func TestCheckLagAndParity(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	labtest.Exec(t, l, "db-replica", "ALTER SYSTEM SET max_connections = 150")
	labtest.Restart(t, l, "db-replica")
	labtest.Exec(t, l, "db-replica", "SELECT pg_wal_replay_pause()")
	labtest.Exec(t, l, "db", "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g")
	th := live.DefaultThresholds
	th.MaxLagBytes = 1 << 20
	labtest.WaitFor(t, 30*time.Second, "the lag to show", func() bool {
		return labtest.Has(labtest.Findings(t, l, th), "lag", live.Warning, "db-replica")
	})
	fs := labtest.Findings(t, l, th)
	if !labtest.Has(fs, "parity", live.Warning, "db-replica") {
		t.Errorf("findings:\n%s", live.FindingsText(fs))
	}
	labtest.Exec(t, l, "db-replica", "SELECT pg_wal_replay_resume()")
	labtest.WaitFor(t, 30*time.Second, "the lag to clear", func() bool {
		return !labtest.Has(labtest.Findings(t, l, th), "lag", live.Warning, "db-replica")
	})
}

// A standby promoted by hand makes two writable nodes.
func TestCheckSplitBrain(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	labtest.Exec(t, l, "db-replica", "SELECT pg_promote(true, 60)")
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "split-brain", live.Critical, "") {
		t.Errorf("findings:\n%s", live.FindingsText(fs))
	}
	if _, err := live.Apply(ctxT(t), l.Target(), live.ApplyOptions{}); err == nil || !strings.Contains(err.Error(), "more than one node accepts writes") {
		t.Errorf("apply on a split brain: %v", err)
	}
}

// Three nodes; one standby is promoted and the old primary stopped: the
// other standby is left behind on the old timeline.
func TestCheckTimelineMismatch(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{Names: []string{"db", "db-r1", "db-r2"}})
	ctx := ctxT(t)
	if err := l.Stop(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	labtest.Exec(t, l, "db-r1", "SELECT pg_promote(true, 60)", "CREATE TABLE after_promote (i int)")
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "timeline", live.Critical, "db-r2") || !labtest.Has(fs, "not-streaming", live.Critical, "db-r2") {
		t.Errorf("findings:\n%s", live.FindingsText(fs))
	}
}

// Broken and missing pg_hba lines, an abandoned slot and an unlimited cap.
func TestCheckHBAAndSlotHygiene(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	hba := l.Cluster.HBAFile
	orig, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(string(orig), "\n") {
		// On loopback every node is 127.0.0.1: drop every node's replication line.
		if strings.HasPrefix(line, "host") && strings.Contains(line, " replication ") {
			continue
		}
		kept = append(kept, line)
	}
	if err := os.WriteFile(hba, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	labtest.Exec(t, l, "db", "SELECT pg_create_physical_replication_slot('old_guide_slot', true)",
		"ALTER SYSTEM SET max_slot_wal_keep_size = -1", "SELECT pg_reload_conf()")
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	for _, want := range []struct {
		code live.FindingCode
		sev  live.Severity
		node string
	}{{"hba-missing", live.Critical, "db"}, {"slot-abandoned", live.Warning, "db"}, {"slot-cap-unlimited", live.Warning, "db"}} {
		if !labtest.Has(fs, want.code, want.sev, want.node) {
			t.Errorf("no %s %s finding on %s:\n%s", want.sev, want.code, want.node, live.FindingsText(fs))
		}
	}
	_, err = live.Apply(ctxT(t), l.Target(), live.ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), "does not let db-replica") {
		t.Errorf("apply with a missing hba rule: %v", err)
	}
	if err := os.WriteFile(hba, append(orig, []byte("host replication replicator 10.0.0.0/33 scram-sha-256\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	fs = labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "hba-error", live.Critical, "db") {
		t.Errorf("no hba-error finding:\n%s", live.FindingsText(fs))
	}
}

// With data checksums on (the boot script initialises with them), turning
// wal_log_hints off does not make rewind impossible; check must stay quiet.
func TestCheckRewindPossibleWithChecksums(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{})
	if labtest.Query(t, l, "db", "SHOW data_checksums") != "on" {
		t.Fatal("the initial primary was not initialised with data checksums")
	}
	labtest.Exec(t, l, "db", "ALTER SYSTEM SET wal_log_hints = off")
	labtest.Restart(t, l, "db")
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if labtest.Has(fs, "rewind-impossible", live.Warning, "db") {
		t.Errorf("rewind-impossible reported with checksums on:\n%s", live.FindingsText(fs))
	}
}
