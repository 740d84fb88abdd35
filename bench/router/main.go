// Command router is the bench for issue 17: app writers that know one
// host (the router's) in a local lab with node agents and HAProxy, and
//
//   - the app-seen write pause during N switchovers back and forth (p50
//     and max per client);
//   - the primary's ports black-holed (iptables DROP on loopback, both
//     directions, removed at the end whatever happens) and an emergency
//     promote: each client's first acknowledged write on the new primary,
//     measured from when promote returned;
//   - pgbench select-only TPS through the router against direct;
//   - no false alarms: pgbench on the primary through the router with both
//     cores saturated by busy processes, counting sessions cut and flaps.
//
// Every run checks 0 acknowledged rows lost and 0 writes acknowledged by a
// node outside its time as the primary. Run it with scripts/bench-router.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/bench/benchmain"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/internal/pgxwriter"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/router"
)

func main() {
	n := flag.Int("n", 10, "switchovers (alternating)")
	clients := flag.Int("clients", 3, "app writers (pgx), each inserting every 50 ms through the router")
	gap := flag.Duration("gap", 2*time.Second, "time between role changes")
	tpsFor := flag.Duration("tps-duration", 20*time.Second, "each pgbench -S run (direct and through the router, twice each)")
	alarmFor := flag.Duration("alarm-duration", 10*time.Minute, "the no-false-alarm run (0: skip)")
	skipBlackhole := flag.Bool("skip-blackhole", false, "skip the black-holed primary (needs root for iptables)")
	flag.Parse()
	benchmain.Run(func(ctx context.Context) error {
		return run(ctx, *n, *clients, *gap, *tpsFor, *alarmFor, *skipBlackhole)
	})
}

func load() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

const appPassword = "bench-app-password"

