// Command backup is the backup bench (issues 12 and 19): on a local lab
// with a pgbench database (scale 70 is about 1 GB), understudy against a
// raw pg_basebackup and against pgBackRest (Debian's package) on the same
// storage server (versitygw over TLS):
//   - base backup from the standby: understudy (zstd + age + upload) vs a
//     raw pg_basebackup of the same standby to local disk vs pgBackRest's
//     full backup (backup-standby=y), in paired rounds;
//   - restore to latest, fresh (right after a base backup) and updated
//     (after a pgbench run's WAL), into an empty directory, until the
//     server is writable;
//   - the CPU that WAL archiving costs per 100 MB of WAL: understudy's
//     agent (its own process, with pg_receivewal) vs pgBackRest's
//     archive-push (the primary's archiver and its children), on the same
//     pgbench run;
//   - the RPO under a write load (how much older the newest commit a latest
//     restore has is than the newest one acknowledged when the storage was
//     cut off).
//
// Run it with scripts/bench-backup. The figures vary with the machine's
// load: the bench prints the load average beside them.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/bench/benchmain"
	"github.com/understudy-dev/understudy/internal/ledger"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
)

func main() {
	if spec := os.Getenv(agentEnv); spec != "" {
		runAgentProcess(spec)
		return
	}
	scale := flag.Int("scale", 70, "pgbench scale (70 is about 1 GB)")
	rounds := flag.Int("rounds", 3, "paired rounds of base backups")
	walFor := flag.Duration("wal-load", 60*time.Second, "how long pgbench writes WAL for the archiving CPU figures")
	rpoFor := flag.Duration("rpo-load", 20*time.Second, "how long the write load runs before the archive is cut off")
	flag.StringVar(&keepAgentLog, "agent-log", "", "copy the agent's log here at the end")
	flag.Parse()
	benchmain.Run(func(ctx context.Context) error { return run(ctx, *scale, *rounds, *walFor, *rpoFor) })
}

