package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/lab"
)

// The backup commands as a user runs them, from the built binary: lab up
// --backup (storage and agent in the background), backup, backups --json,
// restore drill with a check query, refused restores over a node's data and
// into a running node, status
// and check with the backup section, and lab down stopping everything.
func TestBackupCommandsOnALab(t *testing.T) {
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	root, err := os.MkdirTemp("", "understudy-clitest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755) // the servers run as postgres when root
	t.Cleanup(func() { os.RemoveAll(root) })
	bin := filepath.Join(root, "understudy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(root, "lab")
	cli := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := cli("lab", "up", "--dir", dir, "--backup")
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "lab.json")); err != nil {
			return // the test took it down
		}
		if out, code := cli("lab", "down", "--dir", dir); code != 0 {
			t.Errorf("lab down: %s", out)
		}
	})
	if code != 0 || !strings.Contains(out, "first base backup") {
		t.Fatalf("lab up --backup (exit %d):\n%s", code, out)
	}
	if l, err := lab.Open(dir); err != nil {
		t.Fatal(err)
	} else {
		labtest.WantMajor(t, l)
	}
	if out, code := cli("backup", "--lab", dir); code != 0 || !strings.Contains(out, "✓ base backup") || !strings.Contains(out, "from db-replica") {
		t.Errorf("backup (exit %d):\n%s", code, out)
	}
	out, code = cli("backups", "--lab", dir, "--json")
	var listed struct {
		Bases  []struct{ ID string } `json:"base_backups"`
		Window struct{ OK bool }     `json:"recovery_window"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed.Bases) != 2 || !listed.Window.OK {
		t.Errorf("backups --json (exit %d):\n%s", code, out)
	}
	out, code = cli("restore", "drill", "--lab", dir, "--check", "SELECT count(*) FROM pg_class")
	if code != 0 || !strings.Contains(out, "passed") || !strings.Contains(out, "check \"SELECT count(*) FROM pg_class\" →") {
		t.Errorf("restore drill (exit %d):\n%s", code, out)
	}
	out, code = cli("restore", "drill", "--lab", dir, "--check", "SELECT * FROM no_such_table")
	if code != 1 || !strings.Contains(out, "FAILED") {
		t.Errorf("a drill whose check fails should exit 1 (exit %d):\n%s", code, out)
	}
	out, code = cli("restore", "--lab", dir, "--to", "latest", "--into", filepath.Join(dir, "data", "db"))
	if code == 0 || !strings.Contains(out, "holds a PostgreSQL cluster") {
		t.Errorf("restore over a node (exit %d):\n%s", code, out)
	}
	out, code = cli("restore", "--lab", dir, "--to", "latest", "--into", "db")
	if code == 0 || !strings.Contains(out, "db is running") || !strings.Contains(out, "restore --into DIR") {
		t.Errorf("restore into a running node (exit %d):\n%s", code, out)
	}
	out, code = cli("status", "--lab", dir)
	if code != 0 || !strings.Contains(out, "backups in http://127.0.0.1:") || !strings.Contains(out, "recovery window:") || !strings.Contains(out, "last drill:") {
		t.Errorf("status (exit %d):\n%s", code, out)
	}
	out, code = cli("check", "--lab", dir)
	if !strings.Contains(out, "CRITICAL backup-drill") {
		t.Errorf("check after a failed drill should say so (exit %d):\n%s", code, out)
	}
	if code != 2 {
		t.Errorf("check exit %d, want 2 (critical)", code)
	}
	// The lab's cluster is lost (both nodes down, db's data gone): the
	// backups bring it back into db, which starts as the primary, and
	// db-replica rejoins it.
	ctx := context.Background()
	l, err := lab.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := l.Conn(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE dr AS SELECT generate_series(1, 321) AS id"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	if out, code := cli("restore", "drill", "--lab", dir); code != 0 { // it waits until the archive holds the table
		t.Fatalf("drill before the loss (exit %d):\n%s", code, out)
	}
	for _, n := range []string{"db-replica", "db"} {
		if err := l.Stop(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(l.DataDir("db"), l.DataDir("db")+".lost"); err != nil {
		t.Fatal(err)
	}
	out, code = cli("restore", "--lab", dir, "--to", "latest", "--into", "db")
	if code != 0 || !strings.Contains(out, "db runs the restored data as the primary") || !strings.Contains(out, "understudy rejoin db-replica") {
		t.Fatalf("restore --into db (exit %d):\n%s", code, out)
	}
	if out, code := cli("rejoin", "--lab", dir, "db-replica"); code != 0 {
		t.Fatalf("rejoin db-replica (exit %d):\n%s", code, out)
	}
	for _, n := range []string{"db", "db-replica"} {
		c, err := l.Conn(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		var got int
		err = c.QueryRow(ctx, "SELECT count(*) FROM dr").Scan(&got)
		c.Close(ctx)
		if err != nil || got != 321 {
			t.Errorf("%s after the restore and rejoin: %d rows of dr (%v), want 321", n, got, err)
		}
	}
	if out, code := cli("lab", "down", "--dir", dir); code != 0 {
		t.Fatalf("lab down: %s", out)
	}
	for _, svc := range []string{"agent", "storage"} {
		if _, err := os.Stat(filepath.Join(dir, "run", svc+".pid")); err == nil {
			t.Errorf("the %s is still recorded as running", svc)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("lab down left %s", dir)
	}
}

// Role changes never wait on the backup storage: with the lab's S3 server
// frozen (SIGSTOP), a switchover completes and moves the backup slot, and
// after the primary is killed an emergency promote completes; both from the
// built binary, as a user runs them.
func TestRoleCommandsWithTheStorageFrozen(t *testing.T) {
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	root, err := os.MkdirTemp("", "understudy-clitest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o755) // the servers run as postgres when root
	t.Cleanup(func() { os.RemoveAll(root) })
	bin := filepath.Join(root, "understudy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(root, "lab")
	// Each command gets 90 s; a role change that waited on the storage
	// would wait for ever.
	cli := func(args ...string) (string, int, time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		start := time.Now()
		out, _ := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Errorf("%s did not end within 90 s:\n%s", strings.Join(args, " "), out)
		}
		return string(out), cmd.ProcessState.ExitCode(), time.Since(start)
	}
	out, code, _ := cli("lab", "up", "--dir", dir, "--backup")
	t.Cleanup(func() {
		if out, code, _ := cli("lab", "down", "--dir", dir); code != 0 {
			t.Errorf("lab down: %s", out)
		}
	})
	if code != 0 {
		t.Fatalf("lab up --backup (exit %d):\n%s", code, out)
	}
	// The storage server is the lab's service (its PID file in run/, its
	// argv naming the lab's directory): only that process is stopped.
	b, err := os.ReadFile(filepath.Join(dir, "run", "storage.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); pid <= 0 || !strings.Contains(string(cmdline), dir) {
		t.Fatalf("run/storage.pid names %d, not the lab's storage server", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })

	out, code, took := cli("switchover", "db-replica", "--lab", dir)
	if code != 0 || !strings.Contains(out, "backup slot understudy_backup moved from db-replica to db") {
		t.Fatalf("switchover with the storage frozen (exit %d, %.1f s):\n%s", code, took.Seconds(), out)
	}
	t.Logf("switchover with the storage frozen: %.2f s", took.Seconds())

	l, err := lab.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Kill("db-replica"); err != nil {
		t.Fatal(err)
	}
	out, code, took = cli("promote", "db", "--lab", dir)
	if code != 0 || !strings.Contains(out, "db promoted") {
		t.Fatalf("promote with the storage frozen and the primary killed (exit %d, %.1f s):\n%s", code, took.Seconds(), out)
	}
	t.Logf("promote with the storage frozen: %.2f s", took.Seconds())
}
