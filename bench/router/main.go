// Command router is the bench for issue 17: the real app writers
// (internal/apptest: ActiveRecord + ruby-pg, node-postgres, psycopg2, pgx,
// as local processes) knowing one host, the router's, in a local lab with
// node agents and HAProxy, and
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
	"github.com/understudy-dev/understudy/internal/apptest"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/router"
)

func main() {
	n := flag.Int("n", 10, "switchovers (alternating)")
	gap := flag.Duration("gap", 2*time.Second, "time between role changes")
	tpsFor := flag.Duration("tps-duration", 20*time.Second, "each pgbench -S run (direct and through the router, twice each)")
	alarmFor := flag.Duration("alarm-duration", 10*time.Minute, "the no-false-alarm run (0: skip)")
	skipBlackhole := flag.Bool("skip-blackhole", false, "skip the black-holed primary (needs root for iptables)")
	flag.Parse()
	benchmain.Run(func(ctx context.Context) error {
		return run(ctx, *n, *gap, *tpsFor, *alarmFor, *skipBlackhole)
	})
}

// load is uptime's load average and, where the kernel has it, the share
// of the last minute some task waited for a CPU (/proc/pressure/cpu): on a
// shared machine, what the figures were taken under.
func load() string {
	b, _ := os.ReadFile("/proc/loadavg")
	out := strings.Join(strings.Fields(string(b))[:3], " ")
	if p, err := os.ReadFile("/proc/pressure/cpu"); err == nil {
		for _, f := range strings.Fields(strings.SplitN(string(p), "\n", 2)[0]) {
			if v, ok := strings.CutPrefix(f, "avg60="); ok {
				out += ", CPU pressure " + v + "%"
			}
		}
	}
	return out
}

