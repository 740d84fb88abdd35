package failover

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/pgops"
)

// FenceNote is the note a fenced node keeps in PGDATA, the file the boot
// script (pgconf) and `understudy rejoin` already know.
const FenceNote = "understudy-fenced.txt"

// Fencer stops a node's writes at once.
type Fencer interface {
	Fence(ctx context.Context, reason string) error
}

var _ Fencer = ProcessFencer{}

// ProcessFencer fences a PostgreSQL whose processes this process can
// signal (the same PID namespace: a lab's agent, or an agent that shares
// the node's container): it writes standby.signal and the fence note into
// PGDATA, so any restart is read-only (the boot script says why), then
// SIGKILLs the postmaster and every backend. SIGKILL, not a shutdown
// request: it also ends processes that are stopped (SIGSTOP) or hung, and
// no backend sends another acknowledgement. What was committed is in the
// WAL; crash recovery at the next start replays it.
type ProcessFencer struct {
	DataDir string
}

// Fence does it; a PostgreSQL that is not running is fenced by the files
// alone.
func (f ProcessFencer) Fence(ctx context.Context, reason string) error {
	// The files first (a restart must be read-only), but their failure
	// never spares the processes: the agent and its watchdog may fence at
	// the same instant, and each one's atomic write can lose the other's
	// temporary file (seen: "rename ... no such file or directory").
	ferr := WriteFenceFiles(f.DataDir, reason)
	pid, err := postmasterPID(f.DataDir)
	if err != nil || pid == 0 {
		return errors.Join(ferr, err)
	}
	kids := ChildrenOf(pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping PostgreSQL (postmaster %d): %w", pid, err)
	}
	for _, k := range kids {
		syscall.Kill(k, syscall.SIGKILL)
	}
	// Done when the postmaster is gone (a zombie has exited).
	for ctx.Err() == nil && running(pid) {
		time.Sleep(5 * time.Millisecond)
	}
	return ferr
}

var _ Fencer = (*SQLFencer)(nil)

// SQLFencer fences over a superuser session it holds open (Prepare),
// for an agent that cannot signal its PostgreSQL (another container):
// pgops.FenceBySQL writes standby.signal and the fence note, then stops the
// server from inside. The session is opened ahead because a hung
// postmaster cannot fork a new backend, while an established one still
// runs.
type SQLFencer struct {
	Connect func(ctx context.Context) (*pgx.Conn, error)

	mu sync.Mutex
	c  *pgx.Conn
}

// Prepare opens the session (again, when it was lost).
func (f *SQLFencer) Prepare(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open(ctx)
}

func (f *SQLFencer) open(ctx context.Context) error {
	if f.c != nil && !f.c.IsClosed() {
		return nil
	}
	c, err := f.Connect(ctx)
	if err != nil {
		return fmt.Errorf("the fence's session: %w", err)
	}
	f.c = c
	return nil
}

// Fence stops writes; the held session ends with it.
func (f *SQLFencer) Fence(ctx context.Context, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.open(ctx); err != nil {
		return err
	}
	note := fmt.Sprintf("fenced by understudy's failover agent at %s: %s", time.Now().UTC().Format(time.RFC3339), reason)
	err := pgops.FenceBySQL(ctx, f.c, note)
	f.c.Close(context.Background())
	f.c = nil
	return err
}

// running: the process exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// WriteFenceFiles marks a data directory fenced: standby.signal (it starts
// read-only, following nobody until rejoined) and the fence note, owned
// like the directory.
func WriteFenceFiles(dataDir, reason string) error {
	st, err := os.Stat(dataDir)
	if err != nil {
		return fmt.Errorf("fencing: %w", err)
	}
	note := fmt.Sprintf("fenced by understudy's failover agent at %s: %s", time.Now().UTC().Format(time.RFC3339), reason)
	for name, body := range map[string]string{"standby.signal": "", FenceNote: note + "\n"} {
		p := filepath.Join(dataDir, name)
		if err := atomicfile.Write(p, []byte(body), 0o600); err != nil {
			return fmt.Errorf("fencing: %w", err)
		}
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			os.Chown(p, int(s.Uid), int(s.Gid))
		}
	}
	return nil
}

// postmasterPID is the running postmaster of dataDir (0 when none runs):
// postmaster.pid's first line, checked against /proc (its working
// directory is the data directory), so a reused PID is never signalled.
func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("fencing: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("fencing: %s/postmaster.pid does not start with a PID", dataDir)
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return 0, nil // not running (or not visible from here)
	}
	want, _ := filepath.EvalSymlinks(dataDir)
	if cwd != want && cwd != dataDir {
		return 0, nil // the PID now belongs to another process
	}
	return pid, nil
}

