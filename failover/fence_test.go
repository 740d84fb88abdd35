package failover_test

import (
	"context"
	"fmt"
	"github.com/understudy-dev/understudy/failover"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/understudy-dev/understudy/internal/pgtest"
)

const watchdogEnv = "UNDERSTUDY_FAILOVER_TEST_WATCHDOG"

// runTestWatchdog is the watchdog process the tests start: the data
// directory in the environment, deadlines on stdin.
func runTestWatchdog(dataDir string) int {
	if err := failover.RunWatchdog(context.Background(), os.Stdin, failover.ProcessFencer{DataDir: dataDir}, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type pgNode struct {
	e    *pgtest.Env
	dir  string
	port int
}

func startPG(t *testing.T) *pgNode {
	e := pgtest.New(t)
	n := &pgNode{e: e, dir: e.Dir("data"), port: pgtest.FreePort(t)}
	e.InitDB(n.dir)
	e.Start(n.dir, fmt.Sprintf("-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", n.port))
	return n
}

func (n *pgNode) conn(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2", n.port))
}

func (n *pgNode) running() bool {
	pid, _ := failover.PostmasterPID(n.dir)
	return pid != 0 && syscall.Kill(pid, 0) == nil
}

// startWatchdog runs the watchdog in a process of its own; the returned
// writer is the agent's end of the pipe.
func startWatchdog(t *testing.T, dataDir string) (io.WriteCloser, *exec.Cmd, *strings.Builder) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), watchdogEnv+"="+dataDir)
	var log strings.Builder
	cmd.Stderr = &log
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return w, cmd, &log
}

func arm(t *testing.T, w io.Writer, in time.Duration) time.Time {
	now := time.Now()
	if _, err := io.WriteString(w, failover.WatchdogLine(now.Add(in), now, failover.Monotonic())); err != nil {
		t.Fatal(err)
	}
	return now.Add(in)
}

// A frozen agent: the watchdog, a process apart, keeps PostgreSQL up while
// the deadline moves forward, and stops it (SIGKILL, even a stopped
// PostgreSQL) once the deadline passes; the node then starts read-only.
func TestWatchdogFencesAFrozenAgentsNode(t *testing.T) {
	n := startPG(t)
	w, _, log := startWatchdog(t, n.dir)
	for range 10 { // a live agent renews
		arm(t, w, 600*time.Millisecond)
		time.Sleep(200 * time.Millisecond)
	}
	if !n.running() {
		t.Fatalf("the watchdog stopped PostgreSQL while it was re-armed: %s", log)
	}
	// The agent freezes (it sends nothing more), and PostgreSQL is frozen too.
	deadline := arm(t, w, time.Second)
	pid, _ := failover.PostmasterPID(n.dir)
	kids := failover.ChildrenOf(pid)
	for _, p := range append(kids, pid) {
		syscall.Kill(p, syscall.SIGSTOP)
	}
	time.Sleep(time.Until(deadline) - 200*time.Millisecond)
	if !n.running() {
		t.Fatal("fenced before the deadline")
	}
	pgtest.WaitFor(t, 2*time.Second, "the watchdog to stop PostgreSQL", func() (bool, string) {
		return !n.running(), "running"
	})
	late := time.Since(deadline)
	t.Logf("fenced %s after the deadline", late.Round(time.Millisecond))
	if late > 500*time.Millisecond {
		t.Fatalf("fenced %s after the deadline, past the watchdog margin", late)
	}
	// Every backend got SIGKILL too; a stopped process takes a moment to
	// be scheduled and exit (a zombie until reaped counts as gone).
	for _, p := range kids {
		pgtest.WaitFor(t, 2*time.Second, fmt.Sprintf("backend %d to end", p), func() (bool, string) {
			return !failover.Running(p), "running"
		})
	}
	for _, f := range []string{"standby.signal", failover.FenceNote} {
		if _, err := os.Stat(filepath.Join(n.dir, f)); err != nil {
			t.Fatalf("after the fence: %v", err)
		}
	}
	// Restarted, it is read-only.
	os.Remove(filepath.Join(n.dir, "postmaster.pid"))
	n.e.Start(n.dir, fmt.Sprintf("-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", n.port))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := n.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var rec bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil || !rec {
		t.Fatalf("after the fence the node started writable (in recovery: %v, %v)", rec, err)
	}
}

// The agent dies: the pipe ends, and the watchdog still fences at the
// last deadline, not before. Disarmed, it ends without fencing.
func TestWatchdogOutlivesTheAgent(t *testing.T) {
	n := startPG(t)
	w, cmd, _ := startWatchdog(t, n.dir)
	deadline := arm(t, w, 1500*time.Millisecond)
	w.Close()
	time.Sleep(time.Until(deadline) - 300*time.Millisecond)
	if !n.running() {
		t.Fatal("fenced before the deadline when the agent went away")
	}
	pgtest.WaitFor(t, 3*time.Second, "the fence at the last deadline", func() (bool, string) { return !n.running(), "running" })
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the watchdog ended with %v", err)
	}

	n2 := startPG(t)
	w2, cmd2, _ := startWatchdog(t, n2.dir)
	arm(t, w2, 500*time.Millisecond)
	io.WriteString(w2, failover.WatchdogLine(time.Time{}, time.Now(), failover.Monotonic()))
	w2.Close()
	cmd2.Wait()
	time.Sleep(time.Second)
	if !n2.running() {
		t.Fatal("a disarmed watchdog fenced when the agent went away")
	}
}

// CanFence: an agent may run failover only where it could stop its node:
// a running postmaster it can see, or none running; not a postmaster it
// cannot see (another PID namespace; here: a PID that is no process).
func TestCanFence(t *testing.T) {
	n := startPG(t)
	if err := failover.CanFence(n.dir); err != nil {
		t.Errorf("a visible running postmaster: %v", err)
	}
	dir := t.TempDir()
	if err := failover.CanFence(dir); err != nil {
		t.Errorf("a stopped node (no postmaster.pid): %v", err)
	}
	os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte("2147483000\n"+dir+"\n"), 0o600)
	if err := failover.CanFence(dir); err == nil || !strings.Contains(err.Error(), "not visible from here") {
		t.Errorf("a postmaster that is not visible: %v", err)
	}
	if err := failover.CanFence(filepath.Join(dir, "missing")); err == nil {
		t.Error("a data directory that is not there was accepted")
	}
}
