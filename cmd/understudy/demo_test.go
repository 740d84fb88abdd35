package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/lab"
)

// The README's demo, run for real: two PostgreSQL servers, clone, stream,
// canary, read-only proof, status, and nothing left behind.
func TestDemoRunsAndCleansUp(t *testing.T) {
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "understudy-lab-*"))
	// The built binary, as `go run` runs it: the failover step's agents are
	// its background processes.
	b, err := exec.Command(buildCLI(t), "demo").CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, w := range []string{"running init again would change 0", "is streaming", "was readable on db-replica", "apply again: 0 changes", "read-only transaction", "db-replica streaming", "the copy has all 5000 orders",
		"understudy switchover db-replica: the app's writes paused", "then went to db-replica", "then went to db;", "missing from db",
		"db's server dies", "the app's first write on db-replica", "PostgreSQL boots read-only, and its agent rejoins it as db-replica's standby", "missing from db-replica"} {
		if !strings.Contains(out, w) {
			t.Errorf("demo output lacks %q:\n%s", w, out)
		}
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "understudy-lab-*"))
	if len(after) != len(before) {
		t.Errorf("demo left directories behind: %v", after)
	}
}

// buildCLI builds understudy for tests that run it as a user does (the
// lab's background services run this executable).
func buildCLI(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "understudy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// withoutGo runs the built understudy as on a machine without Go and
// without versitygw: a private mount namespace hides /usr/local/go and the
// tool cache, and PATH has neither.
func withoutGo(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: hides Go in a mount namespace of its own")
	}
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	os.MkdirAll(lab.ToolCache(), 0o755)
	script := `mount -t tmpfs none /usr/local/go && mount -t tmpfs none "$1" && shift && exec "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", lab.ToolCache(), bin}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + t.TempDir(), "TMPDIR=" + os.TempDir()}
	if v := os.Getenv("UNDERSTUDY_PG_BINDIR"); v != "" {
		cmd.Env = append(cmd.Env, "UNDERSTUDY_PG_BINDIR="+v)
	}
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

// Issue 18: on a machine without Go, demo said how to get the lab's S3
// server only as "fork/exec /usr/local/go/bin/go: no such file or
// directory" at its last step. It says it before step 1, runs steps 1 to
// 7, and skips 8; `lab up --backup` refuses before creating anything.
func TestDemoWithoutGo(t *testing.T) {
	bin := buildCLI(t)
	out, code := withoutGo(t, bin, "demo")
	if code != 0 {
		t.Fatalf("demo without Go: exit %d\n%s", code, out)
	}
	note, step1 := strings.Index(out, "versitygw"), strings.Index(out, "1. plan")
	if note < 0 || step1 < 0 || note > step1 || !strings.Contains(out, "https://github.com/versity/versitygw/releases") || !strings.Contains(out, "UNDERSTUDY_VERSITYGW") {
		t.Errorf("the note on the S3 server is not before step 1:\n%s", out)
	}
	for _, w := range []string{"is streaming", "was readable on db-replica", "7. check", "8. router:", "9. backups: skipped"} {
		if !strings.Contains(out, w) {
			t.Errorf("demo output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "fork/exec") {
		t.Errorf("demo still fails at go:\n%s", out)
	}
	dir := filepath.Join(t.TempDir(), "lab")
	out, code = withoutGo(t, bin, "lab", "up", "--backup", "--dir", dir)
	if code == 0 || !strings.Contains(out, "--backup: versitygw") || !strings.Contains(out, "no Go here") {
		t.Errorf("lab up --backup without Go: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("lab up --backup without Go left %s", dir)
	}
}

// Issue 18: `demo --keep` leaves the lab running with its backup agent
// (it used to end with the demo, and status went on saying "archiving");
// status shows a fresh report, and lab down stops the agent.
func TestDemoKeepKeepsTheAgent(t *testing.T) {
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	bin := buildCLI(t)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := run("demo", "--keep")
	m := regexp.MustCompile(`lab down --dir (\S+)`).FindStringSubmatch(out)
	if m != nil {
		t.Cleanup(func() {
			run("lab", "down", "--dir", m[1])
			os.RemoveAll(filepath.Dir(m[1]))
		})
	}
	if code != 0 || m == nil || !strings.Contains(out, "the storage and the backup agent") {
		t.Fatalf("demo --keep: exit %d\n%s", code, out)
	}
	dir := m[1]
	pidText, err := os.ReadFile(filepath.Join(dir, "run", "agent.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil || pid <= 0 || !processRuns(pid) {
		t.Fatalf("after demo --keep the agent does not run (pid file %q, %v)", pidText, err)
	}
	// The agent goes on reporting after the demo ended (its report is
	// written every few seconds; a stale one is marked by status, see
	// TestBackupTextArchivingLine).
	updated := func() time.Time {
		out, code := run("status", "--lab", dir, "--json")
		var st struct {
			Backup struct {
				Agent struct {
					Updated time.Time `json:"updated"`
				} `json:"agent"`
			} `json:"backup"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("status --json: exit %d\n%s", code, out)
		}
		return st.Backup.Agent.Updated
	}
	first := updated()
	time.Sleep(6 * time.Second)
	if next := updated(); !next.After(first) {
		t.Errorf("the agent's report did not move in 6 s after the demo (%s, then %s)", first, next)
	}
	out, code = run("status", "--lab", dir)
	if code != 0 || !strings.Contains(out, "WAL archiving: archiving") || strings.Contains(out, "STALE") {
		t.Errorf("status after demo --keep: exit %d\n%s", code, out)
	}
	if out, code := run("lab", "down", "--dir", dir); code != 0 {
		t.Fatalf("lab down: %s", out)
	}
	if processRuns(pid) {
		t.Errorf("lab down left the agent (pid %d) running", pid)
	}
}

// processRuns: the process exists and has not exited (a zombie waits for
// a parent that is no longer the demo).
func processRuns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}
