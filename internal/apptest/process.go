package apptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopGrace is how long a writer has to end after SIGTERM before it is
// killed and reported as hung.
const StopGrace = 2 * time.Second

// Writer is one writer to start: which client, under what name (the log's
// client field, the rows' client column), with what settings.
type Writer struct {
	Name     string // default: the client's name
	Client   Client
	Settings Settings
}

func (w Writer) name() string {
	if w.Name != "" {
		return w.Name
	}
	return string(w.Client)
}

// configure renders the writer's settings for a writer that finds its
// config directory (hostDir on this machine) at seenAt, writes the files
// there, and returns the environment the writer starts with.
func (w Writer) configure(hostDir, seenAt string) (map[string]string, error) {
	if err := os.MkdirAll(hostDir, 0o700); err != nil {
		return nil, err
	}
	cfg, err := w.Settings.Config(w.Client, seenAt)
	if err != nil {
		return nil, err
	}
	for name, body := range cfg.Files {
		if err := os.WriteFile(filepath.Join(hostDir, name), []byte(body), 0o600); err != nil {
			return nil, err
		}
	}
	env := map[string]string{"APPTEST_CLIENT": w.name(), "APPTEST_INTERVAL_MS": "50"}
	for k, v := range cfg.Env {
		env[k] = v
	}
	return env, nil
}

// Runner starts writers somewhere: local processes or containers.
type Runner interface {
	Start(ctx context.Context, w Writer) (Proc, error)
}

// Proc is a started writer.
type Proc interface {
	// Log is its stdout so far from byte offset from: one JSON attempt
	// per line.
	Log(ctx context.Context, from int64) ([]byte, error)
	// Stderr is the end of its diagnostics.
	Stderr(ctx context.Context) string
	// Stop sends SIGTERM and, StopGrace later, SIGKILL.
	Stop(ctx context.Context) (StopResult, error)
}

// StopResult says how a writer ended.
type StopResult struct {
	ExitedEarly bool   // it had ended before Stop
	Hung        bool   // it was killed after StopGrace
	Exit        string // its exit status in words
}

// Host is what the writers need on this machine to run as processes.
type Host struct {
	ScriptsDir   string
	PGXWriter    string
	NodeModules  string
	Interpreters map[string]string
	missing      map[Client]string
}

// Missing says why a client cannot run here ("" when it can).
func (h *Host) Missing(c Client) string { return h.missing[c] }

// PrepareHost readies the writers to run as local processes: writes the
// scripts into dir, builds the pgx writer, installs the node modules from
// the npm registry (cached), and checks each client's packages, recording
// what is missing rather than failing.
func PrepareHost(ctx context.Context, dir string, logf func(string, ...any)) (*Host, error) {
	h := &Host{ScriptsDir: filepath.Join(dir, "writers"), Interpreters: map[string]string{}, missing: map[Client]string{}}
	src, err := scripts()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(h.ScriptsDir, 0o755); err != nil {
		return nil, err
	}
	for name, b := range src {
		if err := os.WriteFile(filepath.Join(h.ScriptsDir, name), b, 0o644); err != nil {
			return nil, err
		}
	}
	if h.PGXWriter, err = BuildPGXWriter(ctx, dir); err != nil {
		h.missing[PGX] = err.Error()
	}
	// Debian's python3, whose packages these are, even when another python3 comes first on PATH.
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		h.Interpreters["python3"] = "/usr/bin/python3"
	}
	probe := func(c Client, fix string, argv ...string) {
		if p := h.Interpreters[argv[0]]; p != "" {
			argv[0] = p
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(pctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			h.missing[c] = fmt.Sprintf("%s: %s (%v: %s)", c, fix, err, strings.TrimSpace(string(out)))
		}
	}
	probe(ActiveRecord, "needs ruby, ruby-activerecord and ruby-pg (./scripts/setup-debian installs them)", "ruby", "-e", `require "active_record"; require "pg"`)
	probe(Psycopg2, "needs python3-psycopg2 (./scripts/setup-debian installs it)", "python3", "-c", "import psycopg2")
	probe(Psycopg3, "needs python3-psycopg (./scripts/setup-debian installs it)", "python3", "-c", "import psycopg")
	probe(PDO, "needs php-cli and php-pgsql (./scripts/setup-debian installs them)", "php", "-r", `exit(in_array("pgsql", PDO::getAvailableDrivers()) && function_exists("pcntl_signal") ? 0 : 1);`)
	probe(NodePostgres, "needs nodejs (./scripts/setup-debian installs it)", "node", "-e", "")
	if h.missing[NodePostgres] == "" {
		if h.NodeModules, err = NodeModules(ctx, logf); err != nil {
			h.missing[NodePostgres] = err.Error()
		}
	}
	h.missing[PostgresJS] = h.missing[NodePostgres]
	return h, nil
}

// ProcessRunner runs writers as local processes (for a lab). Each gets a
// directory under Dir for its config files and its logs.
type ProcessRunner struct {
	Host *Host
	Dir  string
}

var _ Runner = (*ProcessRunner)(nil)

// Start starts one writer. Its environment is only what the stack is told
// (no variable of this process leaks in, DATABASE_URL least of all).
func (r *ProcessRunner) Start(ctx context.Context, w Writer) (Proc, error) {
	if why := r.Host.Missing(w.Client); why != "" {
		return nil, errors.New(why)
	}
	dir := filepath.Join(r.Dir, w.name())
	env, err := w.configure(dir, dir)
	if err != nil {
		return nil, err
	}
	argv := Argv(w.Client, r.Host.ScriptsDir, r.Host.PGXWriter, r.Host.Interpreters)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "LANG=C.UTF-8"}
	if r.Host.NodeModules != "" {
		cmd.Env = append(cmd.Env, "NODE_PATH="+r.Host.NodeModules)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{logPath: filepath.Join(dir, attemptsFile), errPath: filepath.Join(dir, "stderr.log"), done: make(chan struct{})}
	out, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	errf, err := os.Create(p.errPath)
	if err != nil {
		out.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		errf.Close()
		return nil, fmt.Errorf("starting the %s writer (%s): %w", w.name(), argv[0], err)
	}
	p.pid = cmd.Process.Pid
	go func() {
		p.waitErr = cmd.Wait()
		out.Close()
		errf.Close()
		close(p.done)
	}()
	return p, nil
}

type process struct {
	pid              int
	logPath, errPath string
	done             chan struct{}
	waitErr          error
	stopOnce         sync.Once
	res              StopResult
}

func (p *process) Log(ctx context.Context, from int64) ([]byte, error) {
	return readFrom(p.logPath, from)
}

// attemptsFile is where a writer's stdout goes, in its directory.
const attemptsFile = "attempts.jsonl"

// readFrom reads a file from an offset to its end.
func readFrom(path string, from int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

func (p *process) Stderr(ctx context.Context) string {
	b, _ := os.ReadFile(p.errPath)
	return tailBytes(string(b), 2000)
}

func (p *process) Stop(ctx context.Context) (StopResult, error) {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			p.res = StopResult{ExitedEarly: true, Exit: exitWords(p.waitErr)}
			return
		default:
		}
		syscall.Kill(p.pid, syscall.SIGTERM)
		select {
		case <-p.done:
			p.res = StopResult{Exit: exitWords(p.waitErr)}
			return
		case <-time.After(StopGrace):
		}
		syscall.Kill(-p.pid, syscall.SIGKILL) // its process group: the writer and anything it started
		<-p.done
		p.res = StopResult{Hung: true, Exit: "killed after " + StopGrace.String()}
	})
	return p.res, nil
}

func exitWords(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func tailBytes(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
