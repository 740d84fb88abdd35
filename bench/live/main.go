// Command live is the bench for issue 3: on a ~1 GB pgbench database in a
// local lab it prints the clone time through `apply` against a raw
// pg_basebackup, the wall time of `understudy status`, and the standby's
// replay lag under a pgbench write load. Run it with scripts/bench-live.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/bench/benchmain"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
)

func main() {
	scale := flag.Int("scale", 66, "pgbench scale (66 is about 1 GB)")
	rounds := flag.Int("rounds", 5, "clones of each kind")
	statusRuns := flag.Int("status-runs", 20, "runs of `understudy status`")
	loadSeconds := flag.Int("load-seconds", 30, "seconds of pgbench write load for the lag figures")
	clients := flag.Int("clients", 4, "pgbench clients for the write load")
	flag.Parse()
	benchmain.Run(func(ctx context.Context) error { return run(ctx, *scale, *rounds, *statusRuns, *loadSeconds, *clients) })
}

func run(ctx context.Context, scale, rounds, statusRuns, loadSeconds, clients int) error {
	l, done, err := benchmain.Lab(ctx, "10GB")
	if err != nil {
		return err
	}
	defer done()
	t := l.Target()

	fmt.Printf("# understudy live bench: PostgreSQL %d, pgbench scale %d, %s\n", l.Cluster.Major, scale, time.Now().UTC().Format(time.RFC3339))
	if err := l.Start(ctx, "db"); err != nil {
		return err
	}
	if _, err := live.WaitReady(ctx, l, "db", time.Minute); err != nil {
		return err
	}
	pc, err := l.Conn(ctx, "db")
	if err != nil {
		return err
	}
	defer pc.Close(ctx)
	if err := pgops.EnsureReplicationRole(ctx, pc, "replicator", l.Password()); err != nil {
		return err
	}
	t0 := time.Now()
	if err := tool(ctx, l, "pgbench", "-i", "-q", "-s", fmt.Sprint(scale)); err != nil {
		return err
	}
	if _, err := pc.Exec(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	var size int64
	pc.QueryRow(ctx, "SELECT sum(pg_database_size(oid))::bigint FROM pg_database").Scan(&size)
	fmt.Printf("pgbench -i -s %d: %.1f s, databases %.0f MB\n\n", scale, time.Since(t0).Seconds(), float64(size)/(1<<20))

	// Clone time: raw pg_basebackup (the guide's command, over TCP with the
	// same role) against apply's clone of the standby, alternated.
	var raw, viaApply []float64
	n := l.Cluster.Nodes[0]
	// Each timed clone starts from the same state: a fresh checkpoint on
	// the primary and the page cache written back (sync), and the two kinds
	// take turns going first, so neither always inherits the other's
	// write-back.
	settle := func() error {
		syscall.Sync()
		_, err := pc.Exec(ctx, "CHECKPOINT")
		syscall.Sync()
		return err
	}
	rawClone := func() error {
		dest := filepath.Join(l.Dir, "data", "raw-clone") // a directory the servers' user owns
		if err := settle(); err != nil {
			return err
		}
		start := time.Now()
		cmd, _ := l.Tool(ctx, "db", "pg_basebackup", "-h", n.Addr, "-p", fmt.Sprint(n.Port), "-U", "replicator", "-D", dest, "-X", "stream", "-c", "fast", "-R")
		cmd.Env = append(cmd.Env, "PGPASSWORD="+l.Password()) // environment, never argv
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("raw pg_basebackup: %v: %s", err, out)
		}
		raw = append(raw, time.Since(start).Seconds())
		return os.RemoveAll(dest)
	}
	applyClone := func() error {
		if err := settle(); err != nil {
			return err
		}
		start := time.Now()
		if _, err := live.Apply(ctx, t, live.ApplyOptions{Timeout: 10 * time.Minute, Out: stamped{start, os.Getenv("BENCH_TRACE") != ""}}); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		viaApply = append(viaApply, time.Since(start).Seconds())
		if os.Getenv("BENCH_TRACE") != "" {
			b, _ := os.ReadFile(l.LogFile("db-replica"))
			fmt.Printf("%s\n", b)
		}
		// Back to no standby: stop it, remove the lab's copy, drop its slot.
		if err := l.Stop(ctx, "db-replica"); err != nil {
			return err
		}
		if err := os.RemoveAll(l.DataDir("db-replica")); err != nil {
			return err
		}
		return pgops.DropSlot(ctx, pc, "understudy_db_replica")
	}
	for i := 0; i < rounds; i++ {
		order := []func() error{rawClone, applyClone}
		if i%2 == 1 {
			order = []func() error{applyClone, rawClone}
		}
		for _, f := range order {
			if err := f(); err != nil {
				return err
			}
		}
		fmt.Printf("round %d: raw pg_basebackup %.2f s, apply (slot, clone, start, streaming) %.2f s\n", i+1, raw[i], viaApply[i])
	}
	// A standby again, for the status and lag figures below.
	if _, err := live.Apply(ctx, t, live.ApplyOptions{Timeout: 10 * time.Minute}); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	mr, ma := benchmain.Pct(raw, 50), benchmain.Pct(viaApply, 50)
	fmt.Printf("clone: raw pg_basebackup median %.2f s; via apply median %.2f s; ratio %.3f (goal <= 1.05)\n\n", mr, ma, ma/mr)

	// status wall time, as a user runs it: the built binary, a fresh process each time.
	bin := filepath.Join(l.Dir, "understudy")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/understudy").CombinedOutput(); err != nil {
		return fmt.Errorf("building understudy: %v: %s", err, out)
	}
	var walls []float64
	for i := 0; i < statusRuns; i++ {
		start := time.Now()
		if out, err := exec.CommandContext(ctx, bin, "status", "--lab", l.Dir).CombinedOutput(); err != nil {
			return fmt.Errorf("status: %v: %s", err, out)
		}
		walls = append(walls, time.Since(start).Seconds()*1000)
	}
	sort.Float64s(walls)
	fmt.Printf("understudy status: %d runs, wall p50 %.1f ms, max %.1f ms (goal <= 200 ms)\n\n", statusRuns, benchmain.Pct(walls, 50), walls[len(walls)-1])

	// Replay lag under a write load, sampled from pg_stat_replication.
	var mu sync.Mutex
	var lagMS, lagBytes []float64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var ms, b float64
			err := pc.QueryRow(ctx, `SELECT coalesce(extract(epoch FROM replay_lag) * 1000, 0)::float8,
				pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 FROM pg_stat_replication WHERE application_name = 'db-replica'`).Scan(&ms, &b)
			if err == nil {
				mu.Lock()
				lagMS, lagBytes = append(lagMS, ms), append(lagBytes, b)
				mu.Unlock()
			}
		}
	}()
	out, err := toolOut(ctx, l, "pgbench", "-c", fmt.Sprint(clients), "-j", "2", "-T", fmt.Sprint(loadSeconds), "-n")
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	tps := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "tps") {
			tps = strings.TrimSpace(line)
		}
	}
	sort.Float64s(lagMS)
	sort.Float64s(lagBytes)
	fmt.Printf("write load: pgbench -c %d -T %d (%s)\n", clients, loadSeconds, tps)
	fmt.Printf("replay lag over %d samples: p50 %.1f ms, p95 %.1f ms, max %.1f ms; bytes p50 %.0f, p95 %.0f\n",
		len(lagMS), benchmain.Pct(lagMS, 50), benchmain.Pct(lagMS, 95), lagMS[len(lagMS)-1], benchmain.Pct(lagBytes, 50), benchmain.Pct(lagBytes, 95))
	return nil
}

// stamped prints apply's progress with the time since the round began when BENCH_TRACE is set.
type stamped struct {
	start time.Time
	on    bool
}

func (s stamped) Write(p []byte) (int, error) {
	if s.on {
		fmt.Printf("    %6.2f s  %s", time.Since(s.start).Seconds(), p)
	}
	return len(p), nil
}

func tool(ctx context.Context, l *lab.Lab, program string, args ...string) error {
	_, err := toolOut(ctx, l, program, args...)
	return err
}

func toolOut(ctx context.Context, l *lab.Lab, program string, args ...string) (string, error) {
	cmd, err := l.Tool(ctx, "db", program, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %v: %s", program, err, out)
	}
	return string(out), nil
}