func run(ctx context.Context, n, clients int, gap, tpsFor, alarmFor time.Duration, skipBlackhole bool) error {
	if _, err := lab.FindHAProxy(); err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "understudy-bench-")
	if err != nil {
		return err
	}
	os.Chmod(root, 0o755)
	defer os.RemoveAll(root)
	ports, err := netutil.FreePorts(2)
	if err != nil {
		return err
	}
	l, err := lab.Create(ctx, filepath.Join(root, "lab"), lab.Config{Names: []string{"db", "db-replica"}, Ports: ports,
		Password: fmt.Sprint("bench-", time.Now().UnixNano()), Agents: true, MonitorPassword: "bench-monitor", Router: true})
	if err != nil {
		return err
	}
	defer l.Down(context.WithoutCancel(ctx))
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true}); err != nil {
		return err
	}
	agentCtx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	for _, nd := range l.Cluster.Nodes {
		logf, _ := os.OpenFile(l.ServiceLog("agent-"+nd.Name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		cfg, err := l.NodeAgentConfig(nd.Name, logf)
		if err != nil {
			return err
		}
		ln, err := agent.Listen(nd.Agent())
		if err != nil {
			return err
		}
		go agent.New(cfg).Run(agentCtx, ln)
	}
	if err := l.StartRouter(ctx); err != nil {
		return err
	}
	r := l.Router()
	c, err := l.Conn(ctx, "db")
	if err != nil {
		return err
	}
	_, err = c.Exec(ctx, "CREATE ROLE app LOGIN PASSWORD '"+appPassword+"'; "+pgxwriter.CreateSQL+"; GRANT ALL ON "+pgxwriter.Table+" TO app")
	c.Close(ctx)
	if err != nil {
		return err
	}
	addr := func(node string) string {
		nd, _ := l.Cluster.Node(node)
		return fmt.Sprintf("127.0.0.1:%d", nd.Port)
	}
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=postgres target_session_attrs=read-write connect_timeout=2", r.Port, appPassword)
	fmt.Printf("# understudy router bench: PostgreSQL %d, HAProxy in front (%s), %d pgx writers every 50 ms through it, %d cores, %s\n",
		l.Cluster.Major, timing(), clients, runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("# load before: %s\n", load())

	var ws []*pgxwriter.Writer
	for i := 0; i < clients; i++ {
		ws = append(ws, pgxwriter.Start(ctx, fmt.Sprintf("pgx-%d", i), conn, 50*time.Millisecond, 5*time.Second))
	}
	stopWriters := func() [][]pgxwriter.Attempt {
		var logs [][]pgxwriter.Attempt
		for _, w := range ws {
			w.Stop()
			logs = append(logs, w.Log())
		}
		return logs
	}
	defer stopWriters()
	time.Sleep(gap)

	// Switchovers.
	pauses := make([][]float64, clients)
	var outages []float64
	primaries := []string{addr("db")}
	var changes []pgxwriter.Change
	to := "db-replica"
	for i := 0; i < n; i++ {
		from := time.Now()
		res, err := live.Switchover(ctx, l.Target(), to, live.RoleOptions{})
		if err != nil {
			return fmt.Errorf("switchover %d to %s: %w", i+1, to, err)
		}
		changes = append(changes, pgxwriter.Change{From: from, To: time.Now()})
		primaries = append(primaries, addr(to))
		outages = append(outages, float64(res.WriteOutage.Milliseconds()))
		time.Sleep(gap)
		for k, w := range ws {
			pauses[k] = append(pauses[k], float64(pgxwriter.LongestPause(w.Log(), from, time.Now()).Milliseconds()))
		}
		to = map[string]string{"db": "db-replica", "db-replica": "db"}[to]
	}
	fmt.Printf("\nswitchovers: %d (understudy's own write outage, stop to promote: p50 %.0f ms, max %.0f ms)\n", n, benchmain.Pct(outages, 50), benchmain.Pct(outages, 100))
	fmt.Printf("  %-8s %18s %18s   (goal: p50 ≤ 300 ms, max ≤ 800 ms)\n", "client", "app-seen pause p50", "max")
	for k, w := range ws {
		fmt.Printf("  %-8s %15.0f ms %15.0f ms\n", w.Name, benchmain.Pct(pauses[k], 50), benchmain.Pct(pauses[k], 100))
	}
	fmt.Printf("  load: %s\n", load())

	// The primary black-holed, then an emergency promote.
	if !skipBlackhole {
		old := map[string]string{"db": "db-replica", "db-replica": "db"}[to]
		bh, err := blackhole(ctx, l, old)
		if err != nil {
			return err
		}
		defer bh.remove()
		holed := time.Now()
		time.Sleep(gap) // the primary's server is gone; the operator acts
		from := time.Now()
		_, perr := live.Promote(ctx, l.Target(), to, live.RoleOptions{Fence: true})
		returned := time.Now()
		bh.remove()
		if perr != nil {
			return fmt.Errorf("promote %s: %w", to, perr)
		}
		changes = append(changes, pgxwriter.Change{From: from, To: returned})
		primaries = append(primaries, addr(to))
		time.Sleep(gap)
		fmt.Printf("\nblack-holed primary %s (DROP on its ports from %s), promote %s --fence (returned after %d ms):\n", old, holed.Format("15:04:05.000"), to, returned.Sub(from).Milliseconds())
		fmt.Printf("  %-8s %s   (goal ≤ 500 ms)\n", "client", "first ack on the new primary after promote returned")
		for _, w := range ws {
			if a, ok := pgxwriter.FirstAckAfter(w.Log(), returned); ok && a.Node == addr(to) {
				fmt.Printf("  %-8s %d ms\n", w.Name, a.End.Sub(returned).Milliseconds())
			} else {
				fmt.Printf("  %-8s none\n", w.Name)
			}
		}
		// Back: rejoin the old primary, switch back.
		if _, err := live.Rejoin(ctx, l.Target(), old, live.RoleOptions{}); err != nil {
			return fmt.Errorf("rejoin %s: %w", old, err)
		}
		fmt.Printf("  load: %s\n", load())
	}
	logs := stopWriters()
	ws = nil
	final := primaries[len(primaries)-1]
	finalNode := "db"
	if final == addr("db-replica") {
		finalNode = "db-replica"
	}
	fn, _ := l.Cluster.Node(finalNode)
	lost, err := pgxwriter.Lost(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", filepath.Join(l.Dir, "sock", finalNode), fn.Port), logs...)
	if err != nil {
		return err
	}
	acked := 0
	for _, lg := range logs {
		acked += len(pgxwriter.Acked(lg))
	}
	wrong := pgxwriter.WrongNode(primaries, changes, logs...)
	inter, _ := pgxwriter.Interleaved(primaries, logs...)
	fmt.Printf("\nwrites: %d acknowledged, %d missing from the final primary %s, %d acknowledged by a node that was not the primary, writes to two nodes in turns: %v\n",
		acked, len(lost), finalNode, len(wrong), inter)

	// The router's cost.
	if err := tps(ctx, l, finalNode, r.Port, tpsFor); err != nil {
		return fmt.Errorf("%w\n%s", err, health(l))
	}
	// No false alarms.
	if alarmFor > 0 {
		if err := noFalseAlarms(ctx, l, finalNode, r, alarmFor); err != nil {
			return err
		}
	}
	return nil
}

func timing() string {
	t := router.DefaultTiming
	return fmt.Sprintf("checks every %s, %s after a failure, fall %d rise %d, timeout %s; agents observe every %s",
		t.Inter, t.FastInter, t.Fall, t.Rise, t.CheckTimeout, agent.DefaultInterval)
}

// pgbench runs pgbench against host:port as app and returns its output.
func pgbench(ctx context.Context, l *lab.Lab, port int, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(l.Bin, "pgbench"), append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "app", "postgres"}, args...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+appPassword)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// tps compares pgbench -S through the router with the primary directly,
// alternating two runs of each.
func tps(ctx context.Context, l *lab.Lab, primary string, routerPort int, d time.Duration) error {
	c, err := l.Conn(ctx, primary)
	if err != nil {
		return err
	}
	_, err = c.Exec(ctx, "GRANT CREATE ON SCHEMA public TO app")
	c.Close(ctx)
	if err != nil {
		return err
	}
	n, _ := l.Cluster.Node(primary)
	if out, err := pgbench(ctx, l, n.Port, "-i", "-q", "-s", "10"); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	runs := map[string][]float64{}
	for i := 0; i < 2; i++ {
		for _, t := range []struct {
			name string
			port int
		}{{"direct", n.Port}, {"router", routerPort}} {
			out, err := pgbench(ctx, l, t.port, "-n", "-S", "-c", "4", "-j", "2", "-T", strconv.Itoa(int(d.Seconds())))
			if err != nil {
				return fmt.Errorf("pgbench -S (%s): %v: %s", t.name, err, out)
			}
			m := tpsRE.FindStringSubmatch(out)
			if m == nil {
				return fmt.Errorf("pgbench -S (%s): no tps in %q", t.name, out)
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			runs[t.name] = append(runs[t.name], v)
		}
	}
	avg := func(v []float64) float64 { return (v[0] + v[1]) / 2 }
	fmt.Printf("\npgbench -S -c 4 -j 2, %s each, twice, alternating: direct %.0f tps (%.0f, %.0f), through the router %.0f tps (%.0f, %.0f): %.2f× (goal ≥ 0.9×); load %s\n",
		d, avg(runs["direct"]), runs["direct"][0], runs["direct"][1], avg(runs["router"]), runs["router"][0], runs["router"][1], avg(runs["router"])/avg(runs["direct"]), load())
	return nil
}

// metric reads one HAProxy counter summed over the rw and ro backends'
// servers.
func metric(r *lab.LabRouter, name string) (float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", r.StatsPort))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") && (strings.Contains(line, router.WriteBackend) || strings.Contains(line, router.ReadBackend)) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum, nil
}

// noFalseAlarms runs pgbench through the router on a healthy primary while
// busy processes saturate every core, and counts what a false alarm would
// show: servers marked down (HAProxy's up-down transitions), pgbench
// clients that lost their session.
func noFalseAlarms(ctx context.Context, l *lab.Lab, primary string, r *lab.LabRouter, d time.Duration) error {
	c, err := l.Conn(ctx, primary)
	if err != nil {
		return err
	}
	_, err = c.Exec(ctx, "GRANT ALL ON ALL TABLES IN SCHEMA public TO app")
	c.Close(ctx)
	if err != nil {
		return err
	}
	flapsBefore, err := metric(r, "haproxy_server_check_up_down_total")
	if err != nil {
		return err
	}
	failsBefore, _ := metric(r, "haproxy_server_check_failures_total")
	var burners []*exec.Cmd
	for i := 0; i < 2*runtime.NumCPU(); i++ {
		b := exec.CommandContext(ctx, "sh", "-c", "while :; do :; done")
		if err := b.Start(); err != nil {
			return err
		}
		burners = append(burners, b)
	}
	defer func() {
		for _, b := range burners {
			b.Process.Kill()
			b.Wait()
		}
	}()
	start := time.Now()
	out, err := pgbench(ctx, l, r.Port, "-n", "-c", "8", "-j", "2", "-T", strconv.Itoa(int(d.Seconds())), "-P", "60")
	loadEnd := load()
	flapsAfter, _ := metric(r, "haproxy_server_check_up_down_total")
	failsAfter, _ := metric(r, "haproxy_server_check_failures_total")
	aborted := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out)
	clients := regexp.MustCompile(`number of clients: (\d+)`).FindStringSubmatch(out)
	tpsM := tpsRE.FindStringSubmatch(out)
	cut := "0"
	if err != nil {
		cut = "pgbench ended with an error (a session was cut?): " + lastLine(out)
	}
	fmt.Printf("\nno false alarms: pgbench -c 8 through the router for %s with %d busy processes on %d cores (load at the end %s):\n",
		time.Since(start).Round(time.Second), 2*runtime.NumCPU(), runtime.NumCPU(), loadEnd)
	fmt.Printf("  sessions cut: %s; flaps (servers marked up/down): %.0f; failed checks: %.0f; failed transactions: %s of clients %s; %s tps\n",
		cut, flapsAfter-flapsBefore, failsAfter-failsBefore, first(aborted), first(clients), first(tpsM))
	if err != nil || flapsAfter > flapsBefore {
		fmt.Print(health(l))
	}
	return nil
}

func first(m []string) string {
	if len(m) < 2 {
		return "?"
	}
	return m[1]
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// health is what the router and the agents logged about health changes,
// for a run that failed.
func health(l *lab.Lab) string {
	var b strings.Builder
	for _, svc := range []string{"router", "agent-db", "agent-db-replica"} {
		data, _ := os.ReadFile(l.ServiceLog(svc))
		var keep []string
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "DOWN") || strings.Contains(line, "is UP") || strings.Contains(line, "failed") || strings.Contains(line, "PostgreSQL is") {
				keep = append(keep, line)
			}
		}
		if len(keep) > 30 {
			keep = keep[len(keep)-30:]
		}
		fmt.Fprintf(&b, "--- %s:\n%s\n", svc, strings.Join(keep, "\n"))
	}
	return b.String()
}

// hole is a set of iptables rules to remove.
type hole struct{ rules [][]string }

// blackhole drops every packet to and from a node's PostgreSQL and agent
// ports on loopback, as a vanished server would.
func blackhole(ctx context.Context, l *lab.Lab, node string) (*hole, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the black-holed primary needs root (iptables); run as root or pass --skip-blackhole")
	}
	nd, _ := l.Cluster.Node(node)
	tag := fmt.Sprintf("understudy-bench-%d", os.Getpid())
	h := &hole{}
	for _, port := range []int{nd.Port, nd.AgentPort} {
		for _, dir := range []string{"--dport", "--sport"} {
			rule := []string{"INPUT", "-i", "lo", "-p", "tcp", dir, strconv.Itoa(port), "-m", "comment", "--comment", tag, "-j", "DROP"}
			if out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-I"}, rule...)...).CombinedOutput(); err != nil {
				h.remove()
				return nil, fmt.Errorf("iptables: %v: %s", err, out)
			}
			h.rules = append(h.rules, rule)
		}
	}
	return h, nil
}

func (h *hole) remove() {
	for _, r := range h.rules {
		exec.Command("iptables", append([]string{"-w", "-D"}, r...)...).Run()
	}
	h.rules = nil
}