// ChildrenOf lists the processes whose parent is pid, from /proc/PID/stat
// (proc(5): the fourth field, after the command in parentheses, which may
// itself hold spaces and parentheses).
func ChildrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 {
			if pp, _ := strconv.Atoi(f[1]); pp == pid {
				kids = append(kids, p)
			}
		}
	}
	return kids
}

// The watchdog is a process apart from the agent (the agent starts it, a
// pipe between them): the agent sends it a deadline after every renewal
// (the lease's earliest expiry less WatchdogMargin), and if the deadline
// passes with no newer one, the watchdog fences the node by itself. So a
// frozen agent (SIGSTOP, a stuck loop, a starved process) cannot leave its
// PostgreSQL writable past the lease. When the agent dies, the pipe ends
// and the watchdog still fences at the last deadline, then exits.
//
// Deadlines travel as CLOCK_MONOTONIC nanoseconds, one clock for every
// process on the machine, which wall-clock changes do not move.

// Monotonic is CLOCK_MONOTONIC now.
func Monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// WatchdogLine is the line that arms (deadline in the future, as a
// time.Time from this process's clock) or disarms (zero) the watchdog.
func WatchdogLine(deadline time.Time, now time.Time, mono time.Duration) string {
	if deadline.IsZero() {
		return "disarm\n"
	}
	return fmt.Sprintf("arm %d\n", int64(mono+deadline.Sub(now)))
}

// RunWatchdog reads lines from r and fences when the armed deadline
// passes. It returns after a fence, when ctx ends, or when r ends while
// disarmed.
func RunWatchdog(ctx context.Context, r io.Reader, f Fencer, log io.Writer) error {
	var mu sync.Mutex
	var deadline time.Duration // monotonic; 0 = disarmed
	eof := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			cmd, arg, _ := strings.Cut(sc.Text(), " ")
			mu.Lock()
			switch cmd {
			case "arm":
				if n, err := strconv.ParseInt(arg, 10, 64); err == nil && n > 0 {
					deadline = time.Duration(n)
				}
			case "disarm":
				deadline = 0
			}
			mu.Unlock()
		}
		close(eof)
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-eof:
			eof = nil
			mu.Lock()
			armed := deadline != 0
			mu.Unlock()
			if !armed {
				return nil
			}
			fmt.Fprintln(log, "watchdog: the agent is gone; fencing at the last deadline unless it was disarmed")
		}
		mu.Lock()
		d := deadline
		mu.Unlock()
		if d != 0 && Monotonic() >= d {
			fmt.Fprintln(log, "watchdog: the deadline passed without a renewal: fencing")
			return f.Fence(ctx, "the watchdog's deadline passed: the agent did not renew the lease in time")
		}
	}
}

// WatchdogProc is the agent's end of its watchdog: the process (started
// from argv, the deadlines on its stdin) and started again when it ended
// (after it fenced, say), so the next deadline always has a watchdog.
type WatchdogProc struct {
	Argv []string
	Env  []string
	Log  io.Writer

	mu  sync.Mutex
	cmd *exec.Cmd
	in  io.WriteCloser
	end chan struct{}
}

// Write sends a deadline line, (re)starting the process when needed.
func (w *WatchdogProc) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd != nil {
		select {
		case <-w.end:
			w.cmd = nil
		default:
		}
	}
	if w.cmd == nil {
		cmd := exec.Command(w.Argv[0], w.Argv[1:]...)
		cmd.Env, cmd.Stderr = w.Env, w.Log
		in, err := cmd.StdinPipe()
		if err != nil {
			return 0, err
		}
		if err := cmd.Start(); err != nil {
			return 0, fmt.Errorf("starting the watchdog: %w", err)
		}
		end := make(chan struct{})
		go func() { cmd.Wait(); close(end) }()
		w.cmd, w.in, w.end = cmd, in, end
	}
	n, err := w.in.Write(p)
	if err != nil {
		w.in.Close()
		w.cmd.Process.Kill()
		w.cmd = nil
	}
	return n, err
}

// Close ends the pipe: a disarmed watchdog exits, an armed one fences at
// its deadline and exits.
func (w *WatchdogProc) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil {
		return nil
	}
	w.in.Close()
	<-w.end
	w.cmd = nil
	return nil
}

// Pid of the running watchdog (0 none).
func (w *WatchdogProc) Pid() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cmd == nil {
		return 0
	}
	return w.cmd.Process.Pid
}
