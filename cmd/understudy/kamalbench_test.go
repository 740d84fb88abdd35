package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/bench/benchmain"
	"github.com/understudy-dev/understudy/internal/ledger"
	"github.com/understudy-dev/understudy/live"
)

var benchSwitchovers = flag.Int("switchovers", 10, "BenchmarkKamalSwitchover: switchovers to run")

// BenchmarkKamalSwitchover is the real-Docker switchover bench
// (scripts/bench-switchover-docker): the same Kamal world as the tests,
// clients that record every acknowledged commit writing through the
// published ports with target_session_attrs=read-write, as an app does,
// and N switchovers back and forth through the code the CLI runs. It
// prints the write pause the clients saw (p50, p95, max), the server-side
// pause, and the commits lost. The figures are printed, not asserted.
func BenchmarkKamalSwitchover(b *testing.B) {
	w := newKamalWorld(b, worldOptions{})
	if out, code := runCLI(b, "apply", "--app", w.app); code != 0 {
		b.Fatalf("apply: exit %d\n%s", code, out)
	}
	ctx := context.Background()
	app := fmt.Sprintf("postgres://%s:%s@%s:5432,%s:5432/postgres?target_session_attrs=read-write&connect_timeout=2&sslmode=disable",
		dbUser, dbPassword, w.addr["db"], w.addr["db-replica"])
	if err := ledger.Prepare(ctx, app); err != nil {
		b.Fatal(err)
	}
	tg, err := openKamal(ctx, w.app, "config/deploy.yml", "", 0)
	if err != nil {
		b.Fatal(err)
	}
	defer tg.close()
	load := ledger.Start(ctx, app, 4)
	time.Sleep(2 * time.Second)
	var seen, server []float64
	to := "db-replica"
	fmt.Printf("# real-Docker switchover bench: %d switchovers, 4 ledger clients, %s\n", *benchSwitchovers, time.Now().UTC().Format(time.RFC3339))
	for i := 0; i < *benchSwitchovers; i++ {
		o := live.RoleOptions{}
		if os.Getenv("BENCH_TRACE") != "" {
			o.Out = os.Stdout
		}
		begin := time.Now()
		res, err := live.Switchover(ctx, tg.Target, to, o)
		end := time.Now()
		if err != nil {
			load.Stop()
			b.Fatalf("switchover %d to %s: %v", i+1, to, err)
		}
		time.Sleep(2 * time.Second)
		gap := load.LongestGap(begin, end)
		seen = append(seen, msOf(gap))
		server = append(server, msOf(res.WriteOutage))
		fmt.Printf("switchover %2d → %-10s client-seen write pause %6.1f ms (server side: stop to promoted %6.1f ms; whole command %6.0f ms)\n",
			i+1, to, msOf(gap), msOf(res.WriteOutage), msOf(end.Sub(begin)))
		if to == "db" {
			to = "db-replica"
		} else {
			to = "db"
		}
	}
	load.Stop()
	acked, failed := load.Acked()
	lost, err := load.Lost(ctx, app)
	if err != nil {
		b.Fatal(err)
	}
	sort.Float64s(seen)
	sort.Float64s(server)
	fmt.Printf("\nclient-seen write pause: p50 %.1f ms, p95 %.1f ms, max %.1f ms (goal p50 <= 400, max <= 800)\n", benchmain.Pct(seen, 50), benchmain.Pct(seen, 95), seen[len(seen)-1])
	fmt.Printf("server-side pause (stop → promoted): p50 %.1f ms, max %.1f ms\n", benchmain.Pct(server, 50), server[len(server)-1])
	fmt.Printf("acknowledged commits: %d; lost: %d (goal 0); failed attempts during switchovers: %d\n", acked, lost, failed)
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
