package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/sshtest"
	"github.com/understudy-dev/understudy/lab"
)

// kamalWorld is a Kamal deployment in miniature: two servers (network
// namespaces) each running a real sshd, a jump host, PostgreSQL nodes
// behind them on their private addresses, this host attached as the
// operator's laptop, a stand-in for the kamal executable that acts on the
// lab, and an app directory whose deploy.yml names it all.
type kamalWorld struct {
	lab        *lab.Lab
	app        string
	standinLog string
	key        sshtest.Key
	servers    map[string]*sshtest.Server // node name, or "jump"
	knownHosts string
}

const dbPassword = "app-db-password-1"

func newKamalWorld(t *testing.T, jump bool) *kamalWorld {
	sshtest.Skip(t)
	w := &kamalWorld{servers: map[string]*sshtest.Server{}}
	w.lab = labtest.New(t, labtest.Options{NetNS: true, ContainerPaths: true, Ports: []int{5432, 5432}, WALCap: "10GB",
		Password: "repl-password-for-kamal-test"})
	ctx := context.Background()
	if _, err := w.lab.AttachHost(ctx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w.key = sshtest.NewKey(t, dir, "id_test")
	var known []string
	for _, n := range w.lab.Cluster.Nodes {
		s := sshtest.Start(t, dir, w.lab.NodeNetNS(n.Name), n.Addr, 2222, w.key.Authorized)
		w.servers[n.Name] = s
		known = append(known, s.KnownHost)
	}
	if jump {
		s := sshtest.Start(t, dir, w.lab.NodeNetNS(""), w.lab.OutsiderAddr(), 2222, w.key.Authorized)
		w.servers["jump"] = s
		known = append(known, s.KnownHost)
	}
	w.knownHosts = filepath.Join(dir, "known_hosts")
	os.WriteFile(w.knownHosts, []byte(strings.Join(known, "\n")+"\n"), 0o600)

	// The stand-in for kamal, built from internal/kamalstandin.
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "kamal"), "github.com/understudy-dev/understudy/internal/kamalstandin").CombinedOutput(); err != nil {
		t.Fatalf("building the kamal stand-in: %v\n%s", err, out)
	}
	w.standinLog = filepath.Join(dir, "kamal.log")
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("UNDERSTUDY_STANDIN_LAB", w.lab.Dir)
	t.Setenv("UNDERSTUDY_STANDIN_LOG", w.standinLog)
	t.Setenv("UNDERSTUDY_KNOWN_HOSTS", w.knownHosts)
	t.Setenv("TEST_DB_PASSWORD", dbPassword)
	t.Setenv("REPLICATION_PASSWORD", w.lab.Password())

	// The app, as a user has it before understudy: one PostgreSQL accessory.
	w.app = filepath.Join(dir, "app")
	os.MkdirAll(filepath.Join(w.app, "config"), 0o755)
	os.MkdirAll(filepath.Join(w.app, ".kamal"), 0o755)
	proxy := ""
	if jump {
		proxy = "\n  proxy: root@" + w.servers["jump"].Addr
	}
	db := w.lab.Cluster.Nodes[0]
	deploy := `service: shop
image: shop/app
servers:
  - ` + db.Addr + `
ssh:
  user: root
  port: 2222
  keys_only: true
  keys:
    - ` + w.key.Path + proxy + `
accessories:
  db:
    image: postgres:15
    host: ` + db.Addr + `
    port: "` + db.Addr + `:5432:5432"
    env:
      clear:
        POSTGRES_USER: postgres
      secret:
        - POSTGRES_PASSWORD
    directories:
      - data:/var/lib/postgresql/data
`
	os.WriteFile(filepath.Join(w.app, "config", "deploy.yml"), []byte(deploy), 0o644)
	os.WriteFile(filepath.Join(w.app, ".kamal", "secrets"), []byte("POSTGRES_PASSWORD=$TEST_DB_PASSWORD\n"), 0o644)
	r := w.lab.Cluster.Nodes[1]
	if out, code := runCLI(t, "init", "--app", w.app, "--replica-host", r.Addr, "--replica-ip", r.Addr); code != 0 {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	return w
}

