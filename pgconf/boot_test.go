package pgconf_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/internal/pgtest"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// The tests below run the generated boot script against real PostgreSQL 15
// servers. The script hands over to an entrypoint; the lab's stand-in for
// the image's docker-entrypoint.sh plays it (initdb when empty, exec postgres).
var entrypointStandIn = lab.EntrypointStandIn

// A password with the characters a passfile and SQL must escape.
const testPassword = `s3cr:et\pa'ss-7Hq2`

type bootCluster struct {
	env     *pgtest.Env
	c       pgconf.Cluster
	confDir string
	sockDir string
	script  string
	entry   string
	primary string // PGDATA of the primary
	standby string // PGDATA the boot script fills
	runDir  string
	logs    []string
	ports   map[string]int
}

func newBootCluster(t *testing.T) *bootCluster {
	env := pgtest.New(t)
	b := &bootCluster{env: env, ports: map[string]int{}}
	b.ports["alpha"] = pgtest.FreePort(t)
	b.ports["beta"] = pgtest.FreePort(t)
	b.confDir = env.Dir("conf")
	b.sockDir = env.Dir("sock")
	b.runDir = env.Dir("run")
	b.primary = filepath.Join(env.Root, "alpha")
	b.standby = filepath.Join(env.Root, "beta")
	b.c = pgconf.Cluster{
		Nodes:          []pgconf.Node{{Name: "alpha", Addr: "127.0.0.1", Port: b.ports["alpha"]}, {Name: "beta", Addr: "127.0.0.1", Port: b.ports["beta"]}},
		InitialPrimary: "alpha",
		Major:          15,
		ReplUser:       "replicator",
		WALCap:         "1GB",
		HBAFile:        filepath.Join(b.confDir, "pg_hba.conf"),
	}
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(b.confDir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, n := range []string{"alpha", "beta"} {
		c := b.c
		c.DataDir = filepath.Join(env.Root, n)
		write(n+".conf", pgconf.Conf(c), 0o644)
	}
	write("pg_hba.conf", pgconf.HBA(b.c), 0o644)
	b.script = write("boot.sh", pgconf.Boot(b.c), 0o755)
	b.entry = write("entrypoint.sh", entrypointStandIn, 0o755)
	return b
}

// serverArgs are the postgres arguments a node is started with: the same
// shape as the accessory's cmd, plus what the lab sets per node.
func (b *bootCluster) serverArgs(node string) []string {
	return []string{"postgres", "-c", "config_file=" + filepath.Join(b.confDir, node+".conf"),
		"-c", fmt.Sprintf("port=%d", b.ports[node]), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + b.sockDir}
}

// startPrimary initialises alpha and creates the replication role from a
// verifier computed in Go.
func (b *bootCluster) startPrimary(t *testing.T) {
	b.env.InitDB(b.primary)
	b.env.Start(b.primary, strings.Join(b.serverArgs("alpha")[1:], " "))
	v, err := pgops.SCRAMVerifier(testPassword, nil, pgops.SCRAMIterations)
	if err != nil {
		t.Fatal(err)
	}
	b.exec(t, "alpha", fmt.Sprintf("CREATE ROLE replicator LOGIN REPLICATION PASSWORD '%s'", v))
}

func (b *bootCluster) conn(t *testing.T, node string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", b.sockDir, b.ports[node]))
	if err != nil {
		t.Fatalf("connecting to %s: %v", node, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (b *bootCluster) exec(t *testing.T, node, sql string) {
	t.Helper()
	if _, err := b.conn(t, node).Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %s: %v", node, sql, err)
	}
}

// query returns one value, or "error: ..." (it never fails the test, so it
// can be polled while a server starts).
func (b *bootCluster) query(t *testing.T, node, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", b.sockDir, b.ports[node]))
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close(context.Background())
	var s string
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		return "error: " + err.Error()
	}
	return s
}

// boot runs the boot script for a node the way the accessory's command
// does. The process is ours; the test stops it (and the server it became).
// bootProc is a running boot script.
type bootProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *bootProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (b *bootCluster) boot(t *testing.T, node, dataDir string, extraEnv ...string) *bootProc {
	t.Helper()
	args := append([]string{b.script}, b.serverArgs(node)...)
	cmd := b.env.Command("/bin/sh", args...)
	cmd.Env = append(cmd.Env, "PGDATA="+dataDir, "UNDERSTUDY_NODE="+node, "REPLICATION_PASSWORD="+testPassword,
		"UNDERSTUDY_ENTRYPOINT="+b.entry, "UNDERSTUDY_RUN_DIR="+b.runDir, "UNDERSTUDY_RETRY_SECONDS=1", "PG_MAJOR=15")
	cmd.Env = append(cmd.Env, extraEnv...)
	logPath := filepath.Join(b.env.Root, node+"-boot.log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.logs = append(b.logs, logPath)
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	b.env.OnCleanup(func() {
		b.env.Stop(dataDir)
		select {
		case <-done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // our own process group only
			<-done
		}
	})
	return &bootProc{cmd, done}
}

func (b *bootCluster) bootLog() string {
	var s strings.Builder
	for _, l := range b.logs {
		d, _ := os.ReadFile(l)
		s.Write(d)
	}
	return s.String()
}

func (b *bootCluster) waitStreaming(t *testing.T) {
	t.Helper()
	pgtest.WaitFor(t, 60*time.Second, "beta streaming from alpha over its slot", func() (bool, string) {
		s := b.query(t, "alpha", `SELECT coalesce((SELECT state FROM pg_stat_replication WHERE application_name = 'beta'), 'none')
			|| '/' || coalesce((SELECT active::text FROM pg_replication_slots WHERE slot_name = 'understudy_beta'), 'no slot')`)
		return s == "streaming/true", s + "\n" + b.bootLog()
	})
}

func TestBootClonesFromPrimaryAndStreamsOverSlot(t *testing.T) {
	b := newBootCluster(t)
	b.startPrimary(t)
	b.exec(t, "alpha", "CREATE TABLE canary (v text); INSERT INTO canary VALUES ('before clone')")

	b.boot(t, "beta", b.standby)
	b.waitStreaming(t)

	b.exec(t, "alpha", "INSERT INTO canary VALUES ('after clone')")
	pgtest.WaitFor(t, 10*time.Second, "the new row on the standby", func() (bool, string) {
		s := b.query(t, "beta", "SELECT string_agg(v, ',' ORDER BY v) FROM canary")
		return s == "after clone,before clone", s
	})
	if got := b.query(t, "beta", "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("standby pg_is_in_recovery = %s", got)
	}
	if got := b.query(t, "beta", "SELECT current_setting('cluster_name')"); got != "beta" {
		t.Errorf("the node's cluster_name = %q, want its name (the boot script passes it)", got)
	}
	if _, err := os.Stat(filepath.Join(b.standby, ".understudy-clone")); !os.IsNotExist(err) {
		t.Fatalf("staging directory left behind: %v", err)
	}
	assertPasswordOnlyInPassfile(t, b)
}

// assertPasswordOnlyInPassfile looks for the password in every file the
// clone produced, the boot and server logs, and the server's environment.
func assertPasswordOnlyInPassfile(t *testing.T, b *bootCluster) {
	t.Helper()
	passfile := filepath.Join(b.runDir, "understudy.pgpass")
	st, err := os.Stat(passfile)
	if err != nil {
		t.Fatalf("passfile: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("passfile mode %v, want 0600", st.Mode().Perm())
	}
	escaped := strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(testPassword)
	if d, _ := os.ReadFile(passfile); !bytes.Contains(d, []byte(escaped)) {
		t.Errorf("passfile does not hold the escaped password: %q", d)
	}
	found := []string{}
	filepath.WalkDir(b.env.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == passfile {
			return nil
		}
		data, _ := os.ReadFile(p)
		if bytes.Contains(data, []byte(testPassword)) || bytes.Contains(data, []byte(escaped)) {
			found = append(found, p)
		}
		return nil
	})
	if len(found) > 0 {
		t.Errorf("password found outside the passfile in: %v", found)
	}
	auto, _ := os.ReadFile(filepath.Join(b.standby, "postgresql.auto.conf"))
	if !bytes.Contains(auto, []byte("passfile=")) || bytes.Contains(auto, []byte("password=")) {
		t.Errorf("primary_conninfo should name the passfile and carry no password:\n%s", auto)
	}
	pidLine, _ := os.ReadFile(filepath.Join(b.standby, "postmaster.pid"))
	pid := strings.SplitN(string(pidLine), "\n", 2)[0]
	environ, err := os.ReadFile("/proc/" + pid + "/environ")
	if err != nil {
		t.Fatalf("reading the standby server's environment: %v", err)
	}
	if bytes.Contains(environ, []byte(testPassword)) {
		t.Errorf("the standby server (pid %s) has the password in its environment", pid)
	}
}

func TestBootResumesAfterCloneIsKilled(t *testing.T) {
	b := newBootCluster(t)
	b.startPrimary(t)
	// ~100 MB of data so that a rate-limited clone is caught mid-way.
	b.env.Run("pgbench", "-i", "-q", "-s", "6", "-h", b.sockDir, "-p", fmt.Sprint(b.ports["alpha"]), "-U", "postgres", "postgres")

	proc := b.boot(t, "beta", b.standby, "UNDERSTUDY_CLONE_MAX_RATE=8M")
	stage := filepath.Join(b.standby, ".understudy-clone")
	pgtest.WaitFor(t, 60*time.Second, "the clone to be under way", func() (bool, string) {
		n := dirSize(stage)
		return n > 20<<20, fmt.Sprintf("%d bytes staged", n)
	})
	// Kill the script and pg_basebackup at once, as a container kill would.
	if err := syscall.Kill(-proc.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(b.standby, "PG_VERSION")); !os.IsNotExist(err) {
		t.Fatalf("after a killed clone PGDATA must not look like a database (PG_VERSION: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(stage, ".understudy-complete")); !os.IsNotExist(err) {
		t.Fatalf("a killed clone must not be marked complete")
	}

	b.boot(t, "beta", b.standby) // rerun, at full speed
	b.waitStreaming(t)
	if got := b.query(t, "beta", "SELECT count(*)::text FROM pgbench_accounts"); got != "600000" {
		t.Fatalf("standby has %s pgbench_accounts rows, want 600000", got)
	}
	if !strings.Contains(b.bootLog(), "cloning from alpha") {
		t.Fatalf("boot log does not show a clone:\n%s", b.bootLog())
	}
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// snapshot records every file's path, mode and content hash.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, _ := d.Info()
		h := ""
		if !d.IsDir() {
			data, _ := os.ReadFile(p)
			h = fmt.Sprintf("%x", sha256.Sum256(data))
		}
		out[p] = fmt.Sprintf("%v %s", info.Mode(), h)
		return nil
	})
	return out
}

func TestBootNeverTouchesAnExistingCluster(t *testing.T) {
	b := newBootCluster(t)
	b.startPrimary(t) // a primary is up, so a careless script would clone
	b.env.InitDB(b.standby)

	// Without standby.signal this cluster would start as a second primary:
	// the script refuses, and changes nothing.
	before := snapshot(t, b.standby)
	proc := b.boot(t, "beta", b.standby, "UNDERSTUDY_ENTRYPOINT=true")
	waitExit(t, proc)
	if proc.cmd.ProcessState.ExitCode() != 1 || !strings.Contains(b.bootLog(), "alpha is already the primary") || !strings.Contains(b.bootLog(), "understudy rejoin beta") {
		t.Fatalf("a second primary was not refused (exit %d):\n%s", proc.cmd.ProcessState.ExitCode(), b.bootLog())
	}
	if fmt.Sprint(before) != fmt.Sprint(snapshot(t, b.standby)) {
		t.Fatal("the existing cluster changed")
	}

	// As a standby (standby.signal) it is started as it is.
	sig := filepath.Join(b.standby, "standby.signal")
	if err := os.WriteFile(sig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(sig, b.env.UID(), b.env.GID())
	before = snapshot(t, b.standby)
	// The stand-in entrypoint is replaced by `true`: we only look at what
	// the script does before it hands over.
	proc = b.boot(t, "beta", b.standby, "UNDERSTUDY_ENTRYPOINT=true")
	waitExit(t, proc)
	if proc.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("boot script exit %d:\n%s", proc.cmd.ProcessState.ExitCode(), b.bootLog())
	}
	after := snapshot(t, b.standby)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("the existing cluster changed:\nbefore %v\nafter  %v", before, after)
	}
	if !strings.Contains(b.bootLog(), "holds a cluster; starting it") {
		t.Fatalf("unexpected boot log:\n%s", b.bootLog())
	}
}

func TestBootRefusesADirectoryThatIsNeitherEmptyNorACluster(t *testing.T) {
	b := newBootCluster(t)
	b.startPrimary(t)
	os.MkdirAll(b.standby, 0o700)
	os.Chown(b.standby, b.env.UID(), b.env.GID())
	keep := filepath.Join(b.standby, "base")
	os.WriteFile(keep, []byte("someone's files"), 0o600)
	before := snapshot(t, b.standby)

	proc := b.boot(t, "beta", b.standby, "UNDERSTUDY_ENTRYPOINT=true")
	waitExit(t, proc)
	if proc.cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %d:\n%s", proc.cmd.ProcessState.ExitCode(), b.bootLog())
	}
	if fmt.Sprint(before) != fmt.Sprint(snapshot(t, b.standby)) {
		t.Fatal("the directory was changed")
	}
	if !strings.Contains(b.bootLog(), "neither a database nor empty") {
		t.Fatalf("unexpected boot log:\n%s", b.bootLog())
	}
}

