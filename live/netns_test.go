package live_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/live"
)

// In network namespaces each node has its own address: a replication login
// from a third address is refused by both nodes' pg_hba, even with the
// right password, and verify shows it.
func TestNetnsThirdAddressRefused(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{NetNS: true})
	res, err := live.Verify(ctxT(t), l.Target(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Outsider) != 2 {
		t.Fatalf("want a refusal from each node, got %+v", res.Outsider)
	}
	for _, o := range res.Outsider {
		if o.From != l.OutsiderAddr() || !strings.Contains(o.Refusal, "pg_hba.conf") || !strings.Contains(o.Refusal, o.From) {
			t.Errorf("refusal on %s: %+v", o.Node, o)
		}
	}
	// The control: the standby, from its own address, does replicate.
	if len(res.Proofs) != 1 || res.Proofs[0].Delay <= 0 {
		t.Errorf("proofs: %+v", res.Proofs)
	}
}

// A standby cut off while the primary writes more than 64 MB of WAL: both
// sides notice within seconds (sender/receiver timeouts, keepalives), the
// slot keeps the WAL, and once the link is back the standby catches up
// over its slot without a re-clone.
func TestNetnsOutageRecoversOverSlot(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{NetNS: true, WALCap: "1GB"})
	ctx := ctxT(t)
	sysid := labtest.Query(t, l, "db-replica", "SELECT system_identifier::text FROM pg_control_system()")
	start := labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text")

	if err := l.Cut(ctx, "db-replica", true); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	healed := false
	defer func() {
		if !healed {
			l.Cut(ctx, "db-replica", false)
		}
	}()
	labtest.Tool(t, l, "db", "pgbench", "-i", "-s", "8", "-q")
	wal, _ := strconv.ParseInt(labtest.Query(t, l, "db", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text", start), 10, 64)
	if wal < 64<<20 {
		t.Fatalf("only %d bytes of WAL written during the outage; the test needs more than 64 MB", wal)
	}
	labtest.WaitFor(t, 30*time.Second, "the primary to drop the vanished standby", func() bool {
		return labtest.Query(t, l, "db", "SELECT count(*)::text FROM pg_stat_replication") == "0"
	})
	primaryNoticed := time.Since(cut)
	labtest.WaitFor(t, 30*time.Second, "the standby to notice the vanished primary", func() bool {
		return labtest.Query(t, l, "db-replica", "SELECT count(*)::text FROM pg_stat_wal_receiver WHERE status = 'streaming'") == "0"
	})
	standbyNoticed := time.Since(cut)
	t.Logf("WAL written while cut off: %.1f MB; primary noticed after %.1f s, standby after %.1f s", float64(wal)/(1<<20), primaryNoticed.Seconds(), standbyNoticed.Seconds())
	labtest.Exec(t, l, "db", "CHECKPOINT", "SELECT pg_switch_wal()", "CHECKPOINT")
	retained, _ := strconv.ParseInt(labtest.Query(t, l, "db", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text FROM pg_replication_slots WHERE slot_name = 'understudy_db_replica'"), 10, 64)
	if retained < 64<<20 {
		t.Errorf("the slot retains only %d bytes after the checkpoint", retained)
	}
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "not-streaming", live.Critical, "db-replica") || !labtest.Has(fs, "slot-inactive", live.Warning, "db-replica") {
		t.Errorf("during the outage check found:\n%s", live.FindingsText(fs))
	}

	if err := l.Cut(ctx, "db-replica", false); err != nil {
		t.Fatal(err)
	}
	healed = true
	back := time.Now()
	labtest.WaitFor(t, 2*time.Minute, "the standby to stream again", func() bool {
		return labtest.Query(t, l, "db", "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = 'db-replica' AND state = 'streaming'") == "1"
	})
	t.Logf("streaming again %.1f s after the link came back", time.Since(back).Seconds())
	labtest.WaitFor(t, time.Minute, "the standby to replay everything", func() bool {
		return labtest.Query(t, l, "db-replica", "SELECT count(*)::text FROM pgbench_accounts") == "800000"
	})
	// The rows arrive with the COPY's commit; the index builds and the vacuum
	// that pgbench -i runs after it are still tens of MB of WAL. Wait for the
	// standby to replay everything the primary wrote before judging lag.
	target := labtest.Query(t, l, "db", "SELECT pg_current_wal_lsn()::text")
	labtest.WaitFor(t, time.Minute, "the standby to replay up to "+target, func() bool {
		return labtest.Query(t, l, "db-replica", "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", target) == "true"
	})
	if got := labtest.Query(t, l, "db-replica", "SELECT system_identifier::text FROM pg_control_system()"); got != sysid {
		t.Errorf("system identifier changed: %s → %s", sysid, got)
	}
	log, _ := os.ReadFile(l.LogFile("db-replica"))
	if n := strings.Count(string(log), "cloning from"); n != 1 {
		t.Errorf("the standby cloned %d times; it should have resumed over its slot", n)
	}
	if fs := labtest.Findings(t, l, live.DefaultThresholds); len(fs) > 0 {
		t.Errorf("after recovery:\n%s", live.FindingsText(fs))
	}
}

// With a cap smaller than the outage's WAL, the slot is lost, and check says
// so with the way out (a re-clone).
func TestNetnsSlotPastCapIsReported(t *testing.T) {
	t.Parallel()
	l := labtest.Up(t, labtest.Options{NetNS: true, WALCap: "64MB"})
	ctx := ctxT(t)
	if err := l.Cut(ctx, "db-replica", true); err != nil {
		t.Fatal(err)
	}
	defer l.Cut(ctx, "db-replica", false)
	labtest.WaitFor(t, 30*time.Second, "the primary to drop the standby", func() bool {
		return labtest.Query(t, l, "db", "SELECT count(*)::text FROM pg_stat_replication") == "0"
	})
	labtest.Tool(t, l, "db", "pgbench", "-i", "-s", "8", "-q")
	labtest.Exec(t, l, "db", "CHECKPOINT", "SELECT pg_switch_wal()", "CHECKPOINT")
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "slot-lost", live.Critical, "db-replica") && !labtest.Has(fs, "slot-unreserved", live.Critical, "db-replica") {
		t.Errorf("slot past its cap not reported:\n%s", live.FindingsText(fs))
	}
}
