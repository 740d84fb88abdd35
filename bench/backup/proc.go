package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/backup"
)

// The storage: versitygw over TLS (pgBackRest speaks S3 over HTTPS only),
// with a self-signed certificate both clients trust: pgBackRest through
// repo1-storage-ca-file, Go through SSL_CERT_FILE (a bundle of the system's
// roots and this one), set before this process makes any TLS connection.
type storage struct {
	port               int
	gw                 string
	dir, cert, keyFile string
	accessKey, secret  string
	cmd                *exec.Cmd
	done               chan struct{}
}

func startStorage(ctx context.Context, gw, scratch string, port int) (*storage, error) {
	s := &storage{port: port, gw: gw, dir: filepath.Join(scratch, "s3"), cert: filepath.Join(scratch, "tls", "cert.pem"), keyFile: filepath.Join(scratch, "tls", "key.pem"),
		accessKey: "bench" + randHex(4), secret: randHex(20)}
	if err := os.MkdirAll(filepath.Join(s.dir, "bench"), 0o700); err != nil {
		return nil, err
	}
	if err := selfSigned(s.cert, s.keyFile); err != nil {
		return nil, err
	}
	// The Go side: system roots plus ours.
	bundle := filepath.Join(scratch, "tls", "bundle.pem")
	sys, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	mine, _ := os.ReadFile(s.cert)
	if err := os.WriteFile(bundle, append(append(sys, '\n'), mine...), 0o644); err != nil {
		return nil, err
	}
	os.Setenv("SSL_CERT_FILE", bundle)
	return s, s.start(ctx)
}

// start starts versitygw (again, after stop) and waits until it answers.
func (s *storage) start(ctx context.Context) error {
	addr := fmt.Sprintf("127.0.0.1:%d", s.port)
	s.cmd = exec.Command(s.gw, "--port", addr, "--cert", s.cert, "--key", s.keyFile, "--quiet", "posix", s.dir)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.accessKey, "ROOT_SECRET_ACCESS_KEY="+s.secret)
	var log bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &log, &log
	if err := s.cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	cmd := s.cmd
	go func() { cmd.Wait(); close(done) }()
	s.done = done
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("versitygw exited: %s", log.String())
		case <-ctx.Done():
			s.stop()
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("versitygw did not answer on %s", addr)
		}
	}
}

func (s *storage) endpoint() string { return fmt.Sprintf("https://127.0.0.1:%d", s.port) }

func (s *storage) config(prefix string) backup.S3Config {
	return backup.S3Config{Endpoint: s.endpoint(), Region: "us-east-1", Bucket: "bench", Prefix: prefix, PathStyle: true}
}

// stop stops the storage (SIGTERM, by its PID); start it again with restart.
func (s *storage) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

func selfSigned(certFile, keyFile string) error {
	if err := os.MkdirAll(filepath.Dir(certFile), 0o755); err != nil {
		return err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost", "127.0.0.1"}} // pgBackRest matches the host against DNS names only
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// The agent runs as a process of its own (this binary, re-executed), so
// its CPU time is its own: agentSpec says what it runs with; the storage's
// secrets and the key come in its environment.
type agentSpec struct {
	Config backup.AgentConfig
	S3     backup.S3Config
}

const agentEnv = "UNDERSTUDY_BENCH_AGENT"

// runAgentProcess is main when this binary runs as the agent.
func runAgentProcess(specFile string) {
	b, err := os.ReadFile(specFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var spec agentSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	store, err := backup.OpenS3(spec.S3, os.Getenv("BENCH_S3_ACCESS_KEY"), os.Getenv("BENCH_S3_SECRET_KEY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	key, err := backup.ParseKey(os.Getenv("BENCH_BACKUP_KEY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, n := range []string{"BENCH_S3_ACCESS_KEY", "BENCH_S3_SECRET_KEY", "BENCH_BACKUP_KEY"} {
		os.Unsetenv(n)
	}
	spec.Config.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// BENCH_AGENT_PROFILE=FILE: a CPU profile of the agent, for finding
	// what its archiving costs.
	if prof := os.Getenv("BENCH_AGENT_PROFILE"); prof != "" {
		if f, err := os.Create(prof); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	backup.NewAgent(spec.Config, store, key).Run(ctx)
}

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func startAgentProcess(specFile, logFile string, st *storage, key *backup.Key) (*agentProc, error) {
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), agentEnv+"="+specFile, "BENCH_S3_ACCESS_KEY="+st.accessKey, "BENCH_S3_SECRET_KEY="+st.secret, "BENCH_BACKUP_KEY="+key.String())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	a := &agentProc{cmd: cmd, done: make(chan struct{}), log: logf}
	go func() { cmd.Wait(); logf.Close(); close(a.done) }()
	return a, nil
}

func (a *agentProc) stop() {
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// cpuTime is the CPU time (user + system) of a process and of every live
// process under it, plus what its reaped children used (/proc/PID/stat,
// proc(5): utime, stime, cutime, cstime in clock ticks of 1/100 s).
func cpuTime(pid int) time.Duration {
	children := map[int][]int{}
	stats := map[int][]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := procStat(p)
		if len(f) < 17 {
			continue
		}
		stats[p] = f
		ppid, _ := strconv.Atoi(f[3])
		children[ppid] = append(children[ppid], p)
	}
	var ticks int64
	var walk func(int)
	walk = func(p int) {
		if f := stats[p]; f != nil {
			for _, i := range []int{13, 14, 15, 16} {
				n, _ := strconv.ParseInt(f[i], 10, 64)
				ticks += n
			}
		}
		for _, c := range children[p] {
			walk(c)
		}
	}
	walk(pid)
	return time.Duration(ticks) * 10 * time.Millisecond
}

// ownCPU is a process's own CPU time (user, system), without its children.
func ownCPU(pid int) (user, sys time.Duration) {
	f := procStat(pid)
	if len(f) < 17 {
		return 0, 0
	}
	u, _ := strconv.ParseInt(f[13], 10, 64)
	s, _ := strconv.ParseInt(f[14], 10, 64)
	return time.Duration(u) * 10 * time.Millisecond, time.Duration(s) * 10 * time.Millisecond
}

// childNamed is a child of pid whose command is name (0 when none).
func childNamed(pid int, name string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStat(p); len(f) > 3 && f[1] == name && f[3] == strconv.Itoa(pid) {
			return p
		}
	}
	return 0
}

// procStat is /proc/PID/stat split into fields, the command name (which
// may hold spaces) as one.
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return nil
	}
	return append([]string{strings.TrimSpace(s[:open]), s[open+1 : end]}, strings.Fields(s[end+1:])...)
}

// peakRSS is a process's peak resident memory (VmHWM), in bytes.
func peakRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
