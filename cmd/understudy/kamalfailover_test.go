package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/apptest"
)

// Automatic failover on real Docker, as a Kamal app runs it: init
// --failover puts the witness on the app server; apply boots it, the node
// agents with their etcd members and the router. From the operator's
// machine the lease is read and changed through SSH (status, failover
// pause|status|resume, two switchovers as lease handovers) while a pgx
// app writer keeps a ledger through the router. Then db's server is
// cut off: nobody runs promote, db-replica's agent takes the lease and
// the writer's writes are acknowledged by db-replica through the router;
// db, cut off, fences itself and comes back read-only; healed, it stays
// so, and `rejoin` makes it a standby. The ledger: no acknowledged write
// missing (but the last async ones before the cut), no node
// acknowledging writes outside its time as primary, never two at once.
func TestKamalFailover(t *testing.T) {
	w := newKamalWorld(t, worldOptions{app: true, failover: true})
	ctx := context.Background()
	if b, err := os.ReadFile(filepath.Join(w.app, ".kamal", "secrets")); err == nil {
		t.Logf(".kamal/secrets after init:\n%s", b)
	}
	out, code := runCLI(t, "apply", "--app", w.app)
	t.Logf("apply:\n%s", out)
	if code != 0 {
		w.dumpAgents(t)
		t.Fatalf("apply: exit %d", code)
	}
	for _, want := range []string{"booted db-witness", "booted db-agent", "booted db-replica-agent", "booted db-router"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q", want)
		}
	}
	if strings.Index(out, "booted db-witness") > strings.Index(out, "booted db-agent") {
		t.Errorf("apply booted the agents before the witness")
	}
	if again, code := runCLI(t, "apply", "--app", w.app); code != 0 || !strings.Contains(again, "nothing to do") {
		t.Errorf("apply again: exit %d\n%s", code, again)
	}

	st := w.leaseWith(t, "status", "db", 2*time.Minute)
	t.Logf("status:\n%s", st)
	w.routerOn(t, "db")
	if out, code := runCLI(t, "check", "--app", w.app); code == 2 {
		t.Fatalf("check on a healthy setup: exit %d\n%s", code, out)
	}

	// A pgx app writer on the app server, through the router.
	h, s := w.startWriters(t, apptest.PGX)
	role := func(name, newPrimary string, args ...string) string {
		t.Helper()
		return w.roleChange(t, h, func() { w.dumpAgents(t) }, name, newPrimary, args...)
	}

	// Switchovers go through the lease, read and handed over from here.
	sw := role("switchover to db-replica", "db-replica", "switchover", "db-replica")
	if !strings.Contains(sw, "the failover lease handed from db to db-replica") {
		t.Errorf("the switchover did not hand the lease over:\n%s", sw)
	}
	w.leaseWith(t, "failover status", "db-replica", 30*time.Second)
	w.routerOn(t, "db-replica")
	role("switchover back to db", "db", "switchover", "db")
	w.leaseWith(t, "failover status", "db", 30*time.Second)
	w.routerOn(t, "db")

	// Pause: status says so and a switchover is refused; resume.
	if out, code := runCLI(t, "failover", "pause", "--app", w.app); code != 0 {
		t.Fatalf("failover pause: exit %d\n%s", code, out)
	}
	if out, _ := runCLI(t, "failover", "status", "--app", w.app); !strings.Contains(out, "PAUSED") || !strings.Contains(out, "lease: held by db") {
		t.Errorf("failover status while paused:\n%s", out)
	}
	if out, code := runCLI(t, "switchover", "db-replica", "--app", w.app); code == 0 || !strings.Contains(out, "failover is paused") {
		t.Errorf("a switchover while paused: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "failover", "resume", "--app", w.app); code != 0 {
		t.Fatalf("failover resume: exit %d\n%s", code, out)
	}
	if out, _ := runCLI(t, "failover", "status", "--app", w.app); strings.Contains(out, "PAUSED") || !strings.Contains(out, "lease: held by db") {
		t.Errorf("failover status after resume:\n%s", out)
	}

	// An upgrade: a new understudy binary for the witness and the agents
	// (the same program with bytes appended, so its SHA-256 differs).
	// Restarting the primary's agent would have its watchdog fence db, so
	// apply restarts the witness and db-replica's agent, switches over to
	// db-replica (a lease handover), and only then restarts db's agent, a
	// standby's by then: no failover, nothing lost.
	bin, err := os.ReadFile(agentBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	upgraded := filepath.Join(t.TempDir(), "understudy")
	if err := os.WriteFile(upgraded, append(bin, []byte("\nupgraded\n")...), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("UNDERSTUDY_AGENT_BINARY", upgraded)
	dry, code := runCLI(t, "apply", "--dry-run", "--app", w.app)
	if code != 0 || !strings.Contains(dry, "db-replica: switch over to db-replica (a lease handover") ||
		strings.Index(dry, "reboot the node agent (kamal accessory reboot db-replica-agent)") > strings.Index(dry, "switch over to db-replica") ||
		strings.Index(dry, "switch over to db-replica") > strings.Index(dry, "reboot the node agent (kamal accessory reboot db-agent)") {
		t.Errorf("apply --dry-run with a new binary: exit %d\n%s", code, dry)
	}
	up := role("apply: a new understudy for the agents", "db-replica", "apply", "--yes")
	for _, want := range []string{"rebooted db-witness", "rebooted db-replica-agent", "switched over to db-replica", "rebooted db-agent"} {
		if !strings.Contains(up, want) {
			t.Errorf("the upgrade's apply lacks %q", want)
		}
	}
	// Neither node was fenced: no fence note in either data directory.
	for _, n := range nodes {
		dir, err := w.psqlOn(n, "SHOW data_directory")
		if err != nil {
			t.Fatalf("reading %s's data directory: %v %s", n, err, dir)
		}
		if out, err := exec.Command("docker", "-H", w.docker[n].DockerHost(), "exec", "shop-"+n, "test", "-e", dir+"/"+failover.FenceNote).CombinedOutput(); err == nil {
			t.Errorf("%s was fenced during the upgrade (%s exists) %s", n, failover.FenceNote, out)
		}
	}
	w.leaseWith(t, "failover status", "db-replica", time.Minute)
	w.routerOn(t, "db-replica")
	if again, code := runCLI(t, "apply", "--app", w.app); code != 0 || !strings.Contains(again, "nothing to do") {
		t.Errorf("apply after the upgrade: exit %d\n%s", code, again)
	}
	role("switchover back to db after the upgrade", "db", "switchover", "db")
	w.leaseWith(t, "failover status", "db", 30*time.Second)
	w.routerOn(t, "db")

	// db's server drops off the network. Nobody runs promote.
	holed, heal := w.cutOverToReplica(t, h)
	// The lease is read from here with db's server gone: the client
	// reaches the other two members through their own servers.
	if out, code := runCLI(t, "failover", "status", "--app", w.app); code != 0 || !strings.Contains(out, "lease: held by db-replica") {
		t.Errorf("failover status with db's server cut off: exit %d\n%s", code, out)
	} else {
		t.Logf("failover status with db's server cut off:\n%s", out)
	}
	// Still cut off, db has fenced itself: its PostgreSQL (restarted by
	// the container's restart policy) takes no writes. Asked on its own
	// server, over its dockerd's socket, not through the network.
	w.awaitReadOnly(t, "db", 30*time.Second)

	// Healed: db stays read-only and the router on db-replica.
	heal()
	w.waitSQL(t, "db", 2*time.Minute)
	time.Sleep(3 * time.Second)
	if ro := w.query(t, "db", "SELECT pg_is_in_recovery()::text"); ro != "true" {
		t.Errorf("db back from the cut without the lease is writable (pg_is_in_recovery %s)", ro)
	}
	w.leaseWith(t, "failover status", "db-replica", 30*time.Second)
	w.routerOn(t, "db-replica")
	role("rejoin db", "", "rejoin", "db")
	deadline := time.Now().Add(time.Minute)
	for {
		out, code := runCLI(t, "check", "--app", w.app)
		if code != 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("check after the rejoin: exit %d\n%s", code, out)
			break
		}
		time.Sleep(2 * time.Second)
	}
	if ro := w.query(t, "db", "SELECT pg_is_in_recovery()::text"); ro != "true" {
		t.Errorf("db after the rejoin is not a standby (pg_is_in_recovery %s)", ro)
	}

	rep := w.finalReport(t, ctx, h, s, "db-replica")
	// Asynchronous replication: what db acknowledged in the last moment
	// before its link was cut may not have reached db-replica (failover
	// allows up to its lag limit). Any other loss fails.
	lost, _ := lostInTheWindow(t, rep.Lost, "db", holed.Add(-2*time.Second), holed.Add(time.Second))
	rep.Lost = lost
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	for _, wr := range rep.Writers {
		for _, p := range wr.Pauses {
			if strings.Contains(p.Event, "cut off") && !p.NewPrimaryAck.IsZero() {
				t.Logf("%s: first write on db-replica %s after db's server was cut off (pause %s)", wr.Name, p.NewPrimaryAck.Sub(holed).Round(time.Millisecond), p.Gap.Round(time.Millisecond))
			}
		}
	}
}

// etcdMembersUp is how status and failover status show the three members up.
var etcdMembersUp = regexp.MustCompile(`etcd members: db up( \(etcd leader\))?, db-replica up( \(etcd leader\))?, db-witness up( \(etcd leader\))?\n`)

// leaseWith waits until cmd (status, failover status), run from here
// (the lease read through SSH), shows the lease held by holder and the
// three members up, and returns its output.
func (w *kamalWorld) leaseWith(t testing.TB, cmd, holder string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, _ := runCLI(t, append(strings.Fields(cmd), "--app", w.app)...)
		if strings.Contains(out, "lease: held by "+holder) && etcdMembersUp.MatchString(out) {
			return out
		}
		if time.Now().After(deadline) {
			w.dumpAgents(t)
			t.Fatalf("%s does not show the lease held by %s and three members up after %s:\n%s", cmd, holder, timeout, out)
		}
		time.Sleep(time.Second)
	}
}

