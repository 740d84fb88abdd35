// Package labtest gives tests a lab of real PostgreSQL servers that is
// stopped and removed when the test ends, pass or fail.
package labtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/internal/dockertest"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
)

// Options for New.
type Options struct {
	Names  []string // default db, db-replica
	NetNS  bool     // one network namespace per node; the test is skipped when not root
	WALCap string
	Ports  []int // default: free ports
	// ContainerPaths mounts each node's files at /understudy (netns only).
	ContainerPaths bool
	Password       string // default a fixed test password
	// Backup gives the lab object storage (a real versitygw, built with
	// `go install` the first time) and a backup key; the agent is started
	// by Agent.
	Backup bool
	// Agents gives the nodes agents (started by NodeAgents), Router also a
	// router (started by Router).
	Agents, Router bool
}

// New creates a lab (nothing running) in a fresh temporary directory.
func New(t testing.TB, o Options) *lab.Lab {
	t.Helper()
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err.Error())
	}
	if o.NetNS && os.Geteuid() != 0 {
		t.Skip("needs root: this test creates network namespaces (run the tests as root, as CI does)")
	}
	if o.NetNS {
		if _, err := exec.LookPath("nsenter"); err != nil {
			t.Skip("needs nsenter (util-linux) to start servers inside network namespaces")
		}
	}
	if len(o.Names) == 0 {
		o.Names = []string{"db", "db-replica"}
	}
	root, err := os.MkdirTemp("", "understudy-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755)
	ports := o.Ports
	if ports == nil {
		ports, err = netutil.FreePorts(len(o.Names))
		if err != nil {
			t.Fatal(err)
		}
	}
	if o.Password == "" {
		o.Password = "lab-test-password-" + strings.Repeat("x", 8)
	}
	ctx := context.Background()
	l, err := lab.Create(ctx, filepath.Join(root, "lab"), lab.Config{Names: o.Names, Ports: ports, NetNS: o.NetNS,
		Password: o.Password, WALCap: o.WALCap, ContainerPaths: o.ContainerPaths,
		Agents: o.Agents || o.Router, MonitorPassword: "lab-test-monitor-password", Router: o.Router})
	if err != nil {
		os.RemoveAll(root)
		t.Fatal(err)
	}
	WantMajor(t, l)
	if o.Backup {
		enableBackup(t, l)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range append(o.Names, "agent", "storage", "router") {
				b, _ := os.ReadFile(l.LogFile(n))
				t.Logf("--- %s log (last 3000 bytes):\n%s", n, tail(string(b), 3000))
			}
		}
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
		os.RemoveAll(root)
	})
	return l
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Up creates a lab and applies it: a streaming primary and standbys.
func Up(t testing.TB, o Options) *lab.Lab {
	t.Helper()
	l := New(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true, Timeout: 2 * time.Minute}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	return l
}

// conn connects to a node for one helper call, failing the test otherwise.
func conn(t testing.TB, l *lab.Lab, node string) (context.Context, *pgx.Conn, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	c, err := l.Conn(ctx, node)
	if err != nil {
		cancel()
		t.Fatalf("connecting to %s: %v", node, err)
	}
	return ctx, c, func() { c.Close(ctx); cancel() }
}

// Exec runs SQL on a node as the superuser.
func Exec(t testing.TB, l *lab.Lab, node string, sqls ...string) {
	t.Helper()
	ctx, c, done := conn(t, l, node)
	defer done()
	for _, s := range sqls {
		if _, err := c.Exec(ctx, s); err != nil {
			t.Fatalf("%s on %s: %v", s, node, err)
		}
	}
}

// Query returns the first column of the first row as text.
func Query(t testing.TB, l *lab.Lab, node, sql string, args ...any) string {
	t.Helper()
	ctx, c, done := conn(t, l, node)
	defer done()
	var s string
	if err := c.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s on %s: %v", sql, node, err)
	}
	return s
}

// Restart stops a node cleanly, starts it and waits until it answers.
func Restart(t testing.TB, l *lab.Lab, node string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.Stop(ctx, node); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(ctx, node); err != nil {
		t.Fatal(err)
	}
	if _, err := live.WaitReady(ctx, l, node, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// Findings gathers a status and checks it.
func Findings(t testing.TB, l *lab.Lab, th live.Thresholds) []live.Finding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := live.Gather(ctx, l.Target())
	if err != nil {
		t.Fatal(err)
	}
	return live.Check(st, l.Cluster, th)
}

// Has reports whether a finding with this code and severity is about node.
func Has(fs []live.Finding, code live.FindingCode, sev live.Severity, node string) bool {
	for _, f := range fs {
		if f.Code == code && f.Severity == sev && (node == "" || f.Node == node) {
			return true
		}
	}
	return false
}

// WaitFor polls cond until it holds or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Tool runs a PostgreSQL client program against a node and fails the test on error.
func Tool(t testing.TB, l *lab.Lab, node, program string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd, err := l.Tool(ctx, node, program, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v on %s: %v\n%s", program, args, node, err, out)
	}
	return string(out)
}

// Writable lists the nodes that accept writes now (pg_is_in_recovery() false).
func Writable(l *lab.Lab) []string {
	var w []string
	for _, n := range l.Cluster.Nodes {
		// A node that answers slowly (a loaded 2-core machine running
		// several test packages at once) must not read as not writable.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := l.Conn(ctx, n.Name)
		if err == nil {
			var rec bool
			if c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec) == nil && !rec {
				w = append(w, n.Name)
			}
			c.Close(ctx)
		}
		cancel()
	}
	return w
}

// WatchWritable samples every node's pg_is_in_recovery() every few
// milliseconds until stop is called, and fails the test if any round finds
// more than one writable node. It returns the number of rounds taken.
func WatchWritable(t testing.TB, l *lab.Lab) (stop func() int) {
	t.Helper()
	done := make(chan struct{})
	result := make(chan int, 1)
	go func() {
		rounds := 0
		for {
			select {
			case <-done:
				result <- rounds
				return
			default:
			}
			writable := Writable(l)
			if len(writable) > 1 {
				t.Errorf("two writable nodes at %s: %v", time.Now().Format("15:04:05.000"), writable)
			}
			rounds++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() int { close(done); return <-result }
}

// WantMajor fails the test when UNDERSTUDY_TEST_MAJOR asks for another
// PostgreSQL major than the lab's programs are (scripts/test-majors sets
// both; a lab on the wrong major would pass for the wrong reason).
func WantMajor(t testing.TB, l *lab.Lab) {
	t.Helper()
	v := os.Getenv(dockertest.MajorEnv)
	if v == "" {
		return
	}
	if want, err := strconv.Atoi(v); err != nil || l.BinMajor != want || l.Cluster.Major != want {
		t.Fatalf("%s=%s, but the lab runs PostgreSQL %d from %s: set UNDERSTUDY_PG_BINDIR to that major's programs (scripts/test-majors does)", dockertest.MajorEnv, v, l.BinMajor, l.Bin)
	}
}
