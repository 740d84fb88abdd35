package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/pgxwriter"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
)

// upFailoverLab runs `understudy lab up --failover` as a user does (the
// built binary: the agents, their watchdogs and the witness are its
// background processes) and takes the lab down when the test ends.
func upFailoverLab(t testing.TB, extra ...string) (*lab.Lab, string) {
	t.Helper()
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err.Error())
	}
	if _, err := lab.FindHAProxy(); err != nil {
		t.Skip(err.Error())
	}
	bin := buildCLI(t)
	root, err := os.MkdirTemp("", "understudy-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755) // the servers run as postgres
	dir := filepath.Join(root, "lab")
	t.Cleanup(func() {
		if l, err := lab.Open(dir); err == nil {
			if t.Failed() {
				for _, f := range []string{"agent-db.log", "agent-db-replica.log", "witness.log", "db.log", "db-replica.log"} {
					b, _ := os.ReadFile(filepath.Join(dir, f))
					s := string(b)
					if len(s) > 4000 {
						s = s[len(s)-4000:]
					}
					t.Logf("--- %s:\n%s", f, s)
				}
			}
			if err := l.Down(context.Background()); err != nil {
				t.Errorf("lab down: %v", err)
			}
		}
		os.RemoveAll(root)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"lab", "up", "--failover", "--dir", dir}, extra...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lab up --failover: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "db holds the leader lease") {
		t.Fatalf("lab up --failover does not say who holds the lease:\n%s", out)
	}
	l, err := lab.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l, bin
}

// killServer ends every process of a node's "server" at once, as a power
// loss would (lab.KillServer).
func killServer(t testing.TB, l *lab.Lab, node string) time.Time {
	t.Helper()
	at := time.Now()
	pids, err := l.KillServer(node)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s's server: pids %v", node, pids)
	return at
}

// TestLabFailover: `lab up --failover`, an app writer through the router,
// the primary's whole server killed. The standby takes the lease and the
// app's writes by itself; never two writable nodes; the old primary,
// started again, comes up read-only and follows the new one (it never
// takes writes without the lease); every acknowledged write is on the new
// primary or was written in the last moment before the kill (async).
func TestLabFailover(t *testing.T) {
	l, bin := upFailoverLab(t)
	labtest.Exec(t, l, "db", "CREATE ROLE app LOGIN PASSWORD 'app-secret'", pgxwriter.CreateSQL, "GRANT ALL ON "+pgxwriter.Table+" TO app")
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=app password=app-secret dbname=postgres target_session_attrs=read-write connect_timeout=2", l.Router().Port)
	w := pgxwriter.Start(context.Background(), "pgx", conn, 50*time.Millisecond, 5*time.Second)
	defer w.Stop()
	stopWatch := labtest.WatchWritable(t, l)
	labtest.WaitFor(t, 15*time.Second, "the writer's first write through the router", func() bool {
		_, ok := pgxwriter.FirstAckAfter(w.Log(), time.Time{})
		return ok
	})
	time.Sleep(time.Second)

	killed := killServer(t, l, "db")
	var first pgxwriter.Attempt
	labtest.WaitFor(t, 30*time.Second, "a write acknowledged by db-replica through the router", func() bool {
		for _, a := range pgxwriter.Acked(w.Log()) {
			if a.Node == nodeAddr(l, "db-replica") && a.End.After(killed) {
				first = a
				return true
			}
		}
		return false
	})
	t.Logf("from the kill to the first write acknowledged by db-replica through the router: %d ms", first.End.Sub(killed).Milliseconds())

	// The old primary's server comes back: PostgreSQL first (the boot
	// script starts it read-only), then its agent, which rejoins it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := l.Start(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 60*time.Second, "db to answer", func() bool {
		c, err := l.Conn(ctx, "db")
		if err != nil {
			return false
		}
		c.Close(ctx)
		return true
	})
	if got := labtest.Query(t, l, "db", "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("the old primary came back writable without the lease (pg_is_in_recovery %s)", got)
	}
	if err := l.StartNodeAgents(ctx, bin); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 90*time.Second, "db to rejoin as db-replica's standby", func() bool {
		return labtest.Query(t, l, "db-replica", "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = 'db' AND state = 'streaming'") == "1"
	})
	if got := labtest.Query(t, l, "db", "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("the old primary is writable after rejoining (pg_is_in_recovery %s)", got)
	}
	after := time.Now()
	time.Sleep(time.Second)
	w.Stop()
	rounds := stopWatch()

	log := w.Log()
	for _, a := range pgxwriter.Acked(log) {
		if a.Node == nodeAddr(l, "db") && a.Start.After(killed) {
			t.Errorf("db acknowledged a write begun after it was killed: %+v", a)
		}
		if a.Node == nodeAddr(l, "db-replica") && a.Start.Before(killed) {
			t.Errorf("db-replica acknowledged a write begun before the kill: %+v", a)
		}
	}
	if len(pgxwriter.Acked(log)) == 0 || pgxwriter.LongestPause(log, after, time.Now()) > 2*time.Second {
		t.Errorf("the writer did not keep writing after the failover")
	}
	if bad, runs := pgxwriter.Interleaved([]string{nodeAddr(l, "db"), nodeAddr(l, "db-replica")}, log); bad {
		t.Errorf("writes went to two nodes in turns: %+v", runs)
	}
	n, _ := l.Cluster.Node("db-replica")
	lost, err := pgxwriter.Lost(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", filepath.Join(l.Dir, "sock", "db-replica"), n.Port), log)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range lost {
		if killed.Sub(a.End) > 2*time.Second {
			t.Errorf("an acknowledged write from %s, well before the kill, is missing from db-replica: %+v", a.End.Format("15:04:05.000"), a)
		}
	}
	t.Logf("%d acknowledged writes, %d lost (async: the last ones before the kill); %d rounds of the two-writable-nodes watch", len(pgxwriter.Acked(log)), len(lost), rounds)
}

