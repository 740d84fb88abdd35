package release

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/understudy-dev/understudy/internal/version"
)

// Local finds, on the operator's machine, the static Linux build of this
// understudy for a server's machine (remote.Builds): beside the executable
// as a release lays it out; else, for a dev build run from a source
// checkout, a cross-build with the local Go toolchain.
type Local struct {
	Exe   string        // this executable, symbolic links resolved
	Build version.Build // this executable's build
	// Checkout: a source checkout of understudy (holding its go.mod), or "".
	Checkout string
	Go       string    // the go command, or "" when there is none
	CacheDir string    // where cross-builds are kept
	Log      io.Writer // says when it builds

	mu    sync.Mutex
	built map[string]string // goarch → a cross-build made by this process
}

// NewLocal is a Local for this process.
func NewLocal(log io.Writer) *Local {
	l := &Local{Build: version.Info(), Log: log}
	if exe, err := os.Executable(); err == nil {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		l.Exe = exe
	}
	var from []string
	if wd, err := os.Getwd(); err == nil {
		from = append(from, wd)
	}
	if l.Exe != "" {
		from = append(from, filepath.Dir(l.Exe))
	}
	l.Checkout = FindCheckout(from...)
	if g, err := exec.LookPath("go"); err == nil {
		l.Go = g
	} else if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		l.Go = "/usr/local/go/bin/go"
	}
	if c, err := os.UserCacheDir(); err == nil {
		l.CacheDir = filepath.Join(c, "understudy", "dev-builds")
	}
	return l
}

// FindCheckout is the first directory, walking up from each of dirs, whose
// go.mod declares understudy's module; "" when none does.
func FindCheckout(dirs ...string) string {
	for _, d := range dirs {
		for {
			if isCheckout(d) {
				return d
			}
			up := filepath.Dir(d)
			if up == d {
				break
			}
			d = up
		}
	}
	return ""
}

func isCheckout(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == Module {
			return true
		}
	}
	return false
}

// Candidates are the files, in order, that may hold the Linux build for
// goarch beside an executable in dir: a release's (dir/understudy-linux-ARCH
// in a gem, dir/libexec/understudy-linux-ARCH in an archive) and go
// install's cross-compiled one ($GOPATH/bin/linux_ARCH/understudy). Pure.
func Candidates(dir, goarch string) []string {
	return []string{
		filepath.Join(dir, LinuxName(goarch)),
		filepath.Join(dir, LibexecDir, LinuxName(goarch)),
		filepath.Join(dir, "linux_"+goarch, "understudy"),
	}
}

// Linux is the path of a static Linux build of this understudy for goarch.
func (l *Local) Linux(ctx context.Context, goarch string) (string, error) {
	want := Platform{"linux", goarch}
	dir := filepath.Dir(l.Exe)
	if l.Exe != "" {
		for _, c := range Candidates(dir, goarch) {
			if _, err := os.Stat(c); err != nil {
				continue
			}
			if err := l.sameBuild(c, goarch); err != nil {
				return "", err
			}
			return c, nil
		}
		// This executable itself, when it is that build (a Linux release).
		if b, err := Inspect(l.Exe); err == nil && b.Platform == want && b.Static {
			return l.Exe, nil
		}
	}
	if l.Build.Version == version.Dev && l.Checkout != "" && l.Go != "" && l.CacheDir != "" {
		return l.crossBuild(ctx, goarch)
	}
	return "", l.missing(dir, goarch)
}

// sameBuild refuses a go-install'ed Linux build of another module version
// (a release's libexec/ comes with its executable; those carry no version
// the toolchain recorded, and are not compared).
func (l *Local) sameBuild(file, goarch string) error {
	bi, err := buildinfo.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%s is not a Go executable (%v): reinstall understudy (docs/install.md)", file, err)
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" || l.Build.Version == version.Dev || v == l.Build.Version {
		return nil
	}
	return fmt.Errorf("%s is understudy %s, but this one is %s: install the matching Linux build (CGO_ENABLED=0 GOOS=linux GOARCH=%s go install %s/cmd/understudy@%s)",
		file, v, l.Build.Version, goarch, Module, l.Build.Version)
}

// crossBuild builds the Linux binary for goarch from the checkout, once a
// process; Go's build cache makes a repeat quick.
func (l *Local) crossBuild(ctx context.Context, goarch string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.built[goarch]; p != "" {
		return p, nil
	}
	if err := os.MkdirAll(l.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("making %s for a Linux build of understudy: %w", l.CacheDir, err)
	}
	dst := filepath.Join(l.CacheDir, LinuxName(goarch))
	tmp := dst + fmt.Sprintf(".%d.new", os.Getpid())
	argv, env := GoBuild(Platform{"linux", goarch}, "", "", tmp)
	if l.Build.Commit != "" {
		// This executable knows its commit from the toolchain's VCS
		// stamp: so will the server's, built from the same checkout.
		for i, a := range argv {
			if a == "-buildvcs=false" {
				argv[i] = "-buildvcs=auto"
			}
		}
	}
	fmt.Fprintf(l.Log, "building understudy for linux/%s from the checkout %s (this is a dev build, which carries no Linux builds)\n", goarch, l.Checkout)
	cmd := exec.CommandContext(ctx, l.Go, argv...)
	cmd.Dir = l.Checkout
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("building understudy for linux/%s in %s: %w\n%s", goarch, l.Checkout, err, out)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	if l.built == nil {
		l.built = map[string]string{}
	}
	l.built[goarch] = dst
	return dst, nil
}

// missing says what to do when no Linux build for goarch is at hand.
func (l *Local) missing(dir, goarch string) error {
	looked := strings.Join(Candidates(dir, goarch)[:2], " or ")
	switch {
	case l.Build.Version == version.Dev:
		how := "with Go installed, in a checkout of understudy (" + Module + ")"
		if l.Checkout != "" {
			how = "install Go (https://go.dev/dl/), then in " + l.Checkout
		}
		return fmt.Errorf("no static Linux build of understudy for linux/%s: this is a dev build, which carries none (looked for %s). Install a release (docs/install.md: the gem or an archive carries both Linux builds), or build one %s:\n  CGO_ENABLED=0 GOOS=linux GOARCH=%s go build -trimpath -o %s ./cmd/understudy",
			goarch, looked, how, goarch, filepath.Join(dir, LinuxName(goarch)))
	case strings.HasPrefix(l.Build.Version, "v"):
		return fmt.Errorf("no static Linux build of understudy for linux/%s beside %s (go install builds only this machine's). Build it the same way, where understudy looks for it:\n  CGO_ENABLED=0 GOOS=linux GOARCH=%s go install %s/cmd/understudy@%s\nor install a release instead (docs/install.md: the gem or an archive carries both Linux builds)",
			goarch, l.Exe, goarch, Module, l.Build.Version)
	default:
		return fmt.Errorf("no static Linux build of understudy for linux/%s beside %s (looked for %s): the release's libexec/ directory was not kept with the executable. Reinstall understudy %s as docs/install.md says (keep the archive's directory whole; the gem does)",
			goarch, l.Exe, looked, l.Build.Version)
	}
}