func TestBootInitialPrimaryInitialisesWhenNoPeerRuns(t *testing.T) {
	b := newBootCluster(t)
	b.boot(t, "alpha", b.primary)
	pgtest.WaitFor(t, 60*time.Second, "alpha to start as a new primary", func() (bool, string) {
		s := b.query(t, "alpha", "SELECT pg_is_in_recovery()::text")
		return s == "false", s + "\n" + b.bootLog()
	})
	// Fresh clusters on 13-17 get checksums so pg_rewind can work later.
	if got := b.query(t, "alpha", "SHOW data_checksums"); got != "on" {
		t.Fatalf("data_checksums = %s, want on", got)
	}
	// The first-boot role script creates the role from the passfile.
	script := filepath.Join(b.confDir, "role.sh")
	os.WriteFile(script, []byte(pgconf.RoleScript(b.c)), 0o755)
	c := b.env.Command("/bin/sh", script)
	c.Env = append(c.Env, "UNDERSTUDY_RUN_DIR="+b.runDir, "PGHOST="+b.sockDir, fmt.Sprintf("PGPORT=%d", b.ports["alpha"]))
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("role script: %v\n%s", err, out)
	}
	// A standby can now clone with that password.
	b.boot(t, "beta", b.standby)
	b.waitStreaming(t)
	assertPasswordOnlyInPassfile(t, b)
}