func run(ctx context.Context, n int, gap, tpsFor, alarmFor time.Duration, skipBlackhole bool) error {
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
	// The agents run as they do on a server: processes of the understudy
	// binary, built here.
	exe := filepath.Join(root, "understudy")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", exe, "./cmd/understudy").CombinedOutput(); err != nil {
		return fmt.Errorf("building understudy (run the bench from the repository's root): %v: %s", err, out)
	}
	if err := l.StartNodeAgents(ctx, exe); err != nil {
		return err
	}
	if err := l.StartRouter(ctx); err != nil {
		return err
	}
	r := l.Router()

	// The app writers, as local processes, through the router.
	host, err := apptest.PrepareHost(ctx, filepath.Join(root, "host"), func(f string, a ...any) { fmt.Fprintf(os.Stderr, "# "+f+"\n", a...) })
	if err != nil {
		return err
	}
	settings := apptest.AppSettings(apptest.Endpoint{Host: "127.0.0.1", Port: r.Port})
	admin, err := l.Conn(ctx, "db")
	if err != nil {
		return err
	}
	err = apptest.Prepare(ctx, admin, settings)
	admin.Close(ctx)
	if err != nil {
		return err
	}
	runner := &apptest.ProcessRunner{Host: host, Dir: filepath.Join(root, "writers")}
	var procs []writer
	var missing []string
	for _, c := range apptest.Core {
		if why := host.Missing(c); why != "" {
			missing = append(missing, why)
			continue
		}
		w := apptest.Writer{Client: c, Settings: settings}
		p, err := runner.Start(ctx, w)
		if err != nil {
			return err
		}
		procs = append(procs, writer{w: w, p: p, started: time.Now()})
	}
	defer func() {
		for _, w := range procs {
			w.p.Stop(context.WithoutCancel(ctx))
		}
	}()
	fmt.Printf("# understudy router bench: PostgreSQL %d, HAProxy in front (%s), %d cores, %s\n",
		l.Cluster.Major, timing(), runtime.NumCPU(), time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("# app writers through the router, one INSERT every 50 ms each: %s\n", names(procs))
	for _, m := range missing {
		fmt.Printf("# not run: %s\n", m)
	}
	fmt.Printf("# load before: %s\n", load())
	if err := waitAcks(ctx, procs, time.Now(), 2*time.Minute); err != nil {
		return err
	}
	time.Sleep(gap)

	// Switchovers.
	var events []apptest.Event
	var outages []float64
	to := "db-replica"
	for i := 0; i < n; i++ {
		e := apptest.Event{Name: fmt.Sprintf("switchover %d", i+1), NewPrimary: to, Start: time.Now()}
		res, err := live.Switchover(ctx, l.Target(), to, live.RoleOptions{})
		e.End = time.Now()
		if err != nil {
			return fmt.Errorf("switchover %d to %s: %w", i+1, to, err)
		}
		events = append(events, e)
		outages = append(outages, float64(res.WriteOutage.Milliseconds()))
		if err := waitAcks(ctx, procs, e.End, time.Minute); err != nil {
			return fmt.Errorf("after switchover %d: %w", i+1, err)
		}
		time.Sleep(gap)
		to = map[string]string{"db": "db-replica", "db-replica": "db"}[to]
	}
	loadSwitch := load()

	// The primary black-holed, then an emergency promote.
	var holed time.Time
	var promoteTook time.Duration
	if !skipBlackhole {
		old := map[string]string{"db": "db-replica", "db-replica": "db"}[to]
		bh, err := blackhole(ctx, l, old)
		if err != nil {
			return err
		}
		defer bh.remove()
		holed = time.Now()
		time.Sleep(gap) // the primary's server is gone; the operator acts
		e := apptest.Event{Name: "promote", NewPrimary: to, Start: time.Now()}
		_, perr := live.Promote(ctx, l.Target(), to, live.RoleOptions{Fence: true})
		e.End = time.Now()
		promoteTook = e.End.Sub(e.Start)
		bh.remove()
		if perr != nil {
			return fmt.Errorf("promote %s: %w", to, perr)
		}
		events = append(events, e)
		if err := waitAcks(ctx, procs, e.End, time.Minute); err != nil {
			return fmt.Errorf("after the promote: %w", err)
		}
		time.Sleep(gap)
		if _, err := live.Rejoin(ctx, l.Target(), old, live.RoleOptions{}); err != nil {
			return fmt.Errorf("rejoin %s: %w", old, err)
		}
	}
	final := map[string]string{"db": "db-replica", "db-replica": "db"}[to] // the last switchover's
	if !skipBlackhole {
		final = to // promoted
	}
	var results []apptest.WriterResult
	for _, w := range procs {
		sr, _ := w.p.Stop(ctx)
		log, _ := w.p.Log(ctx, 0)
		results = append(results, apptest.WriterResult{Name: string(w.w.Client), Client: w.w.Client, Log: log, Stderr: w.p.Stderr(ctx),
			Started: w.started, Stopped: time.Now(), ExitedEarly: sr.ExitedEarly, Hung: sr.Hung, Exit: sr.Exit})
	}
	procs = nil
	fa, err := l.Conn(ctx, final)
	if err != nil {
		return err
	}
	rows, err := apptest.ReadRows(ctx, fa, settings)
	fa.Close(ctx)
	if err != nil {
		return err
	}
	rep := apptest.Verify(apptest.Input{Writers: results, Events: events, InitialPrimary: "db", Rows: rows})

	fmt.Printf("\nswitchovers: %d (understudy's own write outage, stop to promote: p50 %.0f ms, max %.0f ms); load %s\n", n, benchmain.Pct(outages, 50), benchmain.Pct(outages, 100), loadSwitch)
	fmt.Printf("  %-14s %18s %12s   (goal: p50 ≤ 300 ms, max ≤ 800 ms)\n", "client", "app-seen pause p50", "max")
	for _, wr := range rep.Writers {
		var ps []float64
		for _, p := range wr.Pauses {
			if strings.HasPrefix(p.Event, "switchover") {
				ps = append(ps, float64(p.Gap.Milliseconds()))
			}
		}
		fmt.Printf("  %-14s %15.0f ms %9.0f ms\n", wr.Name, benchmain.Pct(ps, 50), benchmain.Pct(ps, 100))
	}
	if !skipBlackhole {
		fmt.Printf("\nblack-holed primary (DROP on its ports from %s), %s later promote --fence (%d ms):\n", holed.Format("15:04:05.000"), gap, promoteTook.Milliseconds())
		fmt.Printf("  %-14s %s   (goal ≤ 500 ms)\n", "client", "first ack on the new primary after promote returned")
		for _, wr := range rep.Writers {
			for _, p := range wr.Pauses {
				if p.Event == "promote" {
					if p.NewPrimaryAck.IsZero() {
						fmt.Printf("  %-14s none\n", wr.Name)
					} else {
						fmt.Printf("  %-14s %d ms\n", wr.Name, p.NewPrimaryAckAfter.Milliseconds())
					}
				}
			}
		}
	}
	fmt.Printf("\nwrites: %d acknowledged; lost %d, acknowledged by a node that was not the primary %d, by two primaries at once %d; problems: %v\n",
		rep.Acknowledged, len(rep.Lost), len(rep.WrongNode), len(rep.Overlaps), rep.Problems())

	// The router's cost.
	if err := tps(ctx, l, final, r.Port, tpsFor, settings); err != nil {
		return fmt.Errorf("%w\n%s", err, health(l))
	}
	// No false alarms.
	if alarmFor > 0 {
		if err := noFalseAlarms(ctx, l, r, alarmFor, settings); err != nil {
			return err
		}
	}
	return nil
}

