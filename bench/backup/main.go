// Command backup is the bench for issue 12, on a local lab with its
// versitygw storage: on a pgbench database of about 1 GB (scale 70), the
// time of a base backup from the standby (compressed, encrypted, uploaded)
// against a raw pg_basebackup of the same standby to local disk; the time
// of a restore to a point in time against that base backup time plus the
// WAL replay; and the RPO under a write load (how much older the newest
// commit a latest restore has is than the newest one acknowledged when the
// archive was cut off). Run it with scripts/bench-backup.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	scale := flag.Int("scale", 70, "pgbench scale (70 is about 1 GB)")
	rounds := flag.Int("rounds", 2, "base backups of each kind")
	rpoFor := flag.Duration("rpo-load", 20*time.Second, "how long the write load runs before the archive is cut off")
	flag.Parse()
	benchmain.Run(func(ctx context.Context) error { return run(ctx, *scale, *rounds, *rpoFor) })
}

func run(ctx context.Context, scale, rounds int, rpoFor time.Duration) error {
	l, done, err := benchmain.Lab(ctx, "8GB")
	if err != nil {
		return err
	}
	defer done()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true}); err != nil {
		return err
	}
	if _, err := lab.BuildVersityGW(ctx, os.Stderr); err != nil {
		return err
	}
	store, err := l.BackupUp(ctx)
	if err != nil {
		return err
	}
	ports, err := netutil.FreePorts(1)
	if err != nil {
		return err
	}
	key, err := l.BackupKey()
	if err != nil {
		return err
	}
	logf, _ := os.Create(l.ServiceLog("agent"))
	defer logf.Close()
	cfg := l.AgentConfig(logf)
	cfg.BaseEvery = 1000 * time.Hour // the bench takes its own
	cfg.Policy = backup.Policy{KeepBases: 100}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	agent := backup.NewAgent(cfg, store, key)
	go func() { agent.Run(agentCtx); close(agentDone) }()
	defer func() { stopAgent(); <-agentDone }()

	fmt.Printf("# understudy backup bench: PostgreSQL %d, pgbench scale %d, storage versitygw on loopback, %s\n", l.Cluster.Major, scale, time.Now().UTC().Format(time.RFC3339))
	t0 := time.Now()
	if err := tool(ctx, l, "pgbench", "-i", "-q", "-s", fmt.Sprint(scale)); err != nil {
		return err
	}
	size, err := dbSize(ctx, l)
	if err != nil {
		return err
	}
	fmt.Printf("pgbench -i: %.1f s, database %.0f MB\n", time.Since(t0).Seconds(), float64(size)/(1<<20))
	if err := freshRestartpoint(ctx, l); err != nil {
		return err
	}

	// Base backups: raw pg_basebackup to a local tar, and understudy's.
	scratch, _ := os.MkdirTemp("", "understudy-bench-raw-")
	os.Chmod(scratch, 0o777)
	defer os.RemoveAll(scratch)
	var raw, ours, ratios []float64
	var oursTime time.Duration
	var last backup.BaseInfo
	for i := 0; i < rounds; i++ {
		d := filepath.Join(scratch, fmt.Sprint("raw", i))
		start := time.Now()
		cmd := exec.CommandContext(ctx, filepath.Join(l.Bin, "pg_basebackup"), "-h", filepath.Join(l.Dir, "sock", "db-replica"), "-p", fmt.Sprint(l.Cluster.Nodes[1].Port),
			"-U", l.Cluster.ReplUser, "-D", d, "-F", "tar", "-X", "none", "--manifest-checksums=SHA256", "-c", "fast")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("raw pg_basebackup: %v: %s", err, out)
		}
		el := time.Since(start)
		os.RemoveAll(d)
		raw = append(raw, float64(size)/(1<<20)/el.Seconds())
		fmt.Printf("raw pg_basebackup of the standby to local disk: %.1f s, %.0f MB/s\n", el.Seconds(), raw[len(raw)-1])

		bi, err := backup.TakeBase(ctx, &cfg, store, key, nil)
		if err != nil {
			return err
		}
		last = bi
		oursTime = bi.Duration()
		ours = append(ours, float64(bi.Bytes)/(1<<20)/bi.Duration().Seconds())
		ratios = append(ratios, ours[len(ours)-1]/raw[len(raw)-1])
		fmt.Printf("understudy backup (zstd + age + upload): %.1f s, %.0f MB/s of tar (%.0f MB stored, %.0f%% of %.0f MB)\n",
			bi.Duration().Seconds(), ours[len(ours)-1], float64(bi.Stored)/(1<<20), 100*float64(bi.Stored)/float64(bi.Bytes), float64(bi.Bytes)/(1<<20))
	}
	// Each round pairs a raw backup with ours right after it, so the ratio
	// of a pair sees the same machine; the median pair is the figure.
	fmt.Printf("base backup throughput: median of %d paired rounds: understudy %.0f MB/s, raw %.0f MB/s, ratio %.2f (goal >= 0.90; pairs: %s)\n",
		rounds, benchmain.Pct(ours, 50), benchmain.Pct(raw, 50), benchmain.Pct(ratios, 50), pairs(ratios))

	// Restore to a point: some writes after the backup, a time, more writes.
	if err := tool(ctx, l, "pgbench", "-n", "-c", "2", "-T", "5", "postgres"); err != nil {
		return err
	}
	target := time.Now()
	if err := tool(ctx, l, "pgbench", "-n", "-c", "2", "-T", "2", "postgres"); err != nil {
		return err
	}
	if err := waitArchived(ctx, l, agent); err != nil {
		return err
	}
	dir := filepath.Join(scratch, "restore", "data")
	os.MkdirAll(filepath.Dir(dir), 0o755)
	res, srv, err := backup.Restore(ctx, backup.RestoreRequest{Store: store, Key: key, Target: backup.Target{Time: target}, BinDir: l.Bin, Dir: dir, Port: ports[0], Cred: l.Cred()})
	if err != nil {
		return err
	}
	srv.Stop(context.WithoutCancel(ctx))
	total := res.Fetch + res.Replay
	fmt.Printf("restore to a point (base %s + %d WAL files): %.1f s = fetch %.1f s + recovery %.1f s; goal <= 1.5 x base backup time (%.1f s) + replay = %.1f s\n",
		res.Base, res.Segments, total.Seconds(), res.Fetch.Seconds(), res.Replay.Seconds(), oursTime.Seconds(), 1.5*oursTime.Seconds()+res.Replay.Seconds())
	_ = last

	// RPO under a write load: the archive is cut off (storage stopped) at D.
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
	if err := l.StopStorage(); err != nil {
		return err
	}
	cut := time.Now()
	stopLoad()
	load.Stop()
	wg.Wait()
	stopAgent()
	<-agentDone
	if err := l.StartStorage(ctx); err != nil {
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
	dir2 := filepath.Join(scratch, "latest", "data")
	os.MkdirAll(filepath.Dir(dir2), 0o755)
	_, srv2, err := backup.Restore(ctx, backup.RestoreRequest{Store: store, Key: key, Target: backup.Target{Latest: true}, BinDir: l.Bin, Dir: dir2, Port: ports[0], Cred: l.Cred()})
	if err != nil {
		return err
	}
	have, err := ledger.Present(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", srv2.Sock, srv2.Port), before)
	srv2.Stop(context.WithoutCancel(ctx))
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
	rpo := lastAck.Sub(newest)
	fmt.Printf("RPO under pgbench -c 2 + 2 ledger clients: the latest restore misses %d of %d commits acknowledged before the cut; its newest is %.0f ms older than the newest acknowledged (goal <= 1000 ms; the agent uploads the open segment every %s)\n",
		missing, len(before), float64(rpo.Microseconds())/1000, cfg.PartialEvery)
	return nil
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

func waitArchived(ctx context.Context, l *lab.Lab, a *backup.Agent) error {
	c, err := l.Conn(ctx, "db")
	if err != nil {
		return err
	}
	at, err := pgops.CurrentWALLSN(ctx, c)
	c.Close(ctx)
	if err != nil {
		return err
	}
	for i := 0; i < 1200; i++ {
		if a.Status().ArchivedLSN >= at {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the archive did not reach %s", at)
}
