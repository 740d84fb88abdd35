package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Every command ends promptly on SIGTERM, wherever it is: here while a
// secret's password-manager command hangs (status resolves POSTGRES_PASSWORD
// before it connects). The command is killed with understudy, and the exit
// says it was interrupted.
func TestStatusEndsPromptlyOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "understudy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	app := filepath.Join(dir, "app")
	src, err := os.ReadFile(filepath.Join("..", "..", "testdata", "fixtures", "guide-teamyap", "config", "deploy.yml"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(app, "config"), 0o755)
	os.MkdirAll(filepath.Join(app, ".kamal"), 0o755)
	os.WriteFile(filepath.Join(app, "config", "deploy.yml"), src, 0o644)
	os.WriteFile(filepath.Join(app, ".kamal", "secrets"), []byte("POSTGRES_DB=x\nPOSTGRES_USER=x\nPOSTGRES_PASSWORD=$(sleep 30)\n"), 0o644)
	if out, code := runCLI(t, "init", "--app", app, "--replica-host", "192.0.2.5", "--replica-ip", "10.0.1.3"); code != 0 {
		t.Fatalf("init: %s", out)
	}
	os.WriteFile(filepath.Join(app, ".kamal", "secrets"), []byte("POSTGRES_DB=x\nPOSTGRES_USER=x\nPOSTGRES_PASSWORD=$(sleep 30)\nREPLICATION_PASSWORD=$(sleep 30)\n"), 0o644)
	cmd := exec.Command(bin, "status", "--app", app)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("status still running 5 s after SIGTERM (it would have waited for the 30 s command)\n%s", out.String())
	}
	t.Logf("ended %s after SIGTERM: %s", time.Since(sent).Round(time.Millisecond), strings.TrimSpace(out.String()))
	if cmd.ProcessState.ExitCode() == 0 {
		t.Errorf("an interrupted status exited 0")
	}
}
