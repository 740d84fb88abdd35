package remote

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/live"
)

// BackupAgent is the backup accessory (live.BackupAgentDeployer): the
// understudy binary put into the directory its deploy.yml entry mounts at
// BinDir, and its container, booted and rebooted through kamal.
type BackupAgent struct {
	Control  *Control
	Name     string // the accessory
	Host     string
	Commands *kamal.AccessoryCommands
	BinDir   string // where the container sees the binary's directory
	Setup    string // backup.json as init wrote it (what boot uploads)
}

var _ live.BackupAgentDeployer = (*BackupAgent)(nil)

func (b *BackupAgent) acc() accessory {
	return accessory{c: b.Control, name: b.Name, hosts: []string{b.Host}, cmds: b.Commands, binDir: b.BinDir, reinit: "understudy init --backup ..."}
}

// setupHostPath is where Kamal's boot uploaded backup.json (files: entry).
func (b *BackupAgent) setupHostPath() string {
	for _, f := range b.Commands.Files {
		if path.Base(f.ContainerPath) == "backup.json" {
			return f.HostPath
		}
	}
	return ""
}

// SumCmd prints the SHA-256 of each file that exists (sha256sum's format),
// nothing for one that does not. Pure.
func SumCmd(paths ...string) string {
	return "sha256sum " + strings.Join(paths, " ") + " 2>/dev/null; true"
}

// InstallCmd writes stdin to dir/name as an executable, atomically (a
// running agent keeps its old file). Pure.
func InstallCmd(dir, name string) string {
	tmp := dir + "/." + name + ".new"
	return fmt.Sprintf("%s && cat > %s && chmod 755 %s && mv -f %s %s/%s", kamal.MakeDirectory(dir), tmp, tmp, tmp, dir, name)
}

// ParseSums reads sha256sum's output into path → sum.
func ParseSums(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && len(f[0]) == 64 {
			m[strings.TrimPrefix(f[1], "*")] = f[0]
		}
	}
	return m
}

func sumOf(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// checkBinary refuses a binary the accessory's container cannot run: not
// Linux ELF for the server's machine, or linked against a C library.
func checkBinary(file, machine string) error {
	const fix = "reinstall understudy (docs/install.md); with --agent-binary (development), pass a static Linux build"
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("%s is not a Linux executable (%v), and understudy runs inside the server's Linux containers: %s (CGO_ENABLED=0 GOOS=linux go build ./cmd/understudy)", file, err, fix)
	}
	defer f.Close()
	want := map[string]elf.Machine{"x86_64": elf.EM_X86_64, "aarch64": elf.EM_AARCH64, "arm64": elf.EM_AARCH64}[machine]
	if want != 0 && f.Machine != want {
		return fmt.Errorf("%s is built for %s, but the server is %s: %s for it (CGO_ENABLED=0 GOOS=linux GOARCH=%s go build ./cmd/understudy)", file, f.Machine, machine, fix, map[string]string{"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[machine])
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is linked against the C library, which the postgres image may not have in the same version: %s (CGO_ENABLED=0 go build ./cmd/understudy)", file, fix)
		}
	}
	return nil
}

// ReadAgent reads the container's state and what the server holds.
func (b *BackupAgent) ReadAgent(ctx context.Context) (live.AgentFacts, error) {
	f := live.AgentFacts{Name: b.Name}
	dir, err := b.acc().binHostDir()
	if err != nil {
		return f, err
	}
	if f.Binary, err = b.Control.UnderstudyFor(ctx, b.Host); err != nil {
		return f, err
	}
	local, err := fileSum(f.Binary)
	if err != nil {
		return f, err
	}
	binPath, setupPath := UnderstudyPath(dir), b.setupHostPath()
	out, err := b.Control.Shell.Exec(ctx, b.Host, SumCmd(binPath, setupPath), nil)
	if err != nil {
		return f, fmt.Errorf("reading the backup accessory's files on %s: %w", b.Host, err)
	}
	sums := ParseSums(string(out))
	setupSum, _ := sumOf(strings.NewReader(b.Setup))
	f.BinaryCurrent = sums[binPath] == local
	f.ConfigCurrent = sums[setupPath] == setupSum
	ci, err := b.Control.inspectContainer(ctx, b.Host, b.Commands.ServiceName)
	switch {
	case errors.Is(err, errNoContainer):
		f.Container = "absent"
	case err != nil:
		return f, err
	default:
		f.Container = ci.State
	}
	return f, nil
}

// InstallAgentBinary copies the understudy build for the server's machine
// to it.
func (b *BackupAgent) InstallAgentBinary(ctx context.Context) error {
	return b.acc().installBinary(ctx)
}

// BootAgent is `kamal accessory boot`.
func (b *BackupAgent) BootAgent(ctx context.Context) error { return b.acc().boot(ctx) }

// RebootAgent is `kamal accessory reboot`.
func (b *BackupAgent) RebootAgent(ctx context.Context) error { return b.acc().reboot(ctx) }

// StartAgent is Kamal's accessory start.
func (b *BackupAgent) StartAgent(ctx context.Context) error { return b.acc().start(ctx) }

// ExecCmd runs argv in the running container (docker exec). Pure.
func ExecCmd(container string, argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shq(a)
	}
	return "docker exec " + shq(container) + " " + strings.Join(q, " ")
}

// Exec runs argv inside the backup accessory's container, its output
// copied to out as it comes.
func (b *BackupAgent) Exec(ctx context.Context, out io.Writer, argv ...string) error {
	_, err := b.Control.Dialer.ExecTee(ctx, b.Host, ExecCmd(b.Commands.ServiceName, argv...), nil, out)
	return err
}
