package remote

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// Builds gives the local file of a static Linux understudy for a server's
// machine (release.Local: the release's builds beside this executable, or
// a cross-build of a dev checkout).
type Builds interface {
	Linux(ctx context.Context, goarch string) (string, error)
}

// FixedBuild is one file for every server (--agent-binary, for
// development); it is still checked against each server's machine.
type FixedBuild string

// Linux is the file itself.
func (f FixedBuild) Linux(context.Context, string) (string, error) { return string(f), nil }

var _ Builds = FixedBuild("")

// GOARCH is Go's name for a server's `uname -m`. Pure.
func GOARCH(machine string) (string, error) {
	switch strings.TrimSpace(machine) {
	case "x86_64", "amd64":
		return "amd64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	}
	return "", fmt.Errorf("understudy is built for x86_64 and aarch64 Linux servers; this one is %q", strings.TrimSpace(machine))
}

// machine is host's `uname -m`, read once per host over the held connection.
func (c *Control) machine(ctx context.Context, host string) (string, error) {
	c.mu.Lock()
	m, ok := c.machines[host]
	c.mu.Unlock()
	if ok {
		return m, nil
	}
	out, err := c.Shell.Exec(ctx, host, "uname -m", nil)
	if err != nil {
		return "", fmt.Errorf("reading %s's machine type: %w", host, err)
	}
	m = strings.TrimSpace(string(out))
	c.mu.Lock()
	if c.machines == nil {
		c.machines = map[string]string{}
	}
	c.machines[host] = m
	c.mu.Unlock()
	return m, nil
}

// UnderstudyFor is the local file of the understudy build for host's
// machine, checked to be one its containers can run.
func (c *Control) UnderstudyFor(ctx context.Context, host string) (string, error) {
	if c.Builds == nil {
		return "", fmt.Errorf("understudy must copy itself to %s, and has no Linux build to copy (no Builds)", host)
	}
	m, err := c.machine(ctx, host)
	if err != nil {
		return "", err
	}
	arch, err := GOARCH(m)
	if err != nil {
		return "", fmt.Errorf("%s: %w", host, err)
	}
	file, err := c.Builds.Linux(ctx, arch)
	if err != nil {
		return "", fmt.Errorf("understudy must copy its Linux build to %s (%s): %w", host, m, err)
	}
	if err := checkBinary(file, m); err != nil {
		return "", fmt.Errorf("%s: %w", host, err)
	}
	return file, nil
}

// UnderstudyPath is where InstallUnderstudy puts the binary under hostDir,
// relative to the SSH user's home when hostDir is under $PWD (so that
// sha256sum prints it as given). Pure.
func UnderstudyPath(hostDir string) string {
	return strings.TrimPrefix(hostDir, "$PWD/") + "/understudy"
}

// UnderstudyCurrent says whether hostDir/understudy on host already is the
// build InstallUnderstudy would put there, and which local file that is.
func (c *Control) UnderstudyCurrent(ctx context.Context, host, hostDir string) (bool, string, error) {
	file, err := c.UnderstudyFor(ctx, host)
	if err != nil {
		return false, "", err
	}
	local, err := fileSum(file)
	if err != nil {
		return false, file, err
	}
	out, err := c.Shell.Exec(ctx, host, SumCmd(UnderstudyPath(hostDir)), nil)
	if err != nil {
		return false, file, fmt.Errorf("reading %s/understudy on %s: %w", hostDir, host, err)
	}
	return ParseSums(string(out))[UnderstudyPath(hostDir)] == local, file, nil
}

// InstallUnderstudy copies the understudy build for host's machine (by its
// `uname -m`) to hostDir/understudy on host, atomically: a process running
// the old file keeps it. It returns the local file it copied. The backup
// accessory, restore --into NODE and the node agents install through it.
func (c *Control) InstallUnderstudy(ctx context.Context, host, hostDir string) (string, error) {
	file, err := c.UnderstudyFor(ctx, host)
	if err != nil {
		return "", err
	}
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := c.Shell.Exec(ctx, host, InstallCmd(hostDir, "understudy"), f); err != nil {
		return file, fmt.Errorf("copying %s to %s:%s: %w", file, host, hostDir, err)
	}
	return file, nil
}

func fileSum(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return sumOf(f)
}
