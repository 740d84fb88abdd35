package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/sshtest"
	"github.com/understudy-dev/understudy/live"
)

// The production path end to end on real Docker: apply from nothing
// (through kamal for the boots, a real SSH tunnel via a jump host for SQL),
// then apply again, status, check, verify, and switchovers both ways. The
// app is in the guide's shape, with POSTGRES_USER a secret.
func TestKamalApplyThroughSSHJumpHost(t *testing.T) {
	w := newKamalWorld(t, worldOptions{jump: true})
	out, code := runCLI(t, "apply", "--app", w.app, "--dry-run")
	if code != 0 || !strings.Contains(out, "db: start it") || !strings.Contains(out, "db-replica: start it; if its data directory is empty it clones db") {
		t.Fatalf("apply --dry-run: exit %d\n%s", code, out)
	}
	for _, c := range w.kamalCalls() {
		if strings.Contains(c, " boot ") {
			t.Errorf("--dry-run booted: %s", c)
		}
	}
	if s := w.state(t, "db"); s != "absent" {
		t.Errorf("--dry-run left db's container %s", s)
	}
	out, code = runCLI(t, "apply", "--app", w.app)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if !strings.HasPrefix(out, "plan:") {
		t.Errorf("apply did not show its plan first:\n%s", out)
	}
	for _, want := range []string{"started the primary db", "cloned db-replica"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	// On the real image the first-boot role script (docker-entrypoint-initdb.d)
	// made the replication role, so apply had nothing to add.
	if got := w.query(t, "db", "SELECT count(*)::text FROM pg_roles WHERE rolname = 'replicator' AND rolreplication"); got != "1" {
		t.Errorf("there are %s replication roles named replicator", got)
	}
	calls := strings.Join(w.kamalCalls(), "\n")
	for _, want := range []string{"kamal lock status", "kamal accessory boot db", "kamal accessory boot db-replica"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no `%s` among the kamal calls:\n%s", want, calls)
		}
	}
	// The SQL goes through the tunnel: the server sees the connection come
	// from its own address (sshd forwarding on that server, then Docker's
	// published port), not from this host (10.211.7.1).
	tg, err := openKamal(context.Background(), w.app, "config/deploy.yml", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tg.Control.Conn(context.Background(), "db")
	if err != nil {
		t.Fatal(err)
	}
	var user string
	c.QueryRow(context.Background(), "SELECT current_user").Scan(&user)
	// A cancelled query is cancelled on the server too: pgx's cancel
	// request must find its way through the tunnel.
	qctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, qerr := c.Exec(qctx, "SELECT pg_sleep(30)")
	cancel()
	if qerr == nil {
		t.Error("pg_sleep(30) returned without error under a 300 ms deadline")
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.query(t, "db", "SELECT count(*)::text FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'") != "0" {
		if time.Now().After(deadline) {
			t.Fatal("the server did not cancel the sleeping query")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Close(context.Background())
	tg.close()
	if user != dbUser {
		t.Errorf("understudy logged in as %q, not POSTGRES_USER from the secrets (%q)", user, dbUser)
	}
	out, code = runCLI(t, "apply", "--app", w.app)
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("second apply: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "status", "--app", w.app)
	if code != 0 || !strings.Contains(out, "db-replica  standby") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "check", "--app", w.app)
	if code != 0 {
		t.Errorf("check: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "verify", "--app", w.app)
	if code != 0 || !strings.Contains(out, "was readable on db-replica") {
		t.Errorf("verify: exit %d\n%s", code, out)
	}
	w.exec(t, "db", "CREATE TABLE orders (id int)", "INSERT INTO orders VALUES (1)")
	os.Remove(w.standinLog)
	for _, to := range []string{"db-replica", "db"} {
		out, code = runCLI(t, "switchover", to, "--app", w.app)
		if code != 0 || !strings.Contains(out, "without pg_rewind") {
			t.Fatalf("switchover %s on Kamal: exit %d\n%s", to, code, out)
		}
		other := "db"
		if to == "db" {
			other = "db-replica"
		}
		// Bug 2 of the real-Kamal run: the old primary must run again, as a
		// standby, not stay exited.
		if s := w.state(t, other); s != "running" {
			t.Fatalf("after switchover %s the old primary %s is %s", to, other, s)
		}
		if got := w.query(t, to, "SELECT pg_is_in_recovery()::text"); got != "false" {
			t.Errorf("%s is in recovery after the switchover to it", to)
		}
		w.exec(t, to, "INSERT INTO orders VALUES (2)")
	}
	// The role changes ran docker over SSH, never the kamal executable.
	for _, c := range w.kamalCalls() {
		if c != "kamal lock status" {
			t.Errorf("switchover ran kamal: %s", c)
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for w.query(t, "db-replica", "SELECT count(*)::text FROM orders") != "3" {
		if time.Now().After(deadline) {
			t.Fatal("db-replica does not have the 3 rows written across the switchovers")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The primary's container is killed (a crash): promote the standby,
	// then bring the old primary back as its standby with rejoin. What
	// rejoin says it undid agrees with what promote said was lost.
	w.docker["db"].Docker(t, "kill", "shop-db")
	out, code = runCLI(t, "promote", "db-replica", "--app", w.app)
	if code != 0 || !strings.Contains(out, "promoted") || !strings.Contains(out, "understudy rejoin db") {
		t.Fatalf("promote db-replica after db crashed: exit %d\n%s", code, out)
	}
	nothingLost := strings.Contains(out, "nothing lost")
	w.exec(t, "db-replica", "INSERT INTO orders VALUES (4)")
	out, code = runCLI(t, "rejoin", "db", "--app", w.app)
	if code != 0 {
		t.Fatalf("rejoin db: exit %d\n%s", code, out)
	}
	if nothingLost && strings.Contains(out, "those changes were undone") {
		t.Errorf("promote said nothing was lost, and rejoin that changes were undone:\n%s", out)
	}
	deadline = time.Now().Add(30 * time.Second)
	for w.query(t, "db", "SELECT count(*)::text FROM orders") != "4" {
		if time.Now().After(deadline) {
			t.Fatal("the rejoined db does not have the row written after the promote")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := w.query(t, "db", "SELECT (current_setting('server_version_num')::int / 10000)::text"); got != strconv.Itoa(w.image.Major) {
		t.Errorf("db runs PostgreSQL %s, the image is %s", got, w.image.Tag)
	}
	if out, code := runCLI(t, "check", "--app", w.app); code != 0 {
		t.Errorf("check after promote and rejoin: exit %d\n%s", code, out)
	}
}

// Bug 3 of the real-Kamal run: with the registry refusing logins (a
// laptop without the registry password, an outage), a switchover still
// works, since nothing in it asks the registry; and one interrupted right
// after the stop rolls back with `docker start`, leaving db the primary.
func TestKamalSwitchoverNeedsNoRegistryAndRollsBack(t *testing.T) {
	w := newKamalWorld(t, worldOptions{})
	if out, code := runCLI(t, "apply", "--app", w.app); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	for _, n := range nodes {
		os.WriteFile(filepath.Join(w.docker[n].Home, ".registry-refuses"), nil, 0o644)
	}
	// The stand-in logs in as Kamal does, and is refused as Kamal would be.
	if out, err := runKamal(w, "accessory", "exec", "db", "true"); err == nil {
		t.Fatalf("kamal accessory exec worked with the registry refusing:\n%s", out)
	}
	out, code := runCLI(t, "switchover", "db-replica", "--app", w.app)
	if code != 0 {
		t.Fatalf("switchover with the registry refusing: exit %d\n%s", code, out)
	}
	if s := w.state(t, "db"); s != "running" {
		t.Fatalf("the old primary db is %s", s)
	}

	// An interruption right after the stop: the switchover rolls back.
	tg, err := openKamal(context.Background(), w.app, "config/deploy.yml", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	ctx, cancel := context.WithCancel(context.Background())
	var stoppedState string
	_, err = live.Switchover(ctx, tg.Target, "db", live.RoleOptions{Out: testWriter{t}, Hook: func(stage string) {
		if stage == "after-stop" {
			stoppedState = w.state(t, "db-replica")
			cancel()
		}
	}})
	if err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("an interrupted switchover gave %v, want a rollback", err)
	}
	if stoppedState != "exited" {
		t.Errorf("at the hook the primary's container was %q, not stopped", stoppedState)
	}
	if s := w.state(t, "db-replica"); s != "running" {
		t.Fatalf("after the rollback db-replica is %s", s)
	}
	w.waitSQL(t, "db-replica", 30*time.Second)
	if got := w.query(t, "db-replica", "SELECT pg_is_in_recovery()::text"); got != "false" {
		t.Errorf("after the rollback db-replica is in recovery")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func runKamal(w *kamalWorld, args ...string) (string, error) {
	c := exec.Command("kamal", args...)
	c.Dir = w.app
	out, err := c.CombinedOutput()
	return string(out), err
}

// What misled the first version: Kamal's boot skips a server where a
// container exists, running or stopped, and says so with exit 0. The
// stand-in runs Kamal's own commands, so it does the same.
func TestKamalStandInBootSkipsAStoppedContainer(t *testing.T) {
	w := newKamalWorld(t, worldOptions{plain: true})
	w.kamal(t, "accessory", "stop", "db")
	if s := w.state(t, "db"); s != "exited" {
		t.Fatalf("after kamal accessory stop db is %s", s)
	}
	out := w.kamal(t, "accessory", "boot", "db")
	if !strings.Contains(out, "Skipping booting `db`") || !strings.Contains(out, "a container already exists") {
		t.Errorf("boot of a stopped accessory:\n%s", out)
	}
	if s := w.state(t, "db"); s != "exited" {
		t.Errorf("boot changed the stopped container: %s", s)
	}
	if out := w.kamal(t, "accessory", "details", "db"); strings.Contains(out, "Exited") || !strings.Contains(out, "CONTAINER ID") {
		t.Errorf("details lists a stopped container (Kamal's details is docker ps without -a):\n%s", out)
	}
	w.kamal(t, "accessory", "start", "db")
	w.waitSQL(t, "db", 30*time.Second)
}

// Bad SSH and database input: each gives an error that names the host and
// the fix, and nothing is changed: no kamal verb runs and every container
// on both servers is as it was.
func TestKamalBadInputChangesNothing(t *testing.T) {
	w := newKamalWorld(t, worldOptions{})
	deploy := filepath.Join(w.app, "config", "deploy.yml")
	orig, _ := os.ReadFile(deploy)
	os.Remove(w.standinLog)
	before := w.containers(t)
	try := func(name string, want ...string) {
		t.Helper()
		out, code := runCLI(t, "apply", "--app", w.app, "--timeout", "20s")
		if code == 0 {
			t.Errorf("%s: apply succeeded\n%s", name, out)
		}
		t.Logf("%s → %s", name, strings.TrimSpace(out))
		for _, s := range want {
			if !strings.Contains(out, s) {
				t.Errorf("%s: the error lacks %q:\n%s", name, s, out)
			}
		}
		for _, c := range w.kamalCalls() {
			for _, verb := range []string{" boot ", " reboot ", " start ", " stop ", " exec "} {
				if strings.Contains(c, verb) {
					t.Errorf("%s: kamal was asked to %s", name, c)
				}
			}
		}
		if now := w.containers(t); now != before {
			t.Errorf("%s: the containers changed:\nbefore:\n%snow:\n%s", name, before, now)
		}
		os.Remove(w.standinLog)
	}
	// Nothing runs yet, so apply's first step is to reach the primary over SSH.
	other := sshtest.NewKey(t, t.TempDir(), "id_other")
	os.WriteFile(deploy, []byte(strings.Replace(string(orig), w.key.Path, other.Path, 1)), 0o644)
	try("wrong key", "10.211.7.10:2222", "refused every key", "authorized_keys")

	os.WriteFile(deploy, orig, 0o644)
	t.Setenv("UNDERSTUDY_KNOWN_HOSTS", filepath.Join(t.TempDir(), "empty_known_hosts"))
	try("unknown host", "10.211.7.10:2222", "not in", "ssh-keyscan")

	changed := strings.Replace(w.servers["db"].KnownHost, w.servers["db"].KnownHost[strings.LastIndex(w.servers["db"].KnownHost, " ")+1:], strings.Fields(w.servers["db-replica"].KnownHost)[2], 1)
	kh := filepath.Join(t.TempDir(), "changed_known_hosts")
	os.WriteFile(kh, []byte(changed+"\n"), 0o600)
	t.Setenv("UNDERSTUDY_KNOWN_HOSTS", kh)
	try("changed host key", "10.211.7.10:2222", "CHANGED", "ssh-keygen -R")

	t.Setenv("UNDERSTUDY_KNOWN_HOSTS", w.knownHosts)
	// The server moved (its SSH address), PostgreSQL's private address did not.
	os.WriteFile(deploy, []byte(strings.Replace(string(orig), "host: 10.211.7.10\n", "host: 10.211.7.99\n", 1)), 0o644)
	try("unreachable host", "10.211.7.99:2222", "cannot reach")

	// A running primary with a wrong database password.
	os.WriteFile(deploy, orig, 0o644)
	if out, code := runCLI(t, "apply", "--app", w.app); code != 0 {
		t.Fatalf("apply: %s", out)
	}
	os.Remove(w.standinLog)
	before = w.containers(t)
	t.Setenv("TEST_DB_PASSWORD", "not-the-password")
	try("wrong database password", "accessory db on 10.211.7.10", `user "shop"`, "POSTGRES_PASSWORD")

	// Issue 18: a standby on another major. With deploy.yml edited after
	// init, apply refuses before anything, naming both images and the fix;
	// check reports it; init refuses at the standby's image line.
	t.Setenv("TEST_DB_PASSWORD", dbPassword)
	mine, theirs := w.image.Tag, "postgres:18"
	if w.image.Major == 18 {
		theirs = "postgres:17"
	}
	at := strings.Index(string(orig), "\n  db-replica:\n")
	if at < 0 || !strings.Contains(string(orig[at:]), "image: "+mine+"\n") {
		t.Fatalf("no db-replica accessory with image %s in deploy.yml:\n%s", mine, orig)
	}
	edited := string(orig[:at]) + strings.Replace(string(orig[at:]), "image: "+mine+"\n", "image: "+theirs+"\n", 1)
	os.WriteFile(deploy, []byte(edited), 0o644)
	try("standby on another major", "db-replica runs the image "+theirs, "db runs the image "+mine, "nothing was cloned or started", "give db-replica the image "+mine)
	if out, code := runCLI(t, "check", "--app", w.app); code != 2 || !strings.Contains(out, "image-major") || !strings.Contains(out, "db-replica runs the image "+theirs) {
		t.Errorf("check with the standby on %s: exit %d\n%s", theirs, code, out)
	}
	r := w.addr["db-replica"]
	if out, code := runCLI(t, "init", "--app", w.app, "--replica-host", r, "--replica-ip", r); code == 0 || !strings.Contains(out, "config/deploy.yml:") ||
		!strings.Contains(out, "db-replica's image "+theirs) || !strings.Contains(out, "give db-replica the image "+mine) {
		t.Errorf("init with the standby on %s: exit %d\n%s", theirs, code, out)
	}
	if now, _ := os.ReadFile(deploy); string(now) != edited {
		t.Error("a refused init changed deploy.yml")
	}
	os.WriteFile(deploy, orig, 0o644)

	// A held deploy lock (Kamal's own lock directory on the primary host)
	// stops apply before it does anything.
	w.kamal(t, "lock", "acquire")
	os.Remove(w.standinLog)
	try("deploy lock", "deploy lock is held", "kamal lock release")

	// With no node answering, status says so in its exit code.
	w.kamal(t, "lock", "release")
	for _, n := range nodes {
		w.kamal(t, "accessory", "stop", n)
	}
	if out, code := runCLI(t, "status", "--app", w.app); code == 0 || !strings.Contains(out, "no node answered") {
		t.Errorf("status with every node stopped: exit %d\n%s", code, out)
	}
}

// The guide's situation: the primary already runs, as the postgres image
// runs it (its own settings, no boot script). apply names the reboot it
// needs and why, refuses without consent (nothing changed), and with
// --yes reboots it through kamal, then makes the role and slot and clones
// the standby.
func TestKamalApplyRebootsARunningPrimaryWithConsent(t *testing.T) {
	w := newKamalWorld(t, worldOptions{plain: true})
	w.exec(t, "db", "CREATE TABLE orders (id int)", "INSERT INTO orders VALUES (1), (2), (3)")
	os.Remove(w.standinLog)

	out, code := runCLI(t, "apply", "--app", w.app)
	t.Logf("apply without consent:\n%s", out)
	if code == 0 || !strings.Contains(out, "reboot: config_file") || !strings.Contains(out, "--yes") {
		t.Fatalf("apply without consent: exit %d\n%s", code, out)
	}
	for _, c := range w.kamalCalls() {
		if strings.Contains(c, " reboot ") || strings.Contains(c, " boot ") {
			t.Errorf("without consent kamal was asked to %s", c)
		}
	}
	out, code = runCLI(t, "apply", "--app", w.app, "--yes")
	if code != 0 {
		t.Fatalf("apply --yes: exit %d\n%s", code, out)
	}
	calls := strings.Join(w.kamalCalls(), "\n")
	if !strings.Contains(calls, "kamal accessory reboot db") || !strings.Contains(calls, "kamal accessory boot db-replica") {
		t.Errorf("kamal calls:\n%s", calls)
	}
	if got := w.query(t, "db-replica", "SELECT count(*)::text FROM orders"); got != "3" {
		t.Errorf("the standby has %s of the primary's 3 rows", got)
	}
	if got := w.query(t, "db", "SHOW config_file"); got != "/understudy/postgresql.conf" {
		t.Errorf("after the reboot the primary reads %s", got)
	}
}