var keepAgentLog string

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func run(ctx context.Context, scale, rounds int, walFor, rpoFor time.Duration) error {
	l, done, err := benchmain.Lab(ctx, "8GB")
	if err != nil {
		return err
	}
	defer done()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true}); err != nil {
		return err
	}
	gw, err := lab.BuildVersityGW(ctx, os.Stderr)
	if err != nil {
		return err
	}
	scratch, err := os.MkdirTemp("", "understudy-bench-backup-")
	if err != nil {
		return err
	}
	os.Chmod(scratch, 0o755)
	defer os.RemoveAll(scratch)
	ports, err := netutil.FreePorts(2)
	if err != nil {
		return err
	}
	st, err := startStorage(ctx, gw, scratch, ports[0])
	if err != nil {
		return err
	}
	defer st.stop()
	store, err := backup.OpenS3(st.config("understudy"), st.accessKey, st.secret)
	if err != nil {
		return err
	}
	if err := store.EnsureBucket(ctx, "us-east-1"); err != nil {
		return err
	}
	key, err := backup.GenerateKey()
	if err != nil {
		return err
	}
	cores, _ := os.ReadFile("/proc/cpuinfo")
	fmt.Printf("# understudy backup bench: PostgreSQL %d, pgbench scale %d, %d cores, storage versitygw over TLS on loopback, %s\n",
		l.Cluster.Major, scale, strings.Count(string(cores), "\nprocessor")+1, time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("# load average at the start: %s (other work on the machine makes every figure noisier)\n", loadavg())

	t0 := time.Now()
	if err := tool(ctx, l, "pgbench", "-i", "-q", "-s", fmt.Sprint(scale)); err != nil {
		return err
	}
	size, err := dbSize(ctx, l)
	if err != nil {
		return err
	}
	fmt.Printf("pgbench -i: %.1f s, database %.0f MB\n", time.Since(t0).Seconds(), float64(size)/(1<<20))

	br, err := setupPgBackRest(ctx, l, st, scratch)
	if err != nil {
		return err
	}

	// understudy's agent, as its own process, from here on.
	cfg := l.AgentConfig(nil)
	cfg.Spool = filepath.Join(scratch, "spool")
	cfg.BaseEvery = 1000 * time.Hour // the bench takes its own
	cfg.Policy = backup.Policy{KeepBases: 100}
	cfg.Log = nil
	spec, _ := json.Marshal(agentSpec{Config: cfg, S3: st.config("understudy")})
	specFile := filepath.Join(scratch, "agent.json")
	if err := os.WriteFile(specFile, spec, 0o600); err != nil {
		return err
	}
	agentLog := filepath.Join(scratch, "agent.log")
	agent, err := startAgentProcess(specFile, agentLog, st, key)
	if err != nil {
		return err
	}
	defer func() {
		agent.stop()
		if keepAgentLog != "" {
			b, _ := os.ReadFile(agentLog)
			os.WriteFile(keepAgentLog, b, 0o644)
		}
	}()
	status := func() backup.AgentStatus {
		s, _ := backup.ReadAgentStatus(ctx, store)
		return s
	}
	if err := freshRestartpoint(ctx, l); err != nil {
		return err
	}

	// Base backups, in paired rounds: raw, understudy, pgBackRest.
	var raw, ours, ratios, theirs []float64
	var oursLast time.Duration
	for i := 0; i < rounds; i++ {
		d := filepath.Join(scratch, fmt.Sprint("raw", i))
		start := time.Now()
		cmd := exec.CommandContext(ctx, filepath.Join(l.Bin, "pg_basebackup"), "-h", filepath.Join(l.Dir, "sock", "db-replica"), "-p", fmt.Sprint(l.Cluster.Nodes[1].Port),
			"-U", l.Cluster.ReplUser, "-D", d, "-F", "tar", "-X", "none", "--manifest-checksums=SHA256", "-c", "fast")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("raw pg_basebackup: %v: %s", err, out)
		}
		rawT := time.Since(start)
		rawCPU := time.Duration(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime())
		os.RemoveAll(d)

		bcfg := l.AgentConfig(nil)
		self0, kids0 := rusage(syscall.RUSAGE_SELF), rusage(syscall.RUSAGE_CHILDREN)
		bi, err := backup.TakeBase(ctx, &bcfg, store, key, nil)
		if err != nil {
			return err
		}
		selfCPU, kidsCPU := rusage(syscall.RUSAGE_SELF)-self0, rusage(syscall.RUSAGE_CHILDREN)-kids0
		fmt.Printf("  CPU: raw pg_basebackup %.1f s; understudy: its pg_basebackup %.1f s, sealing and upload %.1f s\n", rawCPU.Seconds(), kidsCPU.Seconds(), selfCPU.Seconds())
		pbT, err := br.backup(ctx)
		if err != nil {
			return err
		}
		raw = append(raw, float64(size)/(1<<20)/rawT.Seconds())
		ours = append(ours, float64(size)/(1<<20)/bi.Duration().Seconds())
		ratios = append(ratios, rawT.Seconds()/bi.Duration().Seconds())
		theirs = append(theirs, pbT.Seconds())
		oursLast = bi.Duration()
		fmt.Printf("round %d: raw pg_basebackup %.1f s; understudy %.1f s (%.0f MB stored, %.0f%% of %.0f MB tar); pgBackRest full backup %.1f s; load %s\n",
			i+1, rawT.Seconds(), bi.Duration().Seconds(), float64(bi.Stored)/(1<<20), 100*float64(bi.Stored)/float64(bi.Bytes), float64(bi.Bytes)/(1<<20), pbT.Seconds(), loadavg())
	}
	fmt.Printf("base backup: median of %d rounds: understudy %.0f MB/s, raw pg_basebackup %.0f MB/s: understudy/raw %.2f (goal >= 0.90; rounds %s); pgBackRest %.1f s: understudy/pgBackRest time %.2f\n",
		rounds, benchmain.Pct(ours, 50), benchmain.Pct(raw, 50), benchmain.Pct(ratios, 50), pairs(ratios), benchmain.Pct(theirs, 50), oursLast.Seconds()/benchmain.Pct(theirs, 50))

	// Restore to latest, fresh: right after the last base backups.
	if err := switchAndWait(ctx, l, br, status); err != nil {
		return err
	}
	if err := compareRestores(ctx, l, br, store, key, scratch, "fresh", ports[1]); err != nil {
		return err
	}

	// WAL archiving: one pgbench run; both archive the same WAL.
	archiver, err := archiverPID(ctx, l)
	if err != nil {
		return err
	}
	// The agent's cost with nothing to archive: its loop, probes and report.
	idle0 := cpuTime(agent.cmd.Process.Pid)
	time.Sleep(10 * time.Second)
	idle := (cpuTime(agent.cmd.Process.Pid) - idle0) / 10
	startLSN, err := primaryLSN(ctx, l)
	if err != nil {
		return err
	}
	oursCPU0, theirCPU0 := cpuTime(agent.cmd.Process.Pid), cpuTime(archiver)
	agentU0, agentS0 := ownCPU(agent.cmd.Process.Pid)
	recvPID := childNamed(agent.cmd.Process.Pid, "pg_receivewal")
	recvU0, recvS0 := ownCPU(recvPID)
	wsCPU0 := walsenderCPU(ctx, l)
	w0 := time.Now()
	if err := tool(ctx, l, "pgbench", "-n", "-c", "4", "-j", "2", "-T", fmt.Sprint(int(walFor.Seconds())), "postgres"); err != nil {
		return err
	}
	if err := switchAndWait(ctx, l, br, status); err != nil {
		return err
	}
	window := time.Since(w0)
	endLSN, err := primaryLSN(ctx, l)
	if err != nil {
		return err
	}
	oursCPU, theirCPU := cpuTime(agent.cmd.Process.Pid)-oursCPU0, cpuTime(archiver)-theirCPU0
	agentU, agentS := ownCPU(agent.cmd.Process.Pid)
	agentU, agentS = agentU-agentU0, agentS-agentS0
	recvU, recvS := ownCPU(recvPID)
	recvU, recvS = recvU-recvU0, recvS-recvS0
	wsCPU := walsenderCPU(ctx, l) - wsCPU0
	walMB := float64(endLSN-startLSN) / (1 << 20)
	per := func(d time.Duration) float64 { return d.Seconds() / walMB * 100 }
	fmt.Printf("WAL archiving of %.0f MB of WAL (pgbench -c 4 for %s, archived within %.1f s): CPU per 100 MB: understudy agent + pg_receivewal %.2f s (and the standby's walsender for it %.2f s), pgBackRest archive-push %.2f s: understudy/pgBackRest %.2f (goal <= 1.5); load %s\n",
		walMB, walFor, window.Seconds(), per(oursCPU), per(wsCPU), per(theirCPU), oursCPU.Seconds()/theirCPU.Seconds(), loadavg())
	fmt.Printf("  idle, the agent costs %.1f ms of CPU a second (its loop, probes, report): %.2f s of the %.1f s window\n",
		float64(idle.Microseconds())/1000, (idle * window / time.Second).Seconds(), window.Seconds())
	fmt.Printf("  of which the agent process itself %.2f s user + %.2f s system, pg_receivewal %.2f s user + %.2f s system (it ran all along: %v)\n",
		per(agentU), per(agentS), per(recvU), per(recvS), recvPID != 0 && childNamed(agent.cmd.Process.Pid, "pg_receivewal") == recvPID)
	fmt.Printf("memory: the agent's peak RSS %.0f MB; this bench process (base backups and restores run in it) %.0f MB\n",
		float64(peakRSS(agent.cmd.Process.Pid))/(1<<20), float64(peakRSS(os.Getpid()))/(1<<20))

	// Restore to latest, updated: after that run's WAL.
	if err := compareRestores(ctx, l, br, store, key, scratch, "updated", ports[1]); err != nil {
		return err
	}

	// RPO under a write load: the storage is cut off at D.
	if err := rpo(ctx, l, st, store, key, scratch, ports[1], rpoFor, agent, cfg.PartialEvery); err != nil {
		return err
	}
	fmt.Printf("# load average at the end: %s\n", loadavg())
	return nil
}