// writer is one running app writer.
type writer struct {
	w       apptest.Writer
	p       apptest.Proc
	started time.Time
}

func names(ws []writer) string {
	var n []string
	for _, w := range ws {
		n = append(n, string(w.w.Client))
	}
	return strings.Join(n, ", ")
}

// waitAcks waits until every writer has an acknowledged write that ended
// after since.
func waitAcks(ctx context.Context, ws []writer, since time.Time, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		behind := ""
		for _, w := range ws {
			log, _ := w.p.Log(ctx, 0)
			atts, _ := apptest.ParseLog(string(w.w.Client), log)
			ok := false
			for _, a := range atts {
				if a.OK && a.End >= since.UnixMilli() {
					ok = true
					break
				}
			}
			if !ok {
				behind += " " + string(w.w.Client)
			}
		}
		if behind == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no write acknowledged since %s by:%s", since.Format("15:04:05.000"), behind)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func timing() string {
	t := router.DefaultTiming
	return fmt.Sprintf("checks every %s, %s after a failure, fall %d rise %d, timeout %s; agents observe every %s",
		t.Inter, t.FastInter, t.Fall, t.Rise, t.CheckTimeout, agent.DefaultInterval)
}

// pgbench runs pgbench against 127.0.0.1:port as the app and returns its
// output; the password reaches it in the environment.
func pgbench(ctx context.Context, l *lab.Lab, port int, s apptest.Settings, args ...string) (string, error) {
	fmt.Fprintf(os.Stderr, "# %s pgbench -p %d %s\n", time.Now().Format("15:04:05.000"), port, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(l.Bin, "pgbench"), append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", s.User, s.Database}, args...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+s.Password)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// tps compares pgbench -S through the router with the primary directly,
// alternating two runs of each.
func tps(ctx context.Context, l *lab.Lab, primary string, routerPort int, d time.Duration, s apptest.Settings) error {
	n, _ := l.Cluster.Node(primary)
	if out, err := pgbench(ctx, l, n.Port, s, "-i", "-q", "-s", "10"); err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	// A warm-up, not counted: after pgbench -i, the first run pays for the
	// cache and the checkpoint.
	if out, err := pgbench(ctx, l, n.Port, s, "-n", "-S", "-c", "4", "-j", "2", "-T", "5"); err != nil {
		return fmt.Errorf("pgbench -S (warm-up): %v: %s", err, out)
	}
	const rounds = 4
	runs := map[string][]float64{}
	for i := 0; i < rounds; i++ {
		order := []struct {
			name string
			port int
		}{{"direct", n.Port}, {"router", routerPort}}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, t := range order {
			out, err := pgbench(ctx, l, t.port, s, "-n", "-S", "-c", "4", "-j", "2", "-T", strconv.Itoa(int(d.Seconds())))
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
	list := func(v []float64) string {
		var p []string
		for _, x := range v {
			p = append(p, fmt.Sprintf("%.0f", x))
		}
		return strings.Join(p, ", ")
	}
	md, mr := benchmain.Pct(runs["direct"], 50), benchmain.Pct(runs["router"], 50)
	fmt.Printf("\npgbench -S -c 4 -j 2, %s each, %d rounds alternating: direct median %.0f tps (%s), through the router median %.0f tps (%s): %.2f× (goal ≥ 0.9×); load %s\n",
		d, rounds, md, list(runs["direct"]), mr, list(runs["router"]), mr/md, load())
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
func noFalseAlarms(ctx context.Context, l *lab.Lab, r *lab.LabRouter, d time.Duration, s apptest.Settings) error {
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
	out, err := pgbench(ctx, l, r.Port, s, "-n", "-c", "8", "-j", "2", "-T", strconv.Itoa(int(d.Seconds())), "-P", "60")
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
	for _, svc := range []string{"router", "agent-db", "agent-db-replica", "db", "db-replica"} {
		data, _ := os.ReadFile(l.ServiceLog(svc))
		var keep []string
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "DOWN") || strings.Contains(line, "is UP") || strings.Contains(line, "failed") || strings.Contains(line, "PostgreSQL is") ||
				strings.Contains(line, "FATAL") || strings.Contains(line, "terminat") || strings.Contains(line, "LOG:  ") || strings.Contains(line, "slow") {
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