func TestBootStandbyWaitsWhileNoPrimaryRuns(t *testing.T) {
	b := newBootCluster(t)
	proc := b.boot(t, "beta", b.standby)
	time.Sleep(3 * time.Second)
	if proc.exited() {
		t.Fatalf("the standby's boot script exited instead of waiting:\n%s", b.bootLog())
	}
	if _, err := os.Stat(filepath.Join(b.standby, "PG_VERSION")); !os.IsNotExist(err) {
		t.Fatal("a standby without a primary must not initialise a cluster of its own")
	}
	if !strings.Contains(b.bootLog(), "waiting for a primary") {
		t.Fatalf("unexpected boot log:\n%s", b.bootLog())
	}
	// Once the primary is up, the waiting standby clones from it.
	b.startPrimary(t)
	b.waitStreaming(t)
}

func waitExit(t *testing.T, p *bootProc) {
	t.Helper()
	pgtest.WaitFor(t, 30*time.Second, "the boot script to exit", func() (bool, string) {
		return p.exited(), "running"
	})
}

// With pg_stat_statements preloaded (a common cmd), the first-boot role
// script's statement, which carries the password, is kept nowhere:
// not in pg_stat_statements, not in its query-text file, not in the log.
func TestRoleScriptLeavesNoPasswordInStatementStatistics(t *testing.T) {
	e := pgtest.New(t)
	data, run := e.Dir("pgss"), e.Dir("run")
	e.InitDB(data)
	port := pgtest.FreePort(t)
	e.Start(data, fmt.Sprintf("-c port=%d -c listen_addresses='' -c unix_socket_directories=%s -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c log_statement=all", port, data))
	psql := func(sql string) string {
		t.Helper()
		return strings.TrimSpace(e.Run("psql", "-XAtq", "-h", data, "-p", fmt.Sprint(port), "-U", "postgres", "-d", "postgres", "-c", sql))
	}
	psql("CREATE EXTENSION pg_stat_statements")
	c := pgconf.Cluster{ReplUser: "replicator"}
	pass := filepath.Join(run, "understudy.pgpass")
	os.WriteFile(pass, []byte("*:*:*:replicator:"+testPassword+"\n"), 0o600)
	os.Chown(pass, e.UID(), e.GID())
	script := filepath.Join(run, "role.sh")
	os.WriteFile(script, []byte(pgconf.RoleScript(c)), 0o755)
	cmd := e.Command("/bin/sh", script)
	cmd.Env = append(cmd.Env, "UNDERSTUDY_RUN_DIR="+run, "PGHOST="+data, fmt.Sprintf("PGPORT=%d", port))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("role script: %v\n%s", err, out)
	}
	if got := psql("SELECT count(*) FROM pg_roles WHERE rolname = 'replicator'"); got != "1" {
		t.Fatalf("the role was not created (%s)", got)
	}
	if got := psql("SELECT count(*) FROM pg_stat_statements WHERE query ILIKE '%CREATE ROLE%'"); got != "0" {
		t.Errorf("pg_stat_statements recorded the CREATE ROLE statement (%s rows)", got)
	}
	psql("SELECT pg_stat_statements_reset()") // flushes nothing, but the text file must already be clean
	for _, f := range []string{filepath.Join(data, "pg_stat_tmp", "pgss_query_texts.stat"), filepath.Join(data, "..", "pgss.log")} {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(testPassword)) {
			t.Errorf("%s holds the password", f)
		}
	}
}