// TestLabFailoverSwitchover: with failover on, a switchover is a lease
// handover (its plan hands the lease over instead of promoting), there
// and back, under an app writer through the router: no acknowledged
// write lost, never two writable nodes, the lease with the new primary.
func TestLabFailoverSwitchover(t *testing.T) {
	l, bin := upFailoverLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli := func(args ...string) string {
		out, err := exec.CommandContext(ctx, bin, append(args, "--lab", l.Dir)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// Paused, a switchover is refused (its promotion goes through the
	// agents, which do not promote while paused), and status says so.
	cli("failover", "pause")
	// Each member up; whichever leads etcd is marked "(etcd leader)".
	members := regexp.MustCompile(`etcd members: db up( \(etcd leader\))?, db-replica up( \(etcd leader\))?, witness up( \(etcd leader\))?\n`)
	if out := cli("failover", "status"); !strings.Contains(out, "PAUSED") || !strings.Contains(out, "lease: held by db") || !members.MatchString(out) || strings.Count(out, "(etcd leader)") != 1 {
		t.Errorf("failover status while paused:\n%s", out)
	}
	if _, err := live.PlanSwitchover(ctx, l.Target(), "db-replica", live.RoleOptions{}); err == nil || !strings.Contains(err.Error(), "failover is paused") {
		t.Errorf("a switchover while paused: %v", err)
	}
	cli("failover", "resume")
	labtest.Exec(t, l, "db", "CREATE ROLE app LOGIN PASSWORD 'app-secret'", pgxwriter.CreateSQL, "GRANT ALL ON "+pgxwriter.Table+" TO app")
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=app password=app-secret dbname=postgres target_session_attrs=read-write connect_timeout=2", l.Router().Port)
	w := pgxwriter.Start(context.Background(), "pgx", conn, 50*time.Millisecond, 5*time.Second)
	defer w.Stop()
	stopWatch := labtest.WatchWritable(t, l)
	labtest.WaitFor(t, 15*time.Second, "the writer's first write through the router", func() bool {
		_, ok := pgxwriter.FirstAckAfter(w.Log(), time.Time{})
		return ok
	})
	p, err := live.PlanSwitchover(ctx, l.Target(), "db-replica", live.RoleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, s := range p.Steps {
		kinds = append(kinds, string(s.Kind))
	}
	if k := strings.Join(kinds, ","); !strings.Contains(k, "stop-primary,prove-wal,hand-over,await-promoted") || strings.Contains(k, ",promote,") {
		t.Fatalf("the switchover's plan does not go through the lease: %s", k)
	}
	var changes []pgxwriter.Change
	for _, to := range []string{"db-replica", "db"} {
		var out strings.Builder
		from := time.Now()
		if _, err := live.Switchover(ctx, l.Target(), to, live.RoleOptions{Out: &out}); err != nil {
			t.Fatalf("switchover to %s: %v\n%s", to, err, out.String())
		}
		changes = append(changes, pgxwriter.Change{From: from, To: time.Now()})
		lr, err := l.Lease().ReadLease(ctx)
		if err != nil || lr.Holder != to {
			t.Fatalf("after the switchover to %s the lease is %+v (%v)\n%s", to, lr, err, out.String())
		}
		labtest.WaitFor(t, 15*time.Second, "a write acknowledged by "+to, func() bool {
			for _, a := range pgxwriter.Acked(w.Log()) {
				if a.Node == nodeAddr(l, to) && a.Start.After(from) {
					return true
				}
			}
			return false
		})
		t.Logf("switchover to %s: writes paused %d ms\n%s", to, pgxwriter.LongestPause(w.Log(), from, time.Now()).Milliseconds(), out.String())
	}
	w.Stop()
	stopWatch()
	log := w.Log()
	nodes := []string{nodeAddr(l, "db"), nodeAddr(l, "db-replica"), nodeAddr(l, "db")}
	if wrong := pgxwriter.WrongNode(nodes, changes, log); len(wrong) > 0 {
		t.Errorf("%d writes acknowledged by a node that was not the primary, e.g. %+v", len(wrong), wrong[0])
	}
	if bad, runs := pgxwriter.Interleaved(nodes, log); bad {
		t.Errorf("writes went to two nodes in turns: %+v", runs)
	}
	n, _ := l.Cluster.Node("db")
	lost, err := pgxwriter.Lost(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", filepath.Join(l.Dir, "sock", "db"), n.Port), log)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged writes lost across two switchovers, e.g. %+v", len(lost), lost[0])
	}
}

// TestLabFailoverPromoteAcceptsLoss: the primary's server dies while the
// standby is far behind (its walreceiver stopped): the standby's agent
// refuses to take over, says why in /status, and stays read-only; `promote`
// (a person accepting the loss) goes through the lease, and its agent takes
// it and promotes.
func TestLabFailoverPromoteAcceptsLoss(t *testing.T) {
	l, _ := upFailoverLab(t)
	recvPID, err := strconv.Atoi(labtest.Query(t, l, "db-replica", "SELECT pid::text FROM pg_stat_wal_receiver"))
	if err != nil || recvPID <= 0 {
		t.Fatalf("db-replica's walreceiver: %v", err)
	}
	syscall.Kill(recvPID, syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(recvPID, syscall.SIGCONT)
		}
	}()
	labtest.Exec(t, l, "db", `CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g`)
	time.Sleep(2500 * time.Millisecond) // published with the next renewals
	killServer(t, l, "db")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var rep failover.Report
	labtest.WaitFor(t, 30*time.Second, "db-replica's agent to refuse to take over", func() bool {
		st, err := l.AgentStatus(ctx, "db-replica")
		if err != nil || json.Unmarshal(st.Failover, &rep) != nil {
			return false
		}
		return rep.Refusal != nil && rep.Refusal.Kind == failover.RefuseLagging
	})
	t.Logf("refusal: %s", rep.Refusal.Message)
	// check says it, critical: nobody holds the lease.
	fs := labtest.Findings(t, l, live.DefaultThresholds)
	if !labtest.Has(fs, "failover-refusal-lagging", live.Critical, "db-replica") {
		t.Errorf("check does not report the refusal: %+v", fs)
	}
	syscall.Kill(recvPID, syscall.SIGCONT)
	stopped = false
	time.Sleep(3 * time.Second)
	if got := labtest.Query(t, l, "db-replica", "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("db-replica took over although it was %d bytes behind", rep.Refusal.LagBytes)
	}
	var out strings.Builder
	res, err := live.Promote(ctx, l.Target(), "db-replica", live.RoleOptions{Out: &out})
	if err != nil {
		t.Fatalf("promote: %v\n%s", err, out.String())
	}
	t.Logf("promote:\n%s\n%s", out.String(), res.Lost)
	if !strings.Contains(out.String(), "took the lease and promoted it") {
		t.Errorf("promote did not go through the lease:\n%s", out.String())
	}
	if lr, err := l.Lease().ReadLease(ctx); err != nil || lr.Holder != "db-replica" {
		t.Errorf("after promote the lease is %+v (%v)", lr, err)
	}
	if got := labtest.Query(t, l, "db-replica", "SELECT pg_is_in_recovery()::text"); got != "false" {
		t.Errorf("db-replica is not writable after promote")
	}
}

// BenchmarkLabFailoverThroughRouter kills the primary's whole server N
// times (UNDERSTUDY_BENCH_KILLS, default 10), alternating servers, in a
// `lab up --failover` lab, and measures from each kill to the first write
// an app writer got acknowledged by the new primary THROUGH THE ROUTER
// (HAProxy following the agents' /primary). Between kills the old
// primary's server comes back (read-only) with its agent, and rejoins.
// scripts/bench-failover runs it.
func BenchmarkLabFailoverThroughRouter(b *testing.B) {
	n := 10
	if v, err := strconv.Atoi(os.Getenv("UNDERSTUDY_BENCH_KILLS")); err == nil && v > 0 {
		n = v
	}
	l, bin := upFailoverLab(b)
	labtest.Exec(b, l, "db", "CREATE ROLE app LOGIN PASSWORD 'app-secret'", pgxwriter.CreateSQL, "GRANT ALL ON "+pgxwriter.Table+" TO app")
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=app password=app-secret dbname=postgres target_session_attrs=read-write connect_timeout=2", l.Router().Port)
	w := pgxwriter.Start(context.Background(), "pgx", conn, 50*time.Millisecond, 5*time.Second)
	defer w.Stop()
	stopWatch := labtest.WatchWritable(b, l)
	loadavg := func() string { s, _ := os.ReadFile("/proc/loadavg"); return strings.TrimSpace(string(s)) }
	fmt.Printf("# failover through the router: %d kills, lab up --failover (loopback, HAProxy), load %s, %s\n", n, loadavg(), time.Now().UTC().Format(time.RFC3339))
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*5*time.Minute)
	defer cancel()
	var took []time.Duration
	prim, other := "db", "db-replica"
	primaries := []string{nodeAddr(l, prim)}
	for i := 0; i < n; i++ {
		time.Sleep(3 * time.Second)
		killed := killServer(b, l, prim)
		var first pgxwriter.Attempt
		labtest.WaitFor(b, 60*time.Second, "a write acknowledged by "+other+" through the router", func() bool {
			for _, a := range pgxwriter.Acked(w.Log()) {
				if a.Node == nodeAddr(l, other) && a.Start.After(killed) {
					first = a
					return true
				}
			}
			return false
		})
		d := first.End.Sub(killed)
		took = append(took, d)
		primaries = append(primaries, nodeAddr(l, other))
		fmt.Printf("kill %2d (%s): first write acknowledged by %s through the router after %6.0f ms (load %s)\n", i+1, prim, other, float64(d)/1e6, loadavg())
		if err := l.Start(ctx, prim); err != nil {
			b.Fatal(err)
		}
		if err := l.StartNodeAgents(ctx, bin); err != nil {
			b.Fatal(err)
		}
		labtest.WaitFor(b, 3*time.Minute, prim+" to rejoin as "+other+"'s standby", func() bool {
			return labtest.Query(b, l, other, "SELECT count(*)::text FROM pg_stat_replication WHERE application_name = '"+prim+"' AND state = 'streaming'") == "1"
		})
		prim, other = other, prim
	}
	w.Stop()
	stopWatch()
	log := w.Log()
	if bad, runs := pgxwriter.Interleaved(primaries, log); bad {
		b.Errorf("writes went to two nodes in turns: %+v", runs)
	}
	n0, _ := l.Cluster.Node(prim)
	lost, err := pgxwriter.Lost(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", filepath.Join(l.Dir, "sock", prim), n0.Port), log)
	if err != nil {
		b.Fatal(err)
	}
	sorted := append([]time.Duration(nil), took...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	p50, mx := sorted[(len(sorted)+1)/2-1], sorted[len(sorted)-1]
	fmt.Printf("kill → first write acknowledged by the new primary through the router: p50 %.0f ms, max %.0f ms over %d kills; %d acknowledged writes, %d lost (async: the last ones before a kill), never two nodes in turns\n",
		float64(p50)/1e6, float64(mx)/1e6, n, len(pgxwriter.Acked(log)), len(lost))
	b.ReportMetric(float64(p50)/1e6, "p50-ms")
	b.ReportMetric(float64(mx)/1e6, "max-ms")
}
