// Command failover is the failover bench (scripts/bench-failover). Today it
// measures what --synchronous costs: pgbench's commit latency and TPS on a
// lab primary with synchronous_standby_names = 'ANY 1 (standby)' against
// asynchronous replication, alternating rounds so both see the same
// machine. The kill bench (time from the primary's death to the first
// acknowledged app write through the router) comes with the agent's
// failover loop.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/understudy-dev/understudy/bench/benchmain"
	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
)

func main() {
	rounds := flag.Int("rounds", 3, "rounds of each mode")
	seconds := flag.Int("seconds", 15, "pgbench run per round")
	clients := flag.Int("clients", 4, "pgbench clients")
	flag.Parse()
	benchmain.Run(func(ctx context.Context) error { return syncCost(ctx, *rounds, *seconds, *clients) })
}

var (
	latRe = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
	tpsRe = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
)

func syncCost(ctx context.Context, rounds, seconds, clients int) error {
	l, done, err := benchmain.Lab(ctx, "")
	if err != nil {
		return err
	}
	defer done()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true}); err != nil {
		return err
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("# understudy --synchronous cost: PostgreSQL %d, lab on loopback, pgbench -N -c %d -T %d, %d rounds each, %s, load %s",
		l.Cluster.Major, clients, seconds, rounds, time.Now().UTC().Format(time.RFC3339), load)
	if out, err := tool(ctx, l, "pgbench", "-i", "-q", "-s", "5"); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	modes := []struct{ name, names string }{{"async", ""}, {"sync", failover.SyncStandbyNames([]string{"db-replica"})}}
	lat := map[string][]float64{}
	tps := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, m := range modes {
			if err := setSync(ctx, l, m.names); err != nil {
				return err
			}
			out, err := tool(ctx, l, "pgbench", "-N", "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(seconds))
			if err != nil {
				return fmt.Errorf("pgbench: %v: %s", err, out)
			}
			lm, tm := latRe.FindStringSubmatch(out), tpsRe.FindStringSubmatch(out)
			if lm == nil || tm == nil {
				return fmt.Errorf("pgbench printed no latency/tps: %s", out)
			}
			lv, _ := strconv.ParseFloat(lm[1], 64)
			tv, _ := strconv.ParseFloat(tm[1], 64)
			lat[m.name], tps[m.name] = append(lat[m.name], lv), append(tps[m.name], tv)
			fmt.Printf("round %d %-5s latency %.3f ms  tps %.0f\n", r+1, m.name, lv, tv)
		}
	}
	a, s := benchmain.Pct(lat["async"], 50), benchmain.Pct(lat["sync"], 50)
	fmt.Printf("median commit latency: async %.3f ms, sync %.3f ms (+%.3f ms, x%.2f); median tps: async %.0f, sync %.0f\n",
		a, s, s-a, s/a, benchmain.Pct(tps["async"], 50), benchmain.Pct(tps["sync"], 50))
	return setSync(ctx, l, "")
}

func tool(ctx context.Context, l *lab.Lab, program string, args ...string) (string, error) {
	cmd, err := l.Tool(ctx, "db", program, args...)
	if err != nil {
		return "", err
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func setSync(ctx context.Context, l *lab.Lab, names string) error {
	c, err := l.Conn(ctx, "db")
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quote(names)); err != nil {
		return err
	}
	_, err = c.Exec(ctx, "SELECT pg_reload_conf()")
	time.Sleep(300 * time.Millisecond)
	return err
}

func quote(s string) string { return "'" + regexp.MustCompile(`'`).ReplaceAllString(s, "''") + "'" }
