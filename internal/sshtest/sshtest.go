// Package sshtest runs real OpenSSH servers (Debian's sshd) for tests,
// each with its own host key, inside a lab's network namespaces, and stops
// them when the test ends.
package sshtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHD is Debian's OpenSSH server.
const SSHD = "/usr/sbin/sshd"

// Skip skips the test when sshd cannot be run here.
func Skip(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(SSHD); err != nil {
		t.Skip("needs Debian's openssh-server (apt-get install openssh-server); ./scripts/setup-debian installs it")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd runs inside network namespaces the test creates")
	}
}

// Key is a client key pair on disk.
type Key struct {
	Path       string // private key, OpenSSH format, 0600
	Authorized string // authorized_keys line
}

// NewKey makes an ed25519 key pair in dir.
func NewKey(t testing.TB, dir, name string) Key {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return Key{Path: path, Authorized: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))}
}

// Server is one running sshd.
type Server struct {
	Addr      string // ip:port
	HostKey   ssh.PublicKey
	KnownHost string // known_hosts line for Addr
}

// Start runs sshd in the network namespace nsPath, listening on ip:port,
// accepting the authorized keys, with a fresh host key.
func Start(t testing.TB, dir, nsPath, ip string, port int, authorized ...string) *Server {
	t.Helper()
	return StartWith(t, dir, Options{NetNS: nsPath, IP: ip, Port: port}, authorized...)
}

// Options place an sshd: its namespaces, address, and the environment its
// sessions get (sshd_config SetEnv), e.g. DOCKER_HOST for a test server.
type Options struct {
	NetNS   string
	MountNS string // a persistent mount namespace file, "" for the host's
	IP      string
	Port    int
	SetEnv  []string
}

// StartWith runs sshd as Options say.
func StartWith(t testing.TB, dir string, o Options, authorized ...string) *Server {
	t.Helper()
	nsPath, ip, port := o.NetNS, o.IP, o.Port
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	sdir, err := os.MkdirTemp(dir, "sshd-")
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(priv, "host")
	hostKey := filepath.Join(sdir, "host_ed25519")
	os.WriteFile(hostKey, pem.EncodeToMemory(block), 0o600)
	os.WriteFile(filepath.Join(sdir, "authorized_keys"), []byte(strings.Join(authorized, "\n")+"\n"), 0o600)
	cfg := fmt.Sprintf(`Port %d
ListenAddress %s
HostKey %s
PidFile %s
AuthorizedKeysFile %s
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
MaxSessions 50
MaxStartups 50:30:100
LogLevel ERROR
`, port, ip, hostKey, filepath.Join(sdir, "sshd.pid"), filepath.Join(sdir, "authorized_keys"))
	if len(o.SetEnv) > 0 {
		cfg += "SetEnv " + strings.Join(o.SetEnv, " ") + "\n"
	}
	cfgPath := filepath.Join(sdir, "sshd_config")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	ns := []string{"--net=" + nsPath}
	if o.MountNS != "" {
		ns = append(ns, "--mount="+o.MountNS)
	}
	cmd := exec.Command("nsenter", append(ns, "--", SSHD, "-D", "-e", "-f", cfgPath)...)
	logf, _ := os.Create(filepath.Join(sdir, "sshd.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGTERM) // the sshd this test started
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	sp, _ := ssh.NewPublicKey(pub)
	addr := net.JoinHostPort(ip, fmt.Sprint(port))
	s := &Server{Addr: addr, HostKey: sp, KnownHost: knownhosts.Line([]string{knownhosts.Normalize(addr)}, sp)}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(sdir, "sshd.log"))
			t.Fatalf("sshd on %s exited: %s", addr, b)
		default:
		}
		if _, err := os.Stat(filepath.Join(sdir, "sshd.pid")); err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd on %s did not start", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
