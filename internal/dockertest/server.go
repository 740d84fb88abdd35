package dockertest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/debimage"
)

// Addresses: everything Docker makes stays in 10.211.0.0/16, the project's
// own range (lab.Subnet's /24 is inside it). Server i's default bridge is
// 10.211.(100+i).1/24 and its networks (Kamal's "kamal" network) come from
// 10.211.(128+16i).0/20 in /24s: never Docker's default 172.17.0.0/16.
func bridgeIP(i int) string { return fmt.Sprintf("10.211.%d.1/24", 100+i) }
func addressPool(i int) string {
	return fmt.Sprintf("base=10.211.%d.0/20,size=24", 128+16*i)
}

// Skip skips a test that needs real Docker when it cannot have it here.
func Skip(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: each test server's dockerd runs in network and mount namespaces the test creates")
	}
	for _, bin := range []string{"dockerd", "docker", "debootstrap", "iptables", "nsenter", "unshare"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (./scripts/setup-debian installs docker.io, debootstrap and iptables)", bin)
		}
	}
}

// Server is one test "server": a network namespace (made by the caller),
// a mount namespace in which /root is the server's own home directory
// (Kamal works in the SSH user's home; both servers would otherwise share
// the host's), and a dockerd running in both, with its own data root,
// exec root and socket. Things started for the server (sshd) join the
// same namespaces through NetNS and MountNS.
type Server struct {
	Name    string
	NetNS   string // network namespace file
	MountNS string // persistent mount namespace file
	Home    string // the server's /root, seen from the host
	Sock    string // dockerd's socket, reachable from the host
	dir     string
	pid     int
	done    chan struct{}
}

// StartServer makes the mount namespace, starts dockerd in it and in
// netns, loads the image, and stops and removes it all when the test ends.
// index picks the server's Docker address ranges.
func StartServer(t testing.TB, name, netns string, index int, imageTar string) *Server {
	t.Helper()
	// containerd's sockets live under the exec root, and a unix socket path
	// has at most 108 bytes: a test's own temp dir is too deep for that.
	dir, err := os.MkdirTemp("/tmp", "usd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{Name: name, NetNS: netns, dir: filepath.Join(dir, name)}
	s.Home = filepath.Join(s.dir, "home")
	s.Sock = filepath.Join(s.dir, "docker.sock")
	for _, d := range []string{s.Home, filepath.Join(s.dir, "ns")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A persistent mount namespace is a bind mount of its nsfs file, which
	// must sit on a private mount.
	nsDir := filepath.Join(s.dir, "ns")
	mustRun(t, "mount", "--bind", nsDir, nsDir)
	t.Cleanup(func() { exec.Command("umount", "-l", nsDir).Run() })
	mustRun(t, "mount", "--make-private", nsDir)
	s.MountNS = filepath.Join(nsDir, "mnt")
	os.WriteFile(s.MountNS, nil, 0o600)
	mustRun(t, "unshare", "--mount="+s.MountNS, "--propagation", "private", "--", "mount", "--bind", s.Home, "/root")
	t.Cleanup(func() { exec.Command("umount", s.MountNS).Run() })

	logf, err := os.Create(filepath.Join(s.dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"--mount=" + s.MountNS, "--net=" + netns, "--"}, s.dockerdArgv(index)...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.pid, s.done = cmd.Process.Pid, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(s.done) }()
	t.Cleanup(s.stop)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.docker(context.Background(), nil, "version", "--format", "{{.Server.Version}}"); err == nil {
			break
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(filepath.Join(s.dir, "dockerd.log"))
			t.Skipf("dockerd cannot start on this machine (a kernel without overlayfs, cgroups or netfilter?), so the real-Docker tests are skipped. Its log ends:\n%s", debimage.Tail(string(b), 12))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd for %s did not answer within 60 s", name)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if imageTar != "" {
		if out, err := s.docker(context.Background(), nil, "load", "-q", "-i", imageTar); err != nil {
			t.Fatalf("docker load on %s: %v\n%s", name, err, out)
		}
	}
	return s
}

// dockerdArgv is the daemon's command line. Pure.
func (s *Server) dockerdArgv(index int) []string {
	return []string{"dockerd",
		"--data-root", filepath.Join(s.dir, "docker-data"),
		"--exec-root", filepath.Join(s.dir, "docker-exec"),
		"--pidfile", filepath.Join(s.dir, "docker.pid"),
		"-H", "unix://" + s.Sock,
		"--bip", bridgeIP(index),
		"--default-address-pool", addressPool(index),
		"--storage-driver", "overlay2",
	}
}

// Docker runs the docker client against this server's dockerd.
func (s *Server) Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.docker(context.Background(), nil, args...)
	if err != nil {
		t.Fatalf("docker %s on %s: %v\n%s", strings.Join(args, " "), s.Name, err, out)
	}
	return strings.TrimSpace(out)
}

func (s *Server) docker(ctx context.Context, stdin []byte, args ...string) (string, error) {
	c := exec.CommandContext(ctx, "docker", args...)
	c.Env = append(os.Environ(), "DOCKER_HOST=unix://"+s.Sock)
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	out, err := c.CombinedOutput()
	return string(out), err
}

// DockerHost is the DOCKER_HOST value for this server.
func (s *Server) DockerHost() string { return "unix://" + s.Sock }

// stop removes every container, stops dockerd (by the pid this test
// started) and deletes its files.
func (s *Server) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := s.docker(ctx, nil, "ps", "-aq"); err == nil && strings.TrimSpace(out) != "" {
		s.docker(ctx, nil, append([]string{"rm", "-f"}, strings.Fields(out)...)...)
	}
	syscall.Kill(s.pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-s.pid, syscall.SIGKILL)
		<-s.done
	}
	os.RemoveAll(filepath.Join(s.dir, "docker-data"))
	os.RemoveAll(filepath.Join(s.dir, "docker-exec"))
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// RegistryStandIn is `docker` on the test servers' PATH for SSH sessions:
// no registry is reachable from a test, so the two registry calls Kamal
// makes are answered here, and everything else is the real docker client.
// `docker login` succeeds unless ~/.registry-refuses exists on that server
// (a registry outage, or a laptop without the password); `docker image
// pull IMG` succeeds when IMG is already on the server.
const RegistryStandIn = `#!/bin/sh
REAL=/usr/bin/docker; [ -x /usr/local/bin/docker ] && REAL=/usr/local/bin/docker
if [ "${1:-}" = login ]; then
	if [ -e "$HOME/.registry-refuses" ]; then
		echo "Error response from daemon: Get \"https://$2/v2/\": denied (test registry stand-in)" >&2
		exit 1
	fi
	echo "Login Succeeded"
	exit 0
fi
img=
if [ "${1:-}" = pull ]; then img=${2:-}; elif [ "${1:-}" = image ] && [ "${2:-}" = pull ]; then img=${3:-}; fi
if [ -n "$img" ]; then
	if [ -e "$HOME/.registry-refuses" ]; then echo "Error response from daemon: pull access denied (test registry stand-in)" >&2; exit 1; fi
	"$REAL" image inspect "$img" >/dev/null 2>&1 && { echo "Status: Image is up to date for $img"; exit 0; }
	echo "Error response from daemon: manifest for $img not found (test registry stand-in: no registry)" >&2
	exit 1
fi
exec "$REAL" "$@"
`
