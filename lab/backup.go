package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/netutil"
)

// The lab's object storage is versitygw (the Versity S3 Gateway, Apache
// 2.0, run in production in front of POSIX file systems): a single Go
// binary serving a directory over the S3 API, installed from the Go module
// proxy. See docs/backups.md for why this one.
const (
	VersityGWModule  = "github.com/versity/versitygw/cmd/versitygw"
	VersityGWVersion = "v1.8.0"
)

// ToolCache is where tools built on this machine are kept: beside the test
// image cache for root, in the user's cache directory otherwise.
func ToolCache() string {
	if os.Geteuid() == 0 {
		return "/var/cache/understudy-test/bin"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "understudy", "bin")
	}
	return filepath.Join(os.TempDir(), "understudy-tools")
}

// LabBackup is the lab's backup setup in lab.json: where its storage
// listens, the bucket, the retention. Its secrets are files in run/.
type LabBackup struct {
	Port   int           `json:"storage_port"`
	Bucket string        `json:"bucket"`
	Prefix string        `json:"prefix,omitempty"`
	Policy backup.Policy `json:"retention"`
}

const (
	backupAccessFile = "run/backup-s3-access-key"
	backupSecretFile = "run/backup-s3-secret-key"
	backupKeyFile    = "run/backup-encryption-key"
)