func (w *kamalWorld) kamalCalls() []string {
	b, _ := os.ReadFile(w.standinLog)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// The production path end to end: apply from nothing, through kamal (the
// stand-in) for containers and a real SSH tunnel via a jump host for SQL,
// then apply again, status, check, verify, and a switchover.
func TestKamalApplyThroughSSHJumpHost(t *testing.T) {
	w := newKamalWorld(t, true)
	out, code := runCLI(t, "apply", "--app", w.app, "--dry-run")
	if code != 0 || !strings.Contains(out, "db: start it") || !strings.Contains(out, "db-replica: start it; if its data directory is empty it clones db") {
		t.Fatalf("apply --dry-run: exit %d\n%s", code, out)
	}
	for _, c := range w.kamalCalls() {
		if strings.Contains(c, " boot ") {
			t.Errorf("--dry-run booted: %s", c)
		}
	}
	out, code = runCLI(t, "apply", "--app", w.app)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if !strings.HasPrefix(out, "plan:") {
		t.Errorf("apply did not show its plan first:\n%s", out)
	}
	for _, want := range []string{"started the primary db", "created replication role", "cloned db-replica"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	calls := strings.Join(w.kamalCalls(), "\n")
	for _, want := range []string{"kamal lock status", "kamal accessory boot db", "kamal accessory boot db-replica"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no `%s` among the kamal calls:\n%s", want, calls)
		}
	}
	// The SQL goes through the tunnel: the server sees the connection come
	// from its own address (sshd forwarding on that server), not from this
	// host (10.211.7.1), and the SSH connection went via the jump host.
	tg, err := openKamal(context.Background(), w.app, "config/deploy.yml", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tg.Control.Conn(context.Background(), "db")
	if err != nil {
		t.Fatal(err)
	}
	var from string
	c.QueryRow(context.Background(), "SELECT host(inet_client_addr())").Scan(&from)
	// A cancelled query is cancelled on the server too: pgx's cancel
	// request must find its way through the tunnel (research/postgres.md §4.1).
	qctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, qerr := c.Exec(qctx, "SELECT pg_sleep(30)")
	cancel()
	if qerr == nil {
		t.Error("pg_sleep(30) returned without error under a 300 ms deadline")
	}
	labtest.WaitFor(t, 3*time.Second, "the server to cancel the sleeping query", func() bool {
		return labtest.Query(t, w.lab, "db", "SELECT count(*)::text FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'") == "0"
	})
	c.Close(context.Background())
	tg.close()
	if from != "10.211.7.10" {
		t.Errorf("the server saw the connection from %q, not through sshd on 10.211.7.10", from)
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
	out, code = runCLI(t, "switchover", "db-replica", "--app", w.app)
	if code != 0 || !strings.Contains(out, "without pg_rewind") {
		t.Fatalf("switchover on Kamal: exit %d\n%s", code, out)
	}
	calls = strings.Join(w.kamalCalls(), "\n")
	if !strings.Contains(calls, "kamal accessory stop db") || !strings.Contains(calls, "kamal accessory exec db sh -c") || !strings.Contains(calls, "kamal accessory start db") {
		t.Errorf("switchover did not stop, re-point and start the old primary through kamal:\n%s", calls)
	}
}

// Bad SSH and database input: each gives an error that names the host and
// the fix, and nothing is changed (no kamal command runs).
func TestKamalBadInputChangesNothing(t *testing.T) {
	w := newKamalWorld(t, false)
	deploy := filepath.Join(w.app, "config", "deploy.yml")
	orig, _ := os.ReadFile(deploy)
	os.Remove(w.standinLog)
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
	os.WriteFile(deploy, []byte(strings.ReplaceAll(string(orig), "10.211.7.10", "10.211.7.99")), 0o644)
	try("unreachable host", "10.211.7.99:2222", "cannot reach")

	// A running primary with a wrong database password.
	os.WriteFile(deploy, orig, 0o644)
	if out, code := runCLI(t, "apply", "--app", w.app); code != 0 {
		t.Fatalf("apply: %s", out)
	}
	os.Remove(w.standinLog)
	t.Setenv("TEST_DB_PASSWORD", "not-the-password")
	try("wrong database password", "accessory db on 10.211.7.10", "POSTGRES_PASSWORD")

	// A held deploy lock stops apply before it does anything.
	t.Setenv("TEST_DB_PASSWORD", dbPassword)
	t.Setenv("UNDERSTUDY_STANDIN_LOCKED", "1")
	try("deploy lock", "deploy lock is held", "kamal lock release")
}

// The guide's situation: the primary already runs, as the postgres image
// runs it (its own settings, no boot script). apply names the reboot it
// needs and why, refuses without consent (nothing changed), and with
// --yes reboots it through kamal, then makes the role and slot and clones
// the standby.
func TestKamalApplyRebootsARunningPrimaryWithConsent(t *testing.T) {
	w := newKamalWorld(t, false)
	t.Setenv("UNDERSTUDY_STANDIN_PLAIN", "db")
	boot := exec.Command("kamal", "accessory", "boot", "db")
	boot.Dir = w.app // kamal reads .kamal/secrets from the app
	if out, err := boot.CombinedOutput(); err != nil {
		t.Fatalf("booting the plain primary: %v %s", err, out)
	}
	labtest.WaitFor(t, 30*time.Second, "the plain primary to answer", func() bool {
		_, err := w.lab.Conn(context.Background(), "db")
		return err == nil
	})
	labtest.Exec(t, w.lab, "db", "CREATE TABLE orders (id int)", "INSERT INTO orders VALUES (1), (2), (3)")
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
	if got := labtest.Query(t, w.lab, "db-replica", "SELECT count(*)::text FROM orders"); got != "3" {
		t.Errorf("the standby has %s of the primary's 3 rows", got)
	}
	if got := labtest.Query(t, w.lab, "db", "SHOW config_file"); got != "/understudy/postgresql.conf" {
		t.Errorf("after the reboot the primary reads %s", got)
	}
}