// cutOverToReplica cuts db's link (every packet on its eth0 dropped: a
// cut link, a partition; the server itself, its containers and their
// traffic among themselves go on) with failover on and db the primary,
// and waits until the writers' first write after the cut is acknowledged
// through the router (by db-replica: the event says so, and Verify holds
// the writers to it). Nobody runs promote. It returns when the cut began
// and the heal.
func (w *kamalWorld) cutOverToReplica(t testing.TB, h *apptest.Harness) (holed time.Time, heal func()) {
	t.Helper()
	holed = time.Now()
	heal = w.cutLink(t, "db")
	end := h.Begin("db's server cut off: automatic failover", "db-replica")
	if err := h.WaitAcknowledged(context.Background(), 1, holed.Add(time.Second), 90*time.Second); err != nil {
		w.dumpAgents(t)
		t.Fatalf("no write acknowledged through the router within 90 s of the cut: %v", err)
	}
	end()
	t.Logf("a write acknowledged through the router %s after db's server was cut off", time.Since(holed).Round(time.Millisecond))
	w.routerOn(t, "db-replica")
	return holed, heal
}

// awaitReadOnly waits until a node's PostgreSQL is in recovery, asked on
// its own server over its dockerd's socket (no network needed: the server
// may be cut off).
func (w *kamalWorld) awaitReadOnly(t testing.TB, node string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ro, err := w.psqlOn(node, "SELECT pg_is_in_recovery()")
		if err == nil && ro == "t" {
			return
		}
		if time.Now().After(deadline) {
			w.dumpAgents(t)
			t.Fatalf("%s, without the lease, is not read-only after %s: %q %v", node, timeout, ro, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// cutLink drops every packet on a server's link to the switch (its eth0,
// in and out, forwarded too): the server is cut off from the others and
// from this host, while its processes and containers still reach each
// other, as on a real server whose network link fails. heal undoes it;
// the test's clean-up does too.
func (w *kamalWorld) cutLink(t testing.TB, server string) (heal func()) {
	t.Helper()
	return w.dropPackets(t, server, "understudy-test-cutlink", [][]string{{"INPUT", "-i", "eth0"}, {"OUTPUT", "-o", "eth0"}, {"FORWARD", "-i", "eth0"}, {"FORWARD", "-o", "eth0"}})
}

// psqlOn runs one query in a node's container through its server's dockerd
// (no network needed), as the app's database user over the local socket.
func (w *kamalWorld) psqlOn(node, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "docker", "-H", w.docker[node].DockerHost(), "exec", "-e", "PGPASSWORD="+dbPassword, "shop-"+node,
		"psql", "-X", "-At", "-U", dbUser, "-d", "postgres", "-c", sql)
	out, err := c.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// dumpAgents logs the failover accessories' last lines, for a failure.
func (w *kamalWorld) dumpAgents(t testing.TB) {
	t.Helper()
	for server, names := range map[string][]string{"db": {"shop-db", "shop-db-agent"}, "db-replica": {"shop-db-replica", "shop-db-replica-agent"}, "app": {"shop-db-witness", "shop-db-router"}} {
		for _, n := range names {
			out, _ := exec.Command("docker", "-H", w.docker[server].DockerHost(), "logs", "--tail", "40", n).CombinedOutput()
			t.Logf("--- %s on %s:\n%s", n, server, out)
		}
	}
}