// FindVersityGW finds the storage server: UNDERSTUDY_VERSITYGW, PATH, or
// the tool cache that BuildVersityGW fills.
func FindVersityGW() (string, error) {
	if p := os.Getenv("UNDERSTUDY_VERSITYGW"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	p := filepath.Join(ToolCache(), "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("versitygw (the lab's S3-compatible storage) is not installed: run ./scripts/setup-debian, or `GOBIN=%s go install %s@%s`", ToolCache(), VersityGWModule, VersityGWVersion)
}

// FindGo is the go command, which builds versitygw: PATH, else Go's
// default install directory.
func FindGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", fmt.Errorf("versitygw (the lab's S3-compatible storage) is not installed, and there is no Go here to build it: put a release binary of versitygw %s (https://github.com/versity/versitygw/releases) on PATH or name it in UNDERSTUDY_VERSITYGW, or install Go (https://go.dev/dl/) and understudy builds it once", VersityGWVersion)
}

// StorageReady says whether the lab's storage can run on this machine:
// versitygw is installed, or Go is here to build it (build is then true).
// The error, when neither, says how to get it.
func StorageReady() (build bool, err error) {
	if _, err := FindVersityGW(); err == nil {
		return false, nil
	}
	if _, err := FindGo(); err != nil {
		return false, err
	}
	return true, nil
}

// BuildVersityGW installs versitygw into the tool cache with `go install`
// (about a minute the first time on two cores).
func BuildVersityGW(ctx context.Context, log io.Writer) (string, error) {
	if p, err := FindVersityGW(); err == nil {
		return p, nil
	}
	dir := ToolCache()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Test packages run as parallel processes: one builds, the others wait.
	lock, err := os.OpenFile(filepath.Join(dir, ".versitygw.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if p, err := FindVersityGW(); err == nil {
		return p, nil // built by another process meanwhile
	}
	gobin, err := FindGo()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, gobin, "install", VersityGWModule+"@"+VersityGWVersion)
	cmd.Dir = os.TempDir() // outside any module: go install pkg@version needs none
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w", VersityGWModule, VersityGWVersion, err)
	}
	return filepath.Join(dir, "versitygw"), nil
}

// EnableBackup gives a lab object storage and a backup key (the lab's
// secrets, in run/). Nothing is started.
func (l *Lab) EnableBackup(port int) error {
	if l.state.Backup != nil {
		return nil
	}
	key, err := backup.GenerateKey()
	if err != nil {
		return err
	}
	for f, v := range map[string]string{backupAccessFile: "lab" + randHex(6), backupSecretFile: randHex(20), backupKeyFile: key.String()} {
		if err := atomicfile.Write(filepath.Join(l.Dir, f), []byte(v), 0o600); err != nil {
			return fmt.Errorf("storing the lab's backup secrets: %w", err)
		}
	}
	l.state.Backup = &LabBackup{Port: port, Bucket: "understudy-lab", Prefix: "lab", Policy: backup.Policy{KeepBases: 2}}
	return l.saveState()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Backup is the lab's backup setup, or nil.
func (l *Lab) Backup() *LabBackup { return l.state.Backup }

func (l *Lab) secret(f string) (string, error) {
	b, err := os.ReadFile(filepath.Join(l.Dir, f))
	if err != nil {
		return "", fmt.Errorf("reading the lab's backup secret %s: %w", f, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// BackupCredentials are the lab storage's access key and secret (tests
// that run the storage themselves, behind a fault proxy, need them).
func (l *Lab) BackupCredentials() (accessKey, secretKey string, err error) {
	if accessKey, err = l.secret(backupAccessFile); err != nil {
		return "", "", err
	}
	secretKey, err = l.secret(backupSecretFile)
	return accessKey, secretKey, err
}

// S3Config is where the lab's bucket is.
func (l *Lab) S3Config() backup.S3Config {
	b := l.state.Backup
	return backup.S3Config{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", b.Port), Region: "us-east-1", Bucket: b.Bucket, Prefix: b.Prefix, PathStyle: true}
}

// BackupStore opens the lab's bucket.
func (l *Lab) BackupStore() (*backup.S3, error) {
	if l.state.Backup == nil {
		return nil, errors.New("this lab has no backups: create it with `understudy lab up --backup`")
	}
	ak, err := l.secret(backupAccessFile)
	if err != nil {
		return nil, err
	}
	sk, err := l.secret(backupSecretFile)
	if err != nil {
		return nil, err
	}
	return backup.OpenS3(l.S3Config(), ak, sk)
}

// BackupKey is the lab's encryption key.
func (l *Lab) BackupKey() (*backup.Key, error) {
	s, err := l.secret(backupKeyFile)
	if err != nil {
		return nil, err
	}
	return backup.ParseKey(s)
}

// AgentConfig is the agent's configuration for this lab: every node over
// its Unix socket (local replication logins are trusted in the lab).
func (l *Lab) AgentConfig(log io.Writer) backup.AgentConfig {
	var src []backup.Source
	for _, n := range l.Cluster.Nodes {
		src = append(src, backup.Source{Name: n.Name, Host: l.sockDir(n.Name), Port: n.Port})
	}
	cfg := backup.AgentConfig{Sources: src, User: l.Cluster.ReplUser, BinDir: l.Bin, Spool: filepath.Join(l.Dir, "backup", "spool"),
		SpoolCap: 256 << 20, Log: log}
	if l.state.Backup != nil {
		cfg.Policy = l.state.Backup.Policy
	}
	return cfg
}

// StorageDir is where the lab's storage keeps its objects.
func (l *Lab) StorageDir() string { return filepath.Join(l.Dir, "s3") }

// StartStorage starts the lab's storage server (versitygw over s3/) in
// the background and waits until it answers.
func (l *Lab) StartStorage(ctx context.Context) error {
	b := l.state.Backup
	if b == nil {
		return errors.New("this lab has no backups: create it with `understudy lab up --backup`")
	}
	if l.servicePID("storage") > 0 {
		return nil
	}
	gw, err := FindVersityGW()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(l.StorageDir(), b.Bucket), 0o700); err != nil {
		return err
	}
	ak, err := l.secret(backupAccessFile)
	if err != nil {
		return err
	}
	sk, err := l.secret(backupSecretFile)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", b.Port)
	// The credentials go in the environment, never in argv.
	env := []string{"ROOT_ACCESS_KEY_ID=" + ak, "ROOT_SECRET_ACCESS_KEY=" + sk}
	if err := l.startService("storage", []string{gw, "--port", addr, "--quiet", "posix", l.StorageDir()}, env); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		if l.servicePID("storage") == 0 {
			log, _ := os.ReadFile(l.serviceLog("storage"))
			return fmt.Errorf("the lab's storage (versitygw) exited: %s", strings.TrimSpace(string(log)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the lab's storage did not answer on %s within 30 s (log: %s)", addr, l.serviceLog("storage"))
}

// StopStorage stops the storage server (tests use it for an outage).
func (l *Lab) StopStorage() error { return l.stopService("storage") }

// StartAgent runs `exe backup agent --lab DIR` in the background.
func (l *Lab) StartAgent(exe string) error {
	if l.servicePID("agent") > 0 {
		return nil
	}
	// A Go test binary given "backup agent" would run its own tests, and
	// those start labs of their own: refuse rather than multiply.
	if strings.HasSuffix(exe, ".test") {
		return fmt.Errorf("%s is a test binary, not understudy: run the agent in the test's own process (labtest.Agent)", exe)
	}
	return l.startService("agent", []string{exe, "backup", "agent", "--lab", l.Dir}, nil)
}

func (l *Lab) servicePIDFile(name string) string { return filepath.Join(l.Dir, "run", name+".pid") }
func (l *Lab) serviceLog(name string) string     { return filepath.Join(l.Dir, name+".log") }

// ServiceLog is the log of a lab service (storage, agent).
func (l *Lab) ServiceLog(name string) string { return l.serviceLog(name) }

func (l *Lab) startService(name string, argv, env []string) error {
	logf, err := os.OpenFile(l.serviceLog(name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = l.Dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting the lab's %s: %w", name, err)
	}
	os.WriteFile(l.servicePIDFile(name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	l.mu.Lock()
	l.done["service:"+name] = done
	l.mu.Unlock()
	return nil
}

// ServicePID is a background service's PID ("storage", "agent") while it
// runs as the lab's, 0 otherwise (benches and tests freeze the storage).
func (l *Lab) ServicePID(name string) int { return l.servicePID(name) }

// servicePID is the service's PID while it runs as ours (its argv names
// the lab's directory, so a reused PID is not mistaken for it).
func (l *Lab) servicePID(name string) int {
	b, err := os.ReadFile(l.servicePIDFile(name))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !alive(pid) {
		return 0
	}
	l.mu.Lock()
	done := l.done["service:"+name]
	l.mu.Unlock()
	if done != nil { // started by this process: its exit is known exactly, even before exec
		select {
		case <-done:
			return 0
		default:
			return pid
		}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !strings.Contains(string(cmdline), l.Dir) {
		return 0
	}
	return pid
}

func (l *Lab) stopService(name string) error {
	pid := l.servicePID(name)
	if pid == 0 {
		return nil
	}
	syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(20 * time.Second)
	for l.servicePID(name) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l.servicePID(name) > 0 {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	l.waitDone("service:" + name)
	os.Remove(l.servicePIDFile(name))
	return nil
}

// Cred is the user the lab's servers run as (nil: this process's own).
func (l *Lab) Cred() *syscall.Credential { return l.cred }

// BackupUp gives the lab backups if it has none (a free port for the
// storage, the secrets), starts the storage and makes the bucket.
func (l *Lab) BackupUp(ctx context.Context) (*backup.S3, error) {
	if l.state.Backup == nil {
		ports, err := netutil.FreePorts(1)
		if err != nil {
			return nil, err
		}
		if err := l.EnableBackup(ports[0]); err != nil {
			return nil, err
		}
	}
	if err := l.StartStorage(ctx); err != nil {
		return nil, err
	}
	s, err := l.BackupStore()
	if err != nil {
		return nil, err
	}
	return s, s.EnsureBucket(ctx, l.S3Config().Region)
}
