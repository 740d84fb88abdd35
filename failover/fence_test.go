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

// SQLFencer: the fence from inside the server, over a session opened
// ahead. A running server stops, and restarts read-only (standby.signal,
// the fence note); a server whose postmaster is stopped (SIGSTOP) has
// every backend killed, so an open session takes no more writes, and the
// postmaster exits once it runs again.
func TestSQLFencer(t *testing.T) {
	n := startPG(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := &failover.SQLFencer{Connect: n.conn}
	if err := f.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Fence(ctx, "test: a running server"); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 10*time.Second, "the server to stop", func() (bool, string) { return !n.running(), "running" })
	for _, name := range []string{"standby.signal", failover.FenceNote} {
		if _, err := os.Stat(filepath.Join(n.dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	os.Remove(filepath.Join(n.dir, "postmaster.pid")) // left by the immediate shutdown
	n.e.Start(n.dir, fmt.Sprintf("-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", n.port))
	c, err := n.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rec bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil || !rec {
		t.Fatalf("after the fence the server restarted writable (in recovery: %v, %v)", rec, err)
	}

	// The postmaster stopped: the fence's session, opened before, still runs.
	f2 := &failover.SQLFencer{Connect: n.conn}
	if err := f2.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	pid, _ := failover.PostmasterPID(n.dir)
	kids := failover.ChildrenOf(pid)
	if len(kids) < 3 {
		t.Fatalf("the server has %d processes besides its postmaster", len(kids))
	}
	syscall.Kill(pid, syscall.SIGSTOP)
	defer syscall.Kill(pid, syscall.SIGCONT)
	if err := f2.Fence(ctx, "test: a stopped postmaster"); err != nil {
		t.Fatal(err)
	}
	pgtest.WaitFor(t, 10*time.Second, "the open session to end", func() (bool, string) {
		return c.Ping(ctx) != nil, "still answers"
	})
	pgtest.WaitFor(t, 5*time.Second, "every process but the stopped postmaster to end", func() (bool, string) {
		alive := 0
		for _, k := range kids {
			if failover.Running(k) {
				alive++
			}
		}
		return alive == 0, fmt.Sprintf("%d of %d alive", alive, len(kids))
	})
	syscall.Kill(pid, syscall.SIGCONT)
	pgtest.WaitFor(t, 15*time.Second, "the postmaster to exit once continued", func() (bool, string) { return !failover.Running(pid), "running" })
}
