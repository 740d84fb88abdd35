package backup_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/faultproxy"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/ledger"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
)

// The fault suite of the backup path. For each fault:
//   - the primary keeps accepting writes (a ledger load commits all along)
//     and keeps no backup slot, and its pg_wal stays within max_wal_size
//     plus the slot cap;
//   - check names the fault;
//   - once the fault is gone, backups resume by themselves;
//   - a restore to latest then holds every commit acknowledged before the
//     archive caught up again.
// Storage faults are injected by internal/faultproxy in front of the real
// S3 server (docs/backups.md says why a proxy of our own).

// TestMain runs the backup agent instead of the tests when asked to: the
// kill tests need the agent in a process of its own, and this binary is
// the only understudy code a test of this package has.
func TestMain(m *testing.M) {
	if dir := os.Getenv("UNDERSTUDY_TEST_AGENT_LAB"); dir != "" {
		os.Exit(runAgentProcess(dir))
	}
	os.Exit(m.Run())
}

func runAgentProcess(dir string) int {
	l, err := lab.Open(dir)
	if err == nil {
		var store *backup.S3
		var key *backup.Key
		if store, err = l.BackupStore(); err == nil {
			if key, err = l.BackupKey(); err == nil {
				ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
				defer stop()
				err = backup.NewAgent(l.AgentConfig(os.Stderr), store, key).Run(ctx)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// scene is a lab with backups and a ledger load running.
type scene struct {
	t    *testing.T
	l    *lab.Lab
	p    *faultproxy.Proxy // nil without a fault proxy
	ctx  context.Context
	load *ledger.Load
	// status is the agent's report: from the agent itself when it runs in
	// this process, else from the bucket.
	status func() (backup.AgentStatus, error)
}

func (s *scene) startLoad() {
	s.t.Helper()
	if err := ledger.Prepare(s.ctx, s.l.AppConnString()); err != nil {
		s.t.Fatal(err)
	}
	s.load = ledger.Start(s.ctx, s.l.AppConnString(), 2)
	s.t.Cleanup(s.load.Stop)
}

func (s *scene) primary() string {
	s.t.Helper()
	w := labtest.Writable(s.l)
	if len(w) != 1 {
		s.t.Fatalf("no single writable node: %v", w)
	}
	return w[0]
}

// primaryHealthy: since from, the primary acknowledged commits with no
// pause of maxPause or more, and (unless the agent may stream from it) it
// holds no backup slot; its pg_wal is within max_wal_size plus the slot cap.
func (s *scene) primaryHealthy(from time.Time, maxPause time.Duration, slotAllowed bool) {
	s.t.Helper()
	now := time.Now()
	if gap := s.load.LongestGap(from, now); gap >= maxPause {
		s.t.Errorf("the primary took no commit for %s between %s and %s", gap.Round(time.Millisecond), from.Format("15:04:05.000"), now.Format("15:04:05.000"))
	}
	before, after := len(s.load.AckedBefore(from)), len(s.load.AckedBefore(now))
	if after <= before {
		s.t.Errorf("no commit acknowledged since %s", from.Format("15:04:05.000"))
	}
	p := s.primary()
	if !slotAllowed {
		if n := labtest.Query(s.t, s.l, p, "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'"); n != "0" {
			s.t.Errorf("the primary %s holds the backup slot", p)
		}
	}
	over := labtest.Query(s.t, s.l, p, `SELECT (sum(size) - pg_size_bytes(current_setting('max_wal_size')) - pg_size_bytes(current_setting('max_slot_wal_keep_size')))::text FROM pg_ls_waldir()`)
	if !strings.HasPrefix(over, "-") && over != "0" {
		s.t.Errorf("the primary's pg_wal is %s bytes over max_wal_size plus the slot cap", over)
	}
}

// waitFinding waits until check reports a finding with this code and
// severity whose text holds want, and returns it.
func (s *scene) waitFinding(th live.BackupThresholds, code live.FindingCode, sev live.Severity, want string, timeout time.Duration) live.Finding {
	s.t.Helper()
	var got live.Finding
	var last []live.Finding
	deadline := time.Now().Add(timeout)
	for {
		last = s.check(th)
		for _, f := range last {
			if f.Code == code && f.Severity == sev && strings.Contains(f.Problem, want) {
				s.t.Logf("check: %s %s: %s", f.Severity, f.Code, f.Problem)
				return f
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("check did not report %s %s (%q) within %s; it said:\n%s", sev, code, want, timeout, live.FindingsText(last))
			return got
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// check gathers a status and checks it, with the backup thresholds given.
func (s *scene) check(th live.BackupThresholds) []live.Finding {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	st, err := live.Gather(ctx, s.l.Target())
	if err != nil {
		s.t.Fatal(err)
	}
	var out []live.Finding
	for _, f := range live.Check(st, s.l.Cluster, live.DefaultThresholds) {
		if !strings.HasPrefix(string(f.Code), "backup-") {
			out = append(out, f)
		}
	}
	return append(out, live.CheckBackup(st, 0, th, 0.25)...)
}

// resumed waits until the archive holds what the primary had when it was
// called, with no upload error, and check has no critical finding and no
// storage finding left; it returns that position.
func (s *scene) resumed(th live.BackupThresholds, timeout time.Duration) pgops.LSN {
	s.t.Helper()
	p := s.primary()
	at, _ := pgops.ParseLSN(labtest.Query(s.t, s.l, p, "SELECT pg_current_wal_lsn()::text"))
	tli := pgops.Timeline(atoi(labtest.Query(s.t, s.l, p, "SELECT timeline_id::text FROM pg_control_checkpoint()")))
	labtest.WaitFor(s.t, timeout, fmt.Sprintf("the archive to reach %s again", at), func() bool {
		st, err := s.status()
		return err == nil && st.UploadError == "" && st.Paused == "" && st.ArchivedTLI >= tli && st.ArchivedLSN >= at
	})
	var fs []live.Finding
	labtest.WaitFor(s.t, timeout, "check to be clean of the fault", func() bool {
		fs = s.check(th)
		for _, f := range fs {
			if f.Severity == live.Critical || f.Code == live.CodeBackupStorage || f.Code == live.CodeBackupStorageSlow {
				return false
			}
		}
		return true
	})
	return at
}

// restoreHolds restores latest and checks every commit acknowledged before
// t is there.
func (s *scene) restoreHolds(t time.Time, what string) {
	s.t.Helper()
	_, srv := restore(s.t, s.l, backup.Target{Latest: true})
	defer srv.Stop(context.Background())
	ids := s.load.AckedBefore(t)
	missing, err := ledger.Missing(s.ctx, connString(srv), ids)
	if err != nil {
		s.t.Fatal(err)
	}
	if len(ids) == 0 || missing != 0 {
		s.t.Errorf("%s: the latest restore misses %d of the %d commits acknowledged before %s", what, missing, len(ids), t.Format("15:04:05.000"))
	}
}

// quickThresholds are check's defaults with the agent's silence noticed
// after 6 s instead of a minute (the kill tests wait for it).
func quickThresholds() live.BackupThresholds {
	th := live.DefaultBackupThresholds
	th.AgentSilent = 6 * time.Second
	return th
}

// Storage faults, one after another on one lab, each cleared before the
// next: slow answers, 500, 503, credentials refused, uploads hung halfway,
// connections reset.
func TestBackupStorageFaults(t *testing.T) {
	t.Parallel()
	l, p := labtest.UpWithFaultyStorage(t, labtest.Options{WALCap: "128MB"})
	store := labtest.Store(t, l)
	store.SetStall(3 * time.Second) // the agent's: a hung upload is given up after 3 s, not 30
	a := labtest.AgentOn(t, l, store, nil)
	labtest.WaitBase(t, l, time.Time{}, 2*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	s := &scene{t: t, l: l, p: p, ctx: ctx, status: func() (backup.AgentStatus, error) { return a.Status(), nil }}
	s.startLoad()
	th := live.DefaultBackupThresholds

	faults := []struct {
		name  string
		fault faultproxy.Fault
		code  live.FindingCode
		sev   live.Severity
		says  string
	}{
		{"slow", faultproxy.Fault{Kind: faultproxy.Slow, Delay: 2 * time.Second}, live.CodeBackupStorageSlow, live.Warning, "to answer status's reads"},
		{"500", faultproxy.Fault{Kind: faultproxy.Status, Code: 500}, live.CodeBackupStorage, live.Critical, "(InternalError)"},
		{"503", faultproxy.Fault{Kind: faultproxy.Status, Code: 503}, live.CodeBackupStorage, live.Critical, "(ServiceUnavailable)"},
		{"credentials", faultproxy.Fault{Kind: faultproxy.Deny}, live.CodeBackupStorage, live.Critical, "the storage refused the credentials (InvalidAccessKeyId)"},
		{"hang", faultproxy.Fault{Kind: faultproxy.Hang, HangAfter: 16 << 10}, live.CodeBackupStorage, live.Warning, "the agent cannot upload: storing wal/"},
		{"reset", faultproxy.Fault{Kind: faultproxy.Reset}, live.CodeBackupStorage, live.Critical, "connection reset"},
		{"frozen", faultproxy.Fault{Kind: faultproxy.Freeze}, live.CodeBackupStorage, live.Critical, "storage: no answer in 10 s"},
	}
	type window struct {
		name       string
		start, end time.Time
	}
	var windows []window
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			s.t = t
			start := time.Now()
			p.Set(f.fault)
			t.Logf("storage %s", f.fault)
			s.waitFinding(th, f.code, f.sev, f.says, time.Minute)
			if f.fault.Kind == faultproxy.Freeze {
				// status and check come back within their deadline, however
				// long the storage stays silent.
				g := time.Now()
				ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
				full, err := live.Gather(ctx, l.Target())
				cancel()
				took := time.Since(g)
				if err != nil || !strings.Contains(live.StatusText(full), "storage: no answer in 10 s") {
					t.Errorf("status with the storage frozen (%v):\n%s", err, live.StatusText(full))
				}
				if took > live.BackupReadTimeout+5*time.Second {
					t.Errorf("status with the storage frozen took %s", took.Round(time.Millisecond))
				}
				t.Logf("status with the storage frozen returned in %.1f s", took.Seconds())
			}
			time.Sleep(3 * time.Second) // WAL piles up behind the fault
			s.primaryHealthy(start, 10*time.Second, false)
			p.Clear()
			cleared := time.Now()
			at := s.resumed(th, 2*time.Minute)
			windows = append(windows, window{f.name, start, cleared})
			t.Logf("%s: named by check, cleared after %.1f s, archive back at %s %.1f s later; %.1f s in all",
				f.fault, cleared.Sub(start).Seconds(), at, time.Since(cleared).Seconds(), time.Since(start).Seconds())
		})
	}
	// One restore for all: it must hold every commit acknowledged before
	// the last fault was cleared (the archive caught up past it); a missing
	// one is blamed on the fault it was acknowledged before.
	s.t = t
	if len(windows) != len(faults) {
		t.Fatalf("%d of %d faults ran", len(windows), len(faults))
	}
	end := windows[len(windows)-1].end
	_, srv := restore(t, l, backup.Target{Latest: true})
	ids, times := s.load.Acks()
	var before []int64
	for i, at := range times {
		if at.Before(end) {
			before = append(before, ids[i])
		}
	}
	have, err := ledger.Present(s.ctx, connString(srv), before)
	if err != nil {
		t.Fatal(err)
	}
	var prevEnd time.Time
	for _, w := range windows {
		missing, n := 0, 0
		from := prevEnd
		prevEnd = w.end
		for i, at := range times {
			if at.Before(w.end) && !at.Before(from) {
				n++
				if !have[ids[i]] {
					missing++
				}
			}
		}
		if missing > 0 {
			t.Errorf("%s: the latest restore misses %d of the %d commits acknowledged up to the end of the fault", w.name, missing, n)
		}
	}
	t.Logf("the latest restore holds all %d commits acknowledged before %s", len(before), end.Format("15:04:05.000"))
}

// The agent SIGKILLed in the middle of a base backup, then in the middle of
// a WAL upload (a slow storage makes both last): pg_basebackup and
// pg_receivewal die with it (no orphan holds the slot), check names the
// silent agent, and the agent started again takes its base backup and
// catches the archive up with nothing lost.
func TestBackupAgentKilled(t *testing.T) {
	t.Parallel()
	l, p := labtest.UpWithFaultyStorage(t, labtest.Options{})
	labtest.Tool(t, l, "db", "pgbench", "-i", "-s", "10", "-q")
	s := &scene{t: t, l: l, p: p, ctx: ctxT(t), status: func() (backup.AgentStatus, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return backup.ReadAgentStatus(ctx, labtest.Store(t, l))
	}}
	s.startLoad()
	th := quickThresholds()

	var agent *exec.Cmd
	var agentDone chan struct{}
	startAgent := func() {
		t.Helper()
		logf, err := os.OpenFile(l.ServiceLog("agent"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		agent = exec.Command(os.Args[0])
		agent.Env = append(os.Environ(), "UNDERSTUDY_TEST_AGENT_LAB="+l.Dir)
		agent.Stdout, agent.Stderr = logf, logf
		if err := agent.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		cmd := agent
		go func() { cmd.Wait(); logf.Close(); close(done) }()
		agentDone = done
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	kill := func() time.Time {
		t.Helper()
		if err := agent.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-agentDone
		return time.Now()
	}
	orphansGone := func(what string) {
		t.Helper()
		labtest.WaitFor(t, 15*time.Second, what+": pg_basebackup and pg_receivewal to go with the agent", func() bool {
			return labtest.Query(t, l, "db-replica", "SELECT (count(*) FILTER (WHERE backend_type = 'walsender' AND application_name LIKE 'understudy-b%'))::text FROM pg_stat_activity") == "0"
		})
	}

	t.Run("mid-base-backup", func(t *testing.T) {
		s.t = t
		start := time.Now()
		p.Set(faultproxy.Fault{Kind: faultproxy.Slow, Delay: time.Second})
		startAgent()
		labtest.WaitFor(t, time.Minute, "a base backup to stream", func() bool {
			return labtest.Query(t, l, "db-replica", "SELECT count(*)::text FROM pg_stat_progress_basebackup WHERE phase = 'streaming database files'") == "1"
		})
		killed := kill()
		t.Logf("killed the agent during its base backup")
		orphansGone("mid-base-backup")
		s.waitFinding(th, live.CodeBackupNoBase, live.Critical, "no base backup", time.Minute)
		s.waitFinding(th, live.CodeBackupAgent, live.Critical, "", time.Minute)
		s.primaryHealthy(start, 10*time.Second, false)
		p.Clear()
		startAgent()
		labtest.WaitBase(t, l, killed, 3*time.Minute)
		s.resumed(th, 2*time.Minute)
		s.restoreHolds(killed, "after a kill mid-base-backup")
		t.Logf("mid-base-backup: %.1f s in all", time.Since(start).Seconds())
	})

	t.Run("mid-upload", func(t *testing.T) {
		s.t = t
		start := time.Now()
		// Uploads slow enough to be caught in flight; status and check
		// still read the bucket within their deadline.
		p.Set(faultproxy.Fault{Kind: faultproxy.Slow, Delay: 1500 * time.Millisecond})
		labtest.WaitFor(t, time.Minute, "a WAL upload in flight", func() bool {
			for _, r := range p.InFlight() {
				if strings.HasPrefix(r, "PUT ") && strings.Contains(r, "/wal/") {
					return true
				}
			}
			return false
		})
		killed := kill()
		t.Logf("killed the agent during a WAL upload")
		orphansGone("mid-upload")
		s.waitFinding(th, live.CodeBackupAgent, live.Critical, "", time.Minute)
		s.primaryHealthy(start, 10*time.Second, false)
		p.Clear()
		startAgent()
		s.resumed(th, 2*time.Minute)
		s.restoreHolds(killed, "after a kill mid-upload")
		t.Logf("mid-upload: %.1f s in all", time.Since(start).Seconds())
	})
}

// The spool's disk fills up (a small tmpfs for the spool, filled by a
// file): the agent pauses and says so, the standby's slot keeps the WAL,
// and once there is room it resumes with nothing lost.
func TestBackupSpoolDiskFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root: this test mounts a small tmpfs for the agent's spool")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("needs mount (util-linux)")
	}
	spool, err := os.MkdirTemp("", "understudy-spool-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "understudy-test-spool", spool).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { // after the agent (cleanups run last-in first-out)
		if out, err := exec.Command("umount", spool).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", spool, err, out)
			exec.Command("umount", "-l", spool).Run()
		}
		os.Remove(spool)
	})
	l, ctx, a, _ := backedUp(t, labtest.Options{WALCap: "256MB"}, func(c *backup.AgentConfig) { c.Spool = filepath.Join(spool, "wal") })
	s := &scene{t: t, l: l, ctx: ctx, status: func() (backup.AgentStatus, error) { return a.Status(), nil }}
	s.startLoad()
	th := live.DefaultBackupThresholds

	start := time.Now()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(spool, &fs); err != nil {
		t.Fatal(err)
	}
	free := int64(fs.Bavail) * int64(fs.Bsize)
	filler := filepath.Join(spool, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, free-20<<20)); err != nil {
		t.Fatalf("filling the spool's disk: %v", err)
	}
	f.Close()
	t.Logf("the spool's disk has %d MB free", (free-(free-20<<20))>>20)
	s.waitFinding(th, live.CodeBackupSpoolDisk, live.Critical, "the spool's disk is full", time.Minute)
	if a.Status().Receiving {
		t.Errorf("the agent still receives with its spool's disk full")
	}
	time.Sleep(3 * time.Second)
	s.primaryHealthy(start, 10*time.Second, false)
	os.Remove(filler)
	cleared := time.Now()
	s.resumed(th, 2*time.Minute)
	s.restoreHolds(cleared, "after the spool's disk was full")
	t.Logf("spool disk full: %.1f s in all", time.Since(start).Seconds())
}

// The node the agent streams from goes away: stopped, switched over,
// promoted (its primary lost). The agent moves to whichever node it should
// stream from, check says when that is the primary, the slot does not stay
// on a primary, and the archive loses nothing across.
func TestBackupSourceFaults(t *testing.T) {
	t.Parallel()
	l, ctx, a, _ := backedUp(t, labtest.Options{}, nil)
	s := &scene{t: t, l: l, ctx: ctx, status: func() (backup.AgentStatus, error) { return a.Status(), nil }}
	s.startLoad()
	th := live.DefaultBackupThresholds
	streamsFrom := func(node string, standby bool) {
		t.Helper()
		labtest.WaitFor(t, time.Minute, fmt.Sprintf("the agent to stream from %s", node), func() bool {
			st := a.Status()
			return st.Receiving && st.Source == node && st.SourceStandby == standby
		})
	}
	streamsFrom("db-replica", true)

	t.Run("stopped", func(t *testing.T) {
		s.t = t
		start := time.Now()
		if err := l.Stop(ctx, "db-replica"); err != nil {
			t.Fatal(err)
		}
		streamsFrom("db", false)
		s.waitFinding(th, live.CodeBackupFromPrimary, live.Warning, "streams WAL from the primary db", time.Minute)
		time.Sleep(2 * time.Second)
		s.primaryHealthy(start, 10*time.Second, true) // the slot is on the primary now, within its cap
		if err := l.Start(ctx, "db-replica"); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		streamsFrom("db-replica", true)
		labtest.WaitFor(t, 30*time.Second, "the primary to drop the backup slot", func() bool {
			return labtest.Query(t, l, "db", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'") == "0"
		})
		s.resumed(th, 2*time.Minute)
		s.restoreHolds(back, "after the standby stopped")
		t.Logf("standby stopped: %.1f s in all", time.Since(start).Seconds())
	})

	t.Run("switched-over", func(t *testing.T) {
		s.t = t
		start := time.Now()
		if _, err := live.Switchover(ctx, l.Target(), "db-replica", live.RoleOptions{}); err != nil {
			t.Fatalf("switchover: %v", err)
		}
		done := time.Now()
		streamsFrom("db", true)
		labtest.WaitFor(t, 30*time.Second, "the new primary to keep no backup slot", func() bool {
			return labtest.Query(t, l, "db-replica", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'") == "0"
		})
		t.Logf("the agent streamed from the new standby and the new primary held no slot %.1f s after the switchover", time.Since(done).Seconds())
		s.primaryHealthy(done, 10*time.Second, false)
		s.resumed(th, 2*time.Minute)
		s.restoreHolds(done, "after a switchover")
		t.Logf("switched over: %.1f s in all", time.Since(start).Seconds())
	})

	t.Run("promoted", func(t *testing.T) {
		s.t = t
		start := time.Now()
		// Commits acknowledged before T are on db once it has replayed what
		// the primary had at T; those the archive must keep, whatever the
		// primary acknowledged after T and took with it.
		T := time.Now()
		at := labtest.Query(t, l, "db-replica", "SELECT pg_current_wal_lsn()::text")
		labtest.WaitFor(t, time.Minute, "db to replay "+at, func() bool {
			return labtest.Query(t, l, "db", "SELECT (pg_last_wal_replay_lsn() >= $1::pg_lsn)::text", at) == "true"
		})
		if err := l.Kill("db-replica"); err != nil { // the primary is lost
			t.Fatal(err)
		}
		if _, err := live.Promote(ctx, l.Target(), "db", live.RoleOptions{Fence: true}); err != nil {
			t.Fatalf("promote: %v", err)
		}
		streamsFrom("db", false)
		s.waitFinding(th, live.CodeBackupFromPrimary, live.Warning, "streams WAL from the primary db", time.Minute)
		time.Sleep(2 * time.Second)
		s.primaryHealthy(time.Now().Add(-2*time.Second), 10*time.Second, true)
		if _, err := live.Rejoin(ctx, l.Target(), "db-replica", live.RoleOptions{}); err != nil {
			t.Fatalf("rejoin: %v", err)
		}
		streamsFrom("db-replica", true)
		labtest.WaitFor(t, 30*time.Second, "the primary to drop the backup slot", func() bool {
			return labtest.Query(t, l, "db", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'understudy_backup'") == "0"
		})
		s.resumed(th, 2*time.Minute)
		s.restoreHolds(T, "after a promote")
		t.Logf("promoted: %.1f s in all", time.Since(start).Seconds())
	})
}
