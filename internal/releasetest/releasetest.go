// Package releasetest gives tests an understudy installed the way a user
// installs a release: built by release.Build for this machine, its archive
// unpacked into a temporary directory.
package releasetest

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/release"
)

// Version is the version the test releases carry.
const Version = "0.0.0-test"

// Install is an unpacked release for this machine.
type Install struct {
	Exe     string // <dir>/understudy-<version>-<os>-<arch>/understudy
	Archive string
	Result  *release.Result
}

// Get builds the release for this machine's platform (Go's build cache
// makes a repeat quick) and unpacks its archive, both in t's temporary
// directory.
func Get(t testing.TB) *Install {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not installed (https://go.dev/dl/): the release build needs it")
	}
	dir := t.TempDir()
	wd, _ := os.Getwd()
	src := release.FindCheckout(wd)
	if src == "" {
		t.Fatalf("%s is not inside understudy's source", wd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	p := release.Platform{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH}
	start := time.Now()
	r, err := release.Build(ctx, release.Options{Version: Version, Source: src, Out: filepath.Join(dir, "dist"), AllowDirty: true, Gems: "no",
		Platforms: []release.Platform{p}})
	if err != nil {
		t.Fatalf("building the release for this machine: %v", err)
	}
	t.Logf("built the %s release for %s in %.1f s", Version, p, time.Since(start).Seconds())
	in := &Install{Archive: r.Archives[p], Result: r}
	root, err := Unpack(in.Archive, filepath.Join(dir, "installed"))
	if err != nil {
		t.Fatalf("unpacking %s: %v", in.Archive, err)
	}
	in.Exe = filepath.Join(root, "understudy")
	return in
}

// Unpack extracts a release archive into dir, as tar(1) would, and returns
// the directory it holds.
func Unpack(archive, dir string) (string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return "", err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return "", err
	}
	tr := tar.NewReader(gz)
	root := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return root, nil
		}
		if err != nil {
			return "", err
		}
		dst := filepath.Join(dir, filepath.FromSlash(h.Name))
		if top, _, _ := strings.Cut(h.Name, "/"); root == "" {
			root = filepath.Join(dir, top)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return "", err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return "", err
			}
			out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode))
			if err != nil {
				return "", err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return "", err
			}
		}
	}
}