// switchAndWait ends the current segment and waits until both archives
// hold all the primary has: understudy's (its report) and pgBackRest's
// (pg_stat_archiver).
func switchAndWait(ctx context.Context, l *lab.Lab, br *pgbr, status func() backup.AgentStatus) error {
	c, err := l.Conn(ctx, "db")
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var seg string
	if err := c.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg); err != nil {
		return err
	}
	at, err := pgops.CurrentWALLSN(ctx, c)
	if err != nil {
		return err
	}
	for i := 0; i < 3000; i++ {
		var last string
		c.QueryRow(ctx, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").Scan(&last)
		if last >= seg && status().ArchivedLSN >= at {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the archives did not reach %s", at)
}

// compareRestores restores latest with understudy, then with pgBackRest,
// each into an empty directory until the server is writable.
func compareRestores(ctx context.Context, l *lab.Lab, br *pgbr, store backup.Store, key *backup.Key, scratch, what string, port int) error {
	dir := filepath.Join(scratch, "restore-"+what, "data")
	os.MkdirAll(filepath.Dir(dir), 0o755)
	res, srv, err := backup.Restore(ctx, backup.RestoreRequest{Store: store, Key: key, Target: backup.Target{Latest: true}, BinDir: l.Bin, Dir: dir, Port: port, Cred: l.Cred(), Timeout: 30 * time.Minute})
	if err != nil {
		return err
	}
	srv.Stop(context.WithoutCancel(ctx))
	os.RemoveAll(filepath.Dir(dir))
	ours := res.Fetch + res.Replay

	pdir := filepath.Join(scratch, "pgbr-"+what, "data")
	aux := filepath.Join(scratch, "pgbr-"+what, "aux")
	for _, d := range []string{pdir, aux} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	os.WriteFile(filepath.Join(aux, "pg_hba.conf"), []byte("local all all trust\n"), 0o600)
	if cred := l.Cred(); cred != nil {
		for _, d := range []string{filepath.Dir(pdir), pdir, aux, filepath.Join(aux, "pg_hba.conf")} {
			os.Chown(d, int(cred.Uid), int(cred.Gid))
		}
	}
	t0 := time.Now()
	restoreT, err := br.restore(ctx, pdir)
	if err != nil {
		return err
	}
	psrv := &backup.Server{BinDir: l.Bin, Dir: pdir, WALDir: aux, Sock: aux, Port: port, User: "postgres", Cred: l.Cred(), Log: filepath.Join(aux, "server.log")}
	t1 := time.Now()
	if err := psrv.Start(ctx); err != nil {
		return err
	}
	if _, err := psrv.WaitPromoted(ctx, 30*time.Minute); err != nil {
		log, _ := os.ReadFile(psrv.Log)
		auto, _ := os.ReadFile(filepath.Join(pdir, "postgresql.auto.conf"))
		return fmt.Errorf("pgBackRest's restore did not recover: %w\n%s\npostgresql.auto.conf:\n%s", err, tail(string(log), 3000), auto)
	}
	replay := time.Since(t1)
	theirs := time.Since(t0)
	psrv.Stop(context.WithoutCancel(ctx))
	os.RemoveAll(filepath.Dir(pdir))
	fmt.Printf("restore to latest (%s data): understudy %.1f s (fetch %.1f + recovery %.1f; base %s + %d WAL files), pgBackRest %.1f s (restore %.1f + recovery %.1f): understudy/pgBackRest %.2f (goal <= 1.00); load %s\n",
		what, ours.Seconds(), res.Fetch.Seconds(), res.Replay.Seconds(), res.Base, res.Segments, theirs.Seconds(), restoreT.Seconds(), replay.Seconds(), ours.Seconds()/theirs.Seconds(), loadavg())
	return nil
}

func rpo(ctx context.Context, l *lab.Lab, st *storage, store backup.Store, key *backup.Key, scratch string, port int, rpoFor time.Duration, agent *agentProc, every time.Duration) error {
	app := l.AppConnString()
	if err := ledger.Prepare(ctx, app); err != nil {
		return err
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cmd, _ := l.Tool(loadCtx, "db", "pgbench", "-n", "-c", "2", "-T", fmt.Sprint(int(rpoFor.Seconds())+30), app)
		cmd.Run()
	}()
	load := ledger.Start(loadCtx, app, 2)
	time.Sleep(rpoFor)
	st.stop()
	cut := time.Now()
	stopLoad()
	load.Stop()
	wg.Wait()
	agent.stop()
	if err := st.start(ctx); err != nil {
		return err
	}
	ids, times := load.Acks()
	var before []int64
	var lastAck time.Time
	for i, t := range times {
		if t.Before(cut) {
			before = append(before, ids[i])
			lastAck = t
		}
	}
	dir := filepath.Join(scratch, "rpo", "data")
	os.MkdirAll(filepath.Dir(dir), 0o755)
	_, srv, err := backup.Restore(ctx, backup.RestoreRequest{Store: store, Key: key, Target: backup.Target{Latest: true}, BinDir: l.Bin, Dir: dir, Port: port, Cred: l.Cred()})
	if err != nil {
		return err
	}
	have, err := ledger.Present(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", srv.Sock, srv.Port), before)
	srv.Stop(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	var newest time.Time
	missing := 0
	for i, t := range times {
		if !t.Before(cut) {
			continue
		}
		if have[ids[i]] {
			if t.After(newest) {
				newest = t
			}
		} else {
			missing++
		}
	}
	fmt.Printf("RPO under pgbench -c 2 + 2 ledger clients: the latest restore misses %d of %d commits acknowledged before the storage was cut off; its newest is %.0f ms older than the newest acknowledged (goal <= 1000 ms; the agent uploads the open segment every %s)\n",
		missing, len(before), float64(lastAck.Sub(newest).Microseconds())/1000, cmp.Or(every, 500*time.Millisecond))
	return nil
}

// rusage is the CPU time (user + system) of this process or of its reaped
// children.
func rusage(who int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func pairs(r []float64) string {
	var s []string
	for _, v := range r {
		s = append(s, fmt.Sprintf("%.2f", v))
	}
	return strings.Join(s, " ")
}

func tool(ctx context.Context, l *lab.Lab, program string, args ...string) error {
	cmd, err := l.Tool(ctx, "db", program, args...)
	if err != nil {
		return err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", program, err, out)
	}
	return nil
}

func dbSize(ctx context.Context, l *lab.Lab) (int64, error) {
	c, err := l.Conn(ctx, "db")
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	return pgops.DatabaseBytes(ctx, c)
}

func primaryLSN(ctx context.Context, l *lab.Lab) (pgops.LSN, error) {
	c, err := l.Conn(ctx, "db")
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	return pgops.CurrentWALLSN(ctx, c)
}

// walsenderCPU is the CPU of the standby's walsenders that serve the agent.
func walsenderCPU(ctx context.Context, l *lab.Lab) time.Duration {
	c, err := l.Conn(ctx, "db-replica")
	if err != nil {
		return 0
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SELECT pid FROM pg_stat_replication WHERE application_name = 'understudy-backup'")
	if err != nil {
		return 0
	}
	defer rows.Close()
	var total time.Duration
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) == nil {
			total += cpuTime(pid)
		}
	}
	return total
}

// freshRestartpoint makes the primary checkpoint and waits for the standby
// to replay it, so the base backups start from it.
func freshRestartpoint(ctx context.Context, l *lab.Lab) error {
	c, err := l.Conn(ctx, "db")
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if err := pgops.Checkpoint(ctx, c); err != nil {
		return err
	}
	at, err := pgops.CurrentWALLSN(ctx, c)
	if err != nil {
		return err
	}
	s, err := l.Conn(ctx, "db-replica")
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	for i := 0; i < 600; i++ {
		w, err := pgops.ReadWALPositions(ctx, s)
		if err == nil && w.Replayed >= at {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the standby did not replay %s", at)
}
