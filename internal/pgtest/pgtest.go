// Package pgtest starts real PostgreSQL servers for tests: Debian's
// postgresql binaries, in temporary directories, as the postgres user when
// the test runs as root (postgres refuses to run as root). Servers are
// stopped with pg_ctl and directories removed when the test ends, pass or fail.
package pgtest

import (
	"bytes"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/lab"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BinDir finds PostgreSQL's binaries the way the lab does.
func BinDir() (string, error) { return lab.BinDir() }

// Env is the test's PostgreSQL environment.
type Env struct {
	T     testing.TB
	Bin   string
	Root  string // a directory the postgres user can use
	cred  *syscall.Credential
	uid   int
	gid   int
	mu    sync.Mutex
	stops []func()
}

// New prepares an environment, skipping the test when PostgreSQL is missing.
func New(t testing.TB) *Env {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		t.Skip(err.Error())
	}
	root, err := os.MkdirTemp("", "understudy-test-")
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{T: t, Bin: bin, Root: root, uid: os.Getuid(), gid: os.Getgid()}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(root)
			t.Skip("running as root and there is no postgres user to run PostgreSQL as (install your distribution's PostgreSQL: sudo apt-get install postgresql)")
		}
		e.uid, _ = strconv.Atoi(u.Uid)
		e.gid, _ = strconv.Atoi(u.Gid)
		e.cred = &syscall.Credential{Uid: uint32(e.uid), Gid: uint32(e.gid)}
		os.Chmod(root, 0o755)
		os.Chown(root, e.uid, e.gid)
	}
	t.Cleanup(func() {
		e.mu.Lock()
		stops := e.stops
		e.mu.Unlock()
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		if !t.Failed() || os.Getenv("UNDERSTUDY_KEEP_TEST_DIRS") == "" {
			os.RemoveAll(root)
		}
	})
	return e
}

// Cred is the credential processes run under (nil: the test's own).
func (e *Env) Cred() *syscall.Credential { return e.cred }

// UID and GID of the PostgreSQL user.
func (e *Env) UID() int { return e.uid }
func (e *Env) GID() int { return e.gid }

// Dir makes a directory under Root owned by the PostgreSQL user.
func (e *Env) Dir(name string) string {
	d := filepath.Join(e.Root, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		e.T.Fatal(err)
	}
	os.Chown(d, e.uid, e.gid)
	return d
}

// Command builds a command that runs as the PostgreSQL user with the
// binaries first on PATH.
func (e *Env) Command(name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), "PATH="+e.Bin+":"+os.Getenv("PATH"), "HOME="+e.Root, "PGCONNECT_TIMEOUT=5")
	c.Dir = e.Root
	if e.cred != nil {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred}
	}
	return c
}

// Run runs a PostgreSQL tool and fails the test on error.
func (e *Env) Run(name string, args ...string) string {
	e.T.Helper()
	c := e.Command(filepath.Join(e.Bin, name), args...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		e.T.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort(t testing.TB) int {
	ports, err := netutil.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// InitDB creates a cluster in dir with checksums.
func (e *Env) InitDB(dir string) {
	e.T.Helper()
	e.Run("initdb", "-D", dir, "-U", "postgres", "--auth=trust", "--data-checksums", "-E", "UTF8", "--locale=C")
}

// OnCleanup registers a stop action that runs before the directories go.
func (e *Env) OnCleanup(f func()) {
	e.mu.Lock()
	e.stops = append(e.stops, f)
	e.mu.Unlock()
}

// Start starts a cluster with pg_ctl and registers its stop. Extra server
// options go in opts (e.g. "-c port=5555").
func (e *Env) Start(dir string, opts string) {
	e.T.Helper()
	logf := filepath.Join(dir, "..", filepath.Base(dir)+".log")
	e.Run("pg_ctl", "-D", dir, "-l", logf, "-w", "-t", "60", "-o", opts, "start")
	e.OnCleanup(func() { e.Stop(dir) })
}

// Stop stops a cluster started by this test (fast mode), if it runs.
func (e *Env) Stop(dir string) {
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err != nil {
		return
	}
	c := e.Command(filepath.Join(e.Bin, "pg_ctl"), "-D", dir, "-m", "fast", "-w", "-t", "60", "stop")
	c.Run()
}

// WaitFor polls cond until it is true or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
}
