// Package release is how understudy is built and shipped (docs/install.md):
// static binaries for Linux and macOS on amd64 and arm64, one archive per
// platform, platform gems, SHA256SUMS; and, at run time, finding the Linux
// builds a release keeps beside the operator's executable, which apply puts
// on the servers (Local).
//
// Every archive and gem carries the builds for both Linux machines: the
// operator's own executable when it is one, the others in libexec/ as
// understudy-linux-<arch>. So a laptop of any kind installs the build that
// matches each server's `uname -m` without a Go toolchain or a registry.
package release

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Module is understudy's module path; the version package is stamped by
// release builds.
const (
	Module     = "github.com/understudy-dev/understudy"
	versionPkg = Module + "/internal/version"
	mainPkg    = "./cmd/understudy"
)

// Platform is a GOOS/GOARCH pair.
type Platform struct{ GOOS, GOARCH string }

func (p Platform) String() string { return p.GOOS + "/" + p.GOARCH }

// Slug is the platform in file names: linux-amd64.
func (p Platform) Slug() string { return p.GOOS + "-" + p.GOARCH }

// Platforms a release builds: Kamal servers are Linux on x86_64 or
// aarch64; operators' laptops are those or Macs of either kind.
var Platforms = []Platform{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"}}

// LinuxName is the file name of the Linux build for goarch beside (or in
// libexec/ next to) another platform's executable.
func LinuxName(goarch string) string { return "understudy-linux-" + goarch }

// LibexecDir is where archives and gems keep the Linux builds, relative to
// the directory of the operator's executable.
const LibexecDir = "libexec"

var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z]+(\.[0-9A-Za-z]+)*)?$`)

// CheckVersion accepts a release version: 1.2.3 or 1.2.3-rc.1 (semantic
// versioning without build metadata, no leading v).
func CheckVersion(v string) error {
	if strings.HasPrefix(v, "v") && versionRE.MatchString(v[1:]) {
		return fmt.Errorf("release version %q: give it without the leading v (%s); the git tag is v%s", v, v[1:], v[1:])
	}
	if !versionRE.MatchString(v) {
		return fmt.Errorf("release version %q: want MAJOR.MINOR.PATCH, optionally with a pre-release such as 1.2.0-rc.1", v)
	}
	return nil
}

// GemVersion is the version as RubyGems spells it: a pre-release's "-"
// becomes ".pre." (what Gem::Version does to "1.2.0-rc.1").
func GemVersion(v string) string { return strings.Replace(v, "-", ".pre.", 1) }

// GoBuild is the `go` argv and the environment entries (added to the
// caller's) that build understudy for p, stamped with version and commit
// (empty: not stamped). Pure.
//
//   - CGO_ENABLED=0: a static binary that runs in any container, whatever
//     its C library (the postgres image's, the node agents').
//   - -trimpath: no path of the machine that built it, so anyone building
//     the same commit with the same Go gets the same bytes.
//   - -buildvcs=false: the commit comes from -X instead, so the binary does
//     not depend on the checkout's state (an untracked file would mark a
//     VCS-stamped build modified) and builds the same from a source archive.
//   - -ldflags -s -w: no symbol table or DWARF (a third smaller download;
//     panics still print their stack traces); -gcflags=all=-dwarf=false:
//     so the compiler does not make the DWARF the linker would drop (a
//     sixth less CPU time).
//   - GOFLAGS, GOAMD64, GOARM64, GOEXPERIMENT, GOWORK and GOTOOLCHAIN are
//     fixed so the builder's environment cannot change the output.
func GoBuild(p Platform, version, commit, out string) (argv, env []string) {
	ld := "-s -w"
	if version != "" {
		ld += " -X " + versionPkg + ".version=" + version
	}
	if commit != "" {
		ld += " -X " + versionPkg + ".commit=" + commit
	}
	argv = []string{"build", "-trimpath", "-buildvcs=false", "-gcflags=all=-dwarf=false", "-ldflags=" + ld, "-o", out, mainPkg}
	env = []string{"CGO_ENABLED=0", "GOOS=" + p.GOOS, "GOARCH=" + p.GOARCH, "GOFLAGS=", "GOAMD64=v1", "GOARM64=v8.0",
		"GOEXPERIMENT=", "GOWORK=off", "GOTOOLCHAIN=local"}
	return argv, env
}

// ArchiveName is the file name of p's archive.
func ArchiveName(version string, p Platform) string {
	return "understudy-" + version + "-" + p.Slug() + ".tar.gz"
}

// GemPlatform is RubyGems' name for p (Gem::Platform): what `gem install`
// and Bundler match against the machine they run on.
func GemPlatform(p Platform) (string, error) {
	switch p {
	case Platform{"linux", "amd64"}:
		return "x86_64-linux", nil
	case Platform{"linux", "arm64"}:
		return "aarch64-linux", nil
	case Platform{"darwin", "amd64"}:
		return "x86_64-darwin", nil
	case Platform{"darwin", "arm64"}:
		return "arm64-darwin", nil
	}
	return "", fmt.Errorf("no gem platform for %s", p)
}

// GemName is the file `gem build` writes for a platform ("" for the plain
// ruby gem, which carries no executable).
func GemName(version, gemPlatform string) string {
	if gemPlatform == "" {
		return "understudy-" + GemVersion(version) + ".gem"
	}
	return "understudy-" + GemVersion(version) + "-" + gemPlatform + ".gem"
}

// ErrNoGem: `gem` is not installed, so no gems were built.
var ErrNoGem = errors.New("the gem command is not installed (Debian: apt-get install ruby)")