// With automatic failover on, a node that holds a cluster starts
// read-only even when it was a primary (no standby.signal): only its
// agent, holding the leader lease, makes it writable. Without failover
// the same node starts writable, as before.
func TestBootReadOnlyWithFailover(t *testing.T) {
	b := newBootCluster(t)
	b.env.InitDB(b.primary) // a former primary: a cluster, no standby.signal
	c := b.c
	c.MonitorUser = "understudy_monitor"
	c.Failover = &pgconf.Failover{Token: "t", Witness: "app", Members: []pgconf.FailoverMember{
		{Name: "alpha", Addr: "10.211.0.1"}, {Name: "beta", Addr: "10.211.0.2"}, {Name: "app", Addr: "10.211.0.3"}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(pgconf.Boot(b.c), "READ_ONLY") || !strings.Contains(pgconf.Boot(c), "READ_ONLY=yes") {
		t.Fatal("the boot script's read-only switch does not follow the failover setting")
	}
	if err := os.WriteFile(b.script, []byte(pgconf.Boot(c)), 0o755); err != nil {
		t.Fatal(err)
	}
	b.boot(t, "alpha", b.primary)
	pgtest.WaitFor(t, 60*time.Second, "alpha to start", func() (bool, string) {
		s := b.query(t, "alpha", "SELECT pg_is_in_recovery()::text")
		return !strings.HasPrefix(s, "error"), s + "\n" + b.bootLog()
	})
	if got := b.query(t, "alpha", "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Fatalf("with failover on, a former primary started writable (pg_is_in_recovery %s):\n%s", got, b.bootLog())
	}
	st, err := os.Stat(filepath.Join(b.primary, "standby.signal"))
	if err != nil {
		t.Fatalf("no standby.signal: %v", err)
	}
	if s, ok := st.Sys().(*syscall.Stat_t); ok && int(s.Uid) != b.env.UID() {
		t.Errorf("standby.signal is owned by uid %d, not the server's %d", s.Uid, b.env.UID())
	}
	if !strings.Contains(b.bootLog(), "automatic failover is on: starting read-only") {
		t.Errorf("the boot log does not say why it starts read-only:\n%s", b.bootLog())
	}
}

func TestFailoverModelValidates(t *testing.T) {
	base := pgconf.Cluster{Nodes: []pgconf.Node{{Name: "db", Addr: "10.0.0.1", Port: 5432}, {Name: "db-replica", Addr: "10.0.0.2", Port: 5432}},
		InitialPrimary: "db", Major: 16, ReplUser: "replicator", MonitorUser: "understudy_monitor"}
	ok := &pgconf.Failover{Token: "t", Witness: "app", Members: []pgconf.FailoverMember{{Name: "db", Addr: "10.0.0.1"}, {Name: "db-replica", Addr: "10.0.0.2"}, {Name: "app", Addr: "10.0.0.3"}}}
	c := base
	c.Failover = ok
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*pgconf.Cluster){
		"no monitor":      func(c *pgconf.Cluster) { c.MonitorUser = "" },
		"witness missing": func(c *pgconf.Cluster) { f := *ok; f.Members = f.Members[:2]; c.Failover = &f },
		"bad address": func(c *pgconf.Cluster) {
			f := *ok
			f.Members = []pgconf.FailoverMember{f.Members[0], f.Members[1], {Name: "app", Addr: "app.example"}}
			c.Failover = &f
		},
		"no token": func(c *pgconf.Cluster) { f := *ok; f.Token = ""; c.Failover = &f },
	} {
		c := base
		c.Failover = ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
