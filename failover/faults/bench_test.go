package faults_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/labtest"
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func load() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// BenchmarkFailoverKills kills the primary's server N times
// (UNDERSTUDY_BENCH_KILLS, default 10), alternating between the two
// servers, and prints the time from each kill to the first write the app
// writer got acknowledged by the new primary, then p50 and max.
// scripts/bench-failover runs it.
func BenchmarkFailoverKills(b *testing.B) {
	n := envInt("UNDERSTUDY_BENCH_KILLS", 10)
	c := newCluster(b, nil)
	w := c.startWriter()
	fmt.Printf("# failover kill bench: %d kills, TTL %s, renew every %s, load %s, %s\n", n, c.set.TTL, c.set.RenewEvery, load(), time.Now().UTC().Format(time.RFC3339))
	var took []time.Duration
	prim := "db"
	var faults []time.Time
	for i := 0; i < n; i++ {
		time.Sleep(3 * time.Second)
		killed := time.Now()
		faults = append(faults, killed)
		c.killServer(prim)
		d := c.waitFailover(w, other(prim), killed, 30*time.Second)
		took = append(took, d)
		fmt.Printf("kill %2d (%s): first acknowledged write on %s after %6.0f ms (load %s)\n", i+1, prim, other(prim), float64(d)/float64(time.Millisecond), load())
		cut(b, c.l, c.l.NetNS.CutCommand(index(prim), true))
		c.bootReadOnly(prim)
		if err := c.startAgent(prim); err != nil {
			b.Fatal(err)
		}
		c.waitRejoined(prim, 120*time.Second)
		prim = other(prim)
	}
	lost := c.checkLedger(w.finish(), prim, n, faults)
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	p50, mx := took[(len(took)+1)/2-1], took[len(took)-1]
	fmt.Printf("kill → first acknowledged write on the new primary: p50 %.0f ms, max %.0f ms over %d kills; %d acknowledged commits lost (async, inside the faults' windows)\n",
		float64(p50)/1e6, float64(mx)/1e6, n, lost)
	b.ReportMetric(float64(p50)/1e6, "p50-ms")
	b.ReportMetric(float64(mx)/1e6, "max-ms")
}

// BenchmarkNoFalseFailover runs pgbench on the primary for
// UNDERSTUDY_BENCH_SOAK (default 30m) with both cores saturated by CPU
// burners and the primary agent's etcd link slowed by 200 ms each way, and
// fails if anything failed over or fenced.
func BenchmarkNoFalseFailover(b *testing.B) {
	soak, err := time.ParseDuration(os.Getenv("UNDERSTUDY_BENCH_SOAK"))
	if err != nil || soak <= 0 {
		soak = 30 * time.Minute
	}
	c := newClusterDelay(b, nil, map[string]time.Duration{"db": 200 * time.Millisecond})
	w := c.startWriter()
	fmt.Printf("# failover soak: %s of pgbench on db, 2 CPU burners, db's etcd link +200 ms each way; load %s, %s\n", soak, load(), time.Now().UTC().Format(time.RFC3339))
	ctx, cancel := context.WithTimeout(context.Background(), soak+time.Minute)
	defer cancel()
	labtest.Tool(b, c.l, "db", "pgbench", "-i", "-q", "-s", "5")
	pgb, err := c.l.Tool(ctx, "db", "pgbench", "-c", "4", "-j", "2", "-T", strconv.Itoa(int(soak.Seconds())), "-n")
	if err != nil {
		b.Fatal(err)
	}
	if err := pgb.Start(); err != nil {
		b.Fatal(err)
	}
	var burners []*exec.Cmd
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), burnEnv+"=1")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		burners = append(burners, cmd)
	}
	defer func() {
		for _, cmd := range burners {
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
		}
	}()
	start := time.Now()
	var gapMax time.Duration
	for time.Since(start) < soak {
		time.Sleep(10 * time.Second)
		r, s := c.report("db"), c.report("db-replica")
		if !r.Holds || r.Counts.Fences > 0 || s.Counts.Promotions > 0 || s.Holds {
			b.Fatalf("a false failover at +%s: db %+v\ndb-replica %+v", time.Since(start).Round(time.Second), r, s)
		}
		fmt.Printf("+%4.0fs db holds the lease: %d renewals, %d failed; load %s\n", time.Since(start).Seconds(), r.Counts.Renewals, r.Counts.RenewFailures, load())
	}
	pgb.Wait()
	acks := w.finish()
	for i := 1; i < len(acks); i++ {
		gapMax = max(gapMax, acks[i].end.Sub(acks[i-1].end))
	}
	c.checkLedger(acks, "db", 0, nil)
	fmt.Printf("0 false failovers in %s; longest pause between two acknowledged app writes %.0f ms\n", soak, float64(gapMax)/1e6)
}
