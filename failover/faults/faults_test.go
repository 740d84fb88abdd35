package faults_test

import (
	"testing"
	"time"
)

// The primary's server dies (every process SIGKILLed, its link down): the
// standby takes the lease once etcd lets it expire and promotes; the app's
// writes resume there. Back, the old primary boots read-only and rejoins
// as a standby by itself; it never takes a write again.
func TestPrimaryServerKilled(t *testing.T) {
	c := newCluster(t, nil)
	w := c.startWriter()
	time.Sleep(2 * time.Second)
	killed := time.Now()
	c.killServer("db")
	var first time.Time
	for time.Since(killed) < 30*time.Second {
		if at, ok := w.firstAckBy("db-replica", killed); ok {
			first = at
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if first.IsZero() {
		t.Fatalf("no write acknowledged by db-replica 30 s after db's server died; its report: %+v", c.report("db-replica"))
	}
	t.Logf("kill → first acknowledged write on db-replica: %s", first.Sub(killed).Round(time.Millisecond))
	// The server comes back: link up, PostgreSQL boots read-only, the agent starts.
	cut(t, c.l, c.l.NetNS.CutCommand(0, true))
	c.bootReadOnly("db")
	if err := c.startAgent("db"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	deadline := time.Now().Add(90 * time.Second)
	for {
		rep := c.report("db")
		if rep.Counts.Rejoins > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("db did not rejoin in 90 s: %+v", rep)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	acks := w.finish()
	c.checkLedger(acks, "db-replica", 1, 1<<20/40)
	if r := c.report("db-replica"); !r.Holds || r.Counts.Promotions != 1 {
		t.Fatalf("db-replica after the failover: %+v", r)
	}
}
