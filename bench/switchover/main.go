// Command switchover is the bench for issue 5: under a pgbench write load
// plus a client that records every acknowledged commit, it runs N
// switchovers back and forth in a local lab and prints the write outage the
// client saw (p50/max, ms) and the commits lost. Run it with
// scripts/bench-switchover.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/understudy-dev/understudy/bench/benchmain"
	"github.com/understudy-dev/understudy/internal/ledger"
	"github.com/understudy-dev/understudy/live"
)

func main() {
	n := flag.Int("n", 40, "switchovers")
	workers := flag.Int("workers", 4, "ledger clients recording acknowledged commits")
	pgbenchClients := flag.Int("pgbench-clients", 2, "pgbench clients writing alongside (0: none)")
	gap := flag.Duration("gap", 2*time.Second, "time between switchovers")
	flag.Parse()
	benchmain.Run(func(ctx context.Context) error { return run(ctx, *n, *workers, *pgbenchClients, *gap) })
}

func run(ctx context.Context, n, workers, pgbenchClients int, gap time.Duration) error {
	l, done, err := benchmain.Lab(ctx, "")
	if err != nil {
		return err
	}
	defer done()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true}); err != nil {
		return err
	}
	app := l.AppConnString()
	fmt.Printf("# understudy switchover bench: PostgreSQL %d, %d switchovers, %d ledger clients + %d pgbench clients, %s\n",
		l.Cluster.Major, n, workers, pgbenchClients, time.Now().UTC().Format(time.RFC3339))
	if pgbenchClients > 0 {
		cmd, _ := l.Tool(ctx, "db", "pgbench", "-i", "-q", "-s", "5")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("pgbench -i: %v: %s", err, out)
		}
	}
	if err := ledger.Prepare(ctx, app); err != nil {
		return err
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	pgbenchRuns := 0
	if pgbenchClients > 0 {
		// pgbench ends when a server it talks to goes away; it is started
		// again at once, aimed at whichever node is writable.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				cmd, _ := l.Tool(loadCtx, "db", "pgbench", "-n", "-c", fmt.Sprint(pgbenchClients), "-T", "600", app)
				cmd.Run()
				pgbenchRuns++
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	load := ledger.Start(loadCtx, app, workers)
	time.Sleep(gap)
	var outages, pauses []float64
	to := "db-replica"
	for i := 0; i < n; i++ {
		begin := time.Now()
		o := live.RoleOptions{}
		if os.Getenv("BENCH_TRACE") != "" {
			o.Out = os.Stdout
		}
		res, err := live.Switchover(ctx, l.Target(), to, o)
		end := time.Now()
		if err != nil {
			stopLoad()
			return fmt.Errorf("switchover %d to %s: %w", i+1, to, err)
		}
		time.Sleep(gap)
		gapSeen := load.LongestGap(begin, end)
		outages = append(outages, ms(gapSeen))
		pauses = append(pauses, ms(res.WriteOutage))
		fmt.Printf("switchover %2d → %-10s client-seen write outage %6.1f ms (server side: stop to promoted %6.1f ms; whole command %6.0f ms)\n",
			i+1, to, ms(gapSeen), ms(res.WriteOutage), ms(end.Sub(begin)))
		if to == "db-replica" {
			to = "db"
		} else {
			to = "db-replica"
		}
	}
	stopLoad()
	load.Stop()
	wg.Wait()
	acked, failed := load.Acked()
	lost, err := load.Lost(context.WithoutCancel(ctx), app)
	if err != nil {
		return err
	}
	sort.Float64s(outages)
	sort.Float64s(pauses)
	fmt.Printf("\nwrite outage seen by the client: p50 %.1f ms, p95 %.1f ms, max %.1f ms (goal: max <= 400 ms)\n", benchmain.Pct(outages, 50), benchmain.Pct(outages, 95), outages[len(outages)-1])
	fmt.Printf("server-side pause (clean stop → promoted): p50 %.1f ms, p95 %.1f ms, max %.1f ms\n", benchmain.Pct(pauses, 50), benchmain.Pct(pauses, 95), pauses[len(pauses)-1])
	fmt.Printf("acknowledged commits: %d; lost: %d (goal 0); failed attempts during switchovers: %d; pgbench restarts: %d\n", acked, lost, failed, pgbenchRuns)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
