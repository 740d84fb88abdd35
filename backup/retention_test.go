package backup_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/pgops"
)

// Retention on a real bucket: with three base backups and a policy of two,
// it deletes the oldest base backup and exactly the WAL before the oldest
// kept one's start (history files stay), and a restore from the oldest
// kept base backup still works.
func TestRetentionDeletesExactlyWhatItMay(t *testing.T) {
	t.Parallel()
	l, ctx, a, _ := backedUp(t, labtest.Options{}, func(c *backup.AgentConfig) { c.Policy = backup.Policy{KeepBases: 100} })
	store, key := labtest.Store(t, l), labtest.Key(t, l)
	cfg := l.AgentConfig(nil)
	for i := 0; i < 2; i++ {
		labtest.Tool(t, l, "db", "pgbench", "-i", "-s", "1", "-q")
		// A base backup from a standby starts at its last restartpoint,
		// which follows the primary's last checkpoint: make a fresh one.
		labtest.Exec(t, l, "db", "SELECT pg_switch_wal()", "CHECKPOINT")
		at := labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text")
		labtest.WaitFor(t, time.Minute, "the standby to replay the checkpoint", func() bool {
			return labtest.Query(t, l, "db-replica", "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", at) == "true"
		})
		if _, err := backup.TakeBase(ctx, &cfg, store, key, nil); err != nil {
			t.Fatal(err)
		}
	}
	end, _ := pgops.ParseLSN(labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text"))
	labtest.WaitFor(t, time.Minute, "the archive to catch up", func() bool { return a.Status().ArchivedLSN >= end })
	before, err := backup.ReadCatalog(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Bases) != 3 {
		t.Fatalf("want three base backups, have %d", len(before.Bases))
	}
	listAll := func() []string {
		var keys []string
		for _, p := range []string{"base/", "wal/"} {
			objs, err := store.List(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				keys = append(keys, o.Key)
			}
		}
		slices.Sort(keys)
		return keys
	}
	all := listAll()
	_, planned := backup.Retain(before, backup.Policy{KeepBases: 2}, time.Now())
	n, err := backup.ApplyRetention(ctx, store, backup.Policy{KeepBases: 2}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	after := listAll()
	var gone []string
	for _, k := range all {
		if !slices.Contains(after, k) {
			gone = append(gone, k)
		}
	}
	slices.Sort(planned)
	if n != len(planned) || !slices.Equal(gone, planned) {
		t.Errorf("retention removed %v, decided %v", gone, planned)
	}
	oldest := before.Bases[0]
	keptStart := uint64(before.Bases[1].StartLSN) / before.SegSize
	for _, k := range gone {
		switch {
		case strings.HasPrefix(k, "base/"+oldest.ID+"/"):
		case strings.HasPrefix(k, "wal/"):
			seg, ok := pgops.ParseSegmentName(strings.TrimSuffix(strings.TrimPrefix(k, "wal/"), ".partial"), before.SegSize)
			if !ok || seg.No >= keptStart {
				t.Errorf("retention deleted %s, which the oldest kept base backup needs (it starts in segment %d)", k, keptStart)
			}
		default:
			t.Errorf("retention deleted %s", k)
		}
	}
	if !slices.ContainsFunc(gone, func(k string) bool { return strings.HasPrefix(k, "wal/") }) {
		t.Errorf("retention deleted no WAL: %v; listing before: %v", gone, all)
	}
	cat, _ := backup.ReadCatalog(ctx, store)
	rp, err := backup.PlanRestore(cat, backup.Target{Time: before.Bases[1].Finished.Add(10 * time.Millisecond)}, nil)
	if err != nil || rp.Base.ID != before.Bases[1].ID {
		t.Fatalf("the oldest kept base backup cannot be planned from: %v (%s)", err, rp.Base.ID)
	}
	_, srv := restore(t, l, backup.Target{Latest: true})
	if got := query(t, srv, "SELECT count(*)::text FROM pgbench_accounts"); got != "100000" {
		t.Errorf("after retention the latest restore has %s rows", got)
	}
}
