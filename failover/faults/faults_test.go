package faults_test

import (
	"encoding/json"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/labtest"
)

// repeat is how many times each fault runs (UNDERSTUDY_FAULTS_REPEAT,
// default 2).
func repeat() int {
	if n, err := strconv.Atoi(os.Getenv("UNDERSTUDY_FAULTS_REPEAT")); err == nil && n > 0 {
		return n
	}
	return 2
}

func other(n string) string {
	if n == "db" {
		return "db-replica"
	}
	return "db"
}

func index(n string) int { return map[string]int{"db": 0, "db-replica": 1}[n] }

// waitFailover waits for the first write acknowledged by the new primary
// after the fault, and returns how long it took.
func (c *cluster) waitFailover(w *writer, to string, since time.Time, limit time.Duration) time.Duration {
	c.t.Helper()
	for time.Since(since) < limit {
		if at, ok := w.firstAckBy(to, since); ok {
			return at.Sub(since)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rep, _ := json.Marshal(c.report(to))
	c.t.Fatalf("no write acknowledged by %s %s after the fault; its report: %s", to, limit, rep)
	return 0
}

// waitRejoined waits until a former primary streams from the new one.
func (c *cluster) waitRejoined(node string, limit time.Duration) {
	c.t.Helper()
	labtest.WaitFor(c.t, limit, node+" to rejoin as a streaming standby", func() bool {
		st, err := failoverFacts(c, node)
		return err == nil && st.InRecovery && st.Streaming
	})
}

// noFailover asserts that for d the primary keeps its lease and takes the
// writes, and the standby is not promoted.
func (c *cluster) noFailover(w *writer, prim string, d time.Duration) {
	c.t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if r := c.report(other(prim)); r.Counts.Promotions > 0 || r.Holds {
			c.t.Fatalf("%s took over although %s was alive: %+v", other(prim), prim, r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, ok := w.firstAckBy(prim, time.Now().Add(-5*time.Second)); !ok {
		c.t.Fatalf("%s took no write in the last 5 s: %+v", prim, c.report(prim))
	}
}

// eachFault makes a fault of the primary's repeat() times, alternating
// servers: the standby must take the writer's first write within 30 s of
// it; then heal ends the fault and the old primary must rejoin; the ledger
// is checked at the end.
func (c *cluster) eachFault(w *writer, what string, fault func(prim string) (heal func())) {
	prim := "db"
	var faults []time.Time
	for i := 0; i < repeat(); i++ {
		time.Sleep(2 * time.Second)
		at := time.Now()
		faults = append(faults, at)
		heal := fault(prim)
		c.t.Logf("%s %d (%s): first acknowledged write on %s after %s", what, i+1, prim, other(prim), c.waitFailover(w, other(prim), at, 30*time.Second).Round(time.Millisecond))
		heal()
		c.waitRejoined(prim, 90*time.Second)
		prim = other(prim)
	}
	c.checkLedger(w.finish(), prim, repeat(), faults)
}

// The primary's server dies (every process SIGKILLed, its link down): the
// standby takes the lease once etcd lets it expire and promotes, and the
// app's writes resume there. Back, the old primary boots read-only and
// rejoins as a standby by itself. Then the same the other way round.
func TestPrimaryServerKilled(t *testing.T) {
	c := newCluster(t, nil)
	c.eachFault(c.startWriter(), "kill", func(prim string) (heal func()) {
		c.killServer(prim)
		return func() {
			cut(t, c.l, c.l.NetNS.CutCommand(index(prim), true))
			c.bootReadOnly(prim)
			if err := c.startAgent(prim); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// The primary is cut off from the standby and the witness, but the app
// still reaches it (over its socket here): it must stop taking writes
// before the standby is promoted, and rejoin once the network is back.
func TestPrimaryPartitionedAppStillReachesIt(t *testing.T) {
	c := newCluster(t, nil)
	c.eachFault(c.startWriter(), "partition", func(prim string) (heal func()) {
		cut(t, c.l, c.l.NetNS.CutCommand(index(prim), false))
		return func() {
			time.Sleep(time.Second)
			if r := c.report(prim); r.Counts.Fences == 0 {
				t.Fatalf("%s did not fence itself: %+v", prim, r)
			}
			cut(t, c.l, c.l.NetNS.CutCommand(index(prim), true))
		}
	})
}

// The primary is cut off from the standby only: the witness still sees
// it, so it keeps the lease and nothing fails over.
func TestPrimaryPartitionedFromStandbyOnly(t *testing.T) {
	c := newCluster(t, nil)
	w := c.startWriter()
	for i := 0; i < repeat(); i++ {
		// The holder keeps etcd's leader on the witness, away from both
		// database servers.
		labtest.WaitFor(t, 30*time.Second, "etcd's leader on the witness", func() bool {
			for _, m := range c.report("db").Members {
				if m.Leader {
					return m.Name == "app"
				}
			}
			return false
		})
		ip := c.l.NetNS.Addr(1)
		c.iptables("db", "-I", "INPUT", "-s", ip, "-j", "DROP")
		c.iptables("db", "-I", "OUTPUT", "-d", ip, "-j", "DROP")
		c.noFailover(w, "db", 15*time.Second)
		c.iptables("db", "-D", "INPUT", "-s", ip, "-j", "DROP")
		c.iptables("db", "-D", "OUTPUT", "-d", ip, "-j", "DROP")
		time.Sleep(3 * time.Second)
	}
	c.checkLedger(w.finish(), "db", 0, nil)
}

// The primary's agent is frozen (SIGSTOP) past the TTL: its watchdog, a
// process apart, fences PostgreSQL before the lease can expire, and the
// standby takes over. Resumed, the agent finds its node fenced and
// rejoins it.
func TestPrimaryAgentFrozen(t *testing.T) {
	c := newCluster(t, nil)
	c.eachFault(c.startWriter(), "agent frozen", func(prim string) (heal func()) {
		c.signalAgent(prim, syscall.SIGSTOP)
		return func() {
			time.Sleep(2 * time.Second)
			c.signalAgent(prim, syscall.SIGCONT)
		}
	})
}

// The primary's PostgreSQL is frozen (SIGSTOP) past the TTL: its agent
// sees it not answering, fences it (SIGKILL ends even a stopped process)
// and gives the lease up; the standby takes over. Resumed, nothing of it
// is left to take a write.
func TestPrimaryPostgresFrozen(t *testing.T) {
	c := newCluster(t, nil)
	c.eachFault(c.startWriter(), "PostgreSQL frozen", func(prim string) (heal func()) {
		pids := c.pgPIDs(prim)
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGSTOP)
		}
		return func() {
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGCONT)
			}
		}
	})
}

// One etcd member down (the standby's agent, or the witness): quorum
// holds, nothing fails over, writes go on.
func TestOneMemberDown(t *testing.T) {
	c := newCluster(t, nil)
	w := c.startWriter()
	for _, n := range []string{"app", "db-replica"} {
		c.stopAgent(n, syscall.SIGKILL)
		c.noFailover(w, "db", 15*time.Second)
		if err := c.startAgent(n); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
	}
	c.checkLedger(w.finish(), "db", 0, nil)
}

// The standby lags past the limit when the primary dies: it refuses to
// promote and says why; nothing takes writes (the loss would exceed the
// limit). Once the old primary is back, it takes the lease again.
func TestStandbyLaggingRefuses(t *testing.T) {
	c := newCluster(t, nil)
	w := c.startWriter()
	// Starve the standby's replication: drop the primary's PostgreSQL
	// traffic to it, then write well past the 1 MiB limit.
	port := strconv.Itoa(c.l.Cluster.Nodes[0].Port)
	c.iptables("db-replica", "-I", "INPUT", "-p", "tcp", "--sport", port, "-j", "DROP")
	labtest.Exec(t, c.l, "db", `CREATE TABLE faults_bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g`)
	time.Sleep(2 * time.Second) // published with the next renewal
	killed := time.Now()
	c.killServer("db")
	c.iptables("db-replica", "-D", "INPUT", "-p", "tcp", "--sport", port, "-j", "DROP")
	var r failover.Report
	labtest.WaitFor(t, 30*time.Second, "db-replica to refuse", func() bool {
		r = c.report("db-replica")
		return r.Refusal != nil && r.Refusal.Kind == failover.RefuseLagging
	})
	t.Logf("%s after the kill: %s", time.Since(killed).Round(time.Millisecond), r.Refusal.Message)
	time.Sleep(5 * time.Second)
	if r := c.report("db-replica"); r.Counts.Promotions > 0 || r.Holds {
		t.Fatalf("a standby past the lag limit took over: %+v", r)
	}
	// db comes back: it boots read-only and takes its lease back.
	cut(t, c.l, c.l.NetNS.CutCommand(0, true))
	c.bootReadOnly("db")
	if err := c.startAgent("db"); err != nil {
		t.Fatal(err)
	}
	c.waitFailover(w, "db", time.Now(), 60*time.Second)
	c.checkLedger(w.finish(), "db", 0, nil)
}

// A second fault during a failover: the primary's server dies and, before
// the lease expires, so does the witness. The standby has no quorum and
// must not promote; when the witness is back it completes the failover.
func TestSecondFaultDuringFailover(t *testing.T) {
	c := newCluster(t, nil)
	w := c.startWriter()
	time.Sleep(2 * time.Second)
	killed := time.Now()
	c.killServer("db")
	time.Sleep(2 * time.Second)
	c.stopAgent("app", syscall.SIGKILL)
	start := time.Now()
	for time.Since(start) < 12*time.Second {
		if r := c.report("db-replica"); r.Holds || r.Counts.Promotions > 0 {
			t.Fatalf("db-replica promoted without a quorum: %+v", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := c.report("db-replica"); r.Refusal == nil || r.Refusal.Kind != failover.RefuseNoQuorum {
		t.Fatalf("db-replica's refusal: %+v", r.Refusal)
	}
	back := time.Now()
	if err := c.startAgent("app"); err != nil {
		t.Fatal(err)
	}
	t.Logf("witness back: first write on db-replica %s later", c.waitFailover(w, "db-replica", back, 60*time.Second).Round(time.Millisecond))
	c.checkLedger(w.finish(), "db-replica", 1, []time.Time{killed})
}

// Synchronous mode: the standby is synchronous while it streams, so a
// dead primary loses no acknowledged commit; when the standby goes away,
// the primary falls back to async (commits stop waiting) and the standby
// is no longer allowed to promote until it is back in sync.
func TestSynchronousNoLoss(t *testing.T) {
	c := newCluster(t, func(s *failover.Settings) { s.Synchronous = true })
	labtest.WaitFor(t, 30*time.Second, "db-replica recorded as synchronous", func() bool {
		st, err := failoverFacts(c, "db")
		return err == nil && len(st.Replicas) == 1 && st.Replicas[0].Sync && st.SyncNames != ""
	})
	w := c.startWriter()
	time.Sleep(3 * time.Second)
	// The standby's server vanishes (its link black-holed, then every
	// process killed): commits stop waiting for it within seconds, not at
	// wal_sender_timeout.
	c.iptables("db", "-I", "INPUT", "-s", c.l.NetNS.Addr(1), "-j", "DROP")
	c.iptables("db", "-I", "OUTPUT", "-d", c.l.NetNS.Addr(1), "-j", "DROP")
	away := time.Now()
	time.Sleep(8 * time.Second)
	first, ok := w.firstAckBy("db", away.Add(time.Second))
	if !ok {
		t.Fatalf("writes stalled with the standby away (no fall back to async): %+v", c.report("db"))
	}
	var stall time.Duration
	acks := w.finishedSoFar()
	for i := 1; i < len(acks); i++ {
		if acks[i].end.After(away) && acks[i-1].end.Before(first.Add(time.Second)) {
			stall = max(stall, acks[i].end.Sub(acks[i-1].end))
		}
	}
	t.Logf("standby black-holed: longest pause between acknowledged writes %s", stall.Round(time.Millisecond))
	c.stopAgent("db-replica", syscall.SIGKILL)
	c.signalPG("db-replica", syscall.SIGKILL)
	c.iptables("db", "-D", "INPUT", "-s", c.l.NetNS.Addr(1), "-j", "DROP")
	c.iptables("db", "-D", "OUTPUT", "-d", c.l.NetNS.Addr(1), "-j", "DROP")
	// Back, it catches up and is synchronous again.
	c.bootReadOnly("db-replica")
	if err := c.startAgent("db-replica"); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 60*time.Second, "db-replica synchronous again", func() bool {
		st, err := failoverFacts(c, "db")
		return err == nil && len(st.Replicas) == 1 && st.Replicas[0].Sync && st.SyncNames != ""
	})
	time.Sleep(3 * time.Second)
	killed := time.Now()
	c.killServer("db")
	t.Logf("synchronous: first write on db-replica %s after the kill", c.waitFailover(w, "db-replica", killed, 30*time.Second).Round(time.Millisecond))
	c.checkLedger(w.finish(), "db-replica", 1, nil)
}
