package dockertest

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/internal/debimage"
)

// PGBinDir is a directory of PostgreSQL programs of the major for the lab
// and for restores on this machine (what UNDERSTUDY_PG_BINDIR names):
// Debian's own /usr/lib/postgresql/<major>/bin when this machine has that
// major installed, else the programs of the major's test image.
//
// Debian 12 has no package for 17 or 18, and trixie's and forky's binaries
// need their own C library, which is newer than bookworm's. So they run
// from a copy of the image's libraries, the PostgreSQL tree and its share
// directory, through the image's own dynamic loader: each program in the
// returned directory is a two-line script that runs
//
//	<copy>/usr/lib/<triplet>/ld-linux... --library-path <copy>/usr/lib/<triplet> --argv0 <the script> <the real program> "$@"
//
// --argv0 (glibc 2.33 and later) makes the program see the script's path
// as its own, so PostgreSQL finds its share and lib directories beside it
// and runs its sibling programs (initdb → postgres, pg_ctl → postgres,
// pg_rewind → postgres, pg_verifybackup → pg_waldump) through their scripts
// too. The library path is not in the environment, so what PostgreSQL runs
// itself (restore_command's cp, archive commands, a shell) uses this
// machine's own libraries. Nothing is installed into the system; the copy
// lives in the test cache beside the image and is made once.
func PGBinDir(ctx context.Context, major int, logf func(string, ...any)) (string, error) {
	host := fmt.Sprintf("/usr/lib/postgresql/%d/bin", major)
	if _, err := os.Stat(filepath.Join(host, "postgres")); err == nil {
		return host, nil
	}
	img, err := ImageFor(major)
	if err != nil {
		return "", err
	}
	triplet, loader, err := loaderFor(runtime.GOARCH)
	if err != nil {
		return "", err
	}
	dir := CacheDir()
	root := filepath.Join(dir, img.cacheName()+"-bin")
	bin := filepath.Join(root, fmt.Sprintf("usr/lib/postgresql/%d/bin", major))
	err = debimage.Once(root, func() error {
		tarPath, err := ImageTar(ctx, img, logf)
		if err != nil {
			return err
		}
		start := time.Now()
		work, err := os.MkdirTemp(dir, "bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
		keep := []string{"./usr/lib/" + triplet + "/", fmt.Sprintf("./usr/lib/postgresql/%d/", major), fmt.Sprintf("./usr/share/postgresql/%d/", major)}
		if err := extractLayer(ctx, tarPath, work, keep); err != nil {
			return fmt.Errorf("copying PostgreSQL %d's programs out of %s: %w", major, tarPath, err)
		}
		tree := filepath.Join(work, fmt.Sprintf("usr/lib/postgresql/%d", major))
		if err := os.Rename(filepath.Join(tree, "bin"), filepath.Join(tree, "bin.real")); err != nil {
			return err
		}
		if err := os.Mkdir(filepath.Join(tree, "bin"), 0o755); err != nil {
			return err
		}
		progs, err := os.ReadDir(filepath.Join(tree, "bin.real"))
		if err != nil {
			return err
		}
		libs := filepath.Join(root, "usr/lib", triplet)
		for _, p := range progs {
			script := LoaderScript(filepath.Join(libs, loader), libs, filepath.Join(root, fmt.Sprintf("usr/lib/postgresql/%d/bin.real", major), p.Name()))
			if err := os.WriteFile(filepath.Join(tree, "bin", p.Name()), []byte(script), 0o755); err != nil {
				return err
			}
		}
		if err := os.Chmod(work, 0o755); err != nil {
			return err
		}
		if err := os.Rename(work, root); err != nil {
			return err
		}
		logf("PostgreSQL %d's programs for this machine are in %s (%.0f s)", major, bin, time.Since(start).Seconds())
		return nil
	})
	return bin, err
}

// LoaderScript runs prog with the given dynamic loader and libraries,
// seeing the script's own path as its argv[0]. Pure.
func LoaderScript(loader, libs, prog string) string {
	return fmt.Sprintf("#!/bin/sh\n# %s, with its own Debian release's C library (internal/dockertest.PGBinDir)\nexec %s --library-path %s --argv0 \"$0\" %s \"$@\"\n",
		filepath.Base(prog), shq(loader), shq(libs), shq(prog))
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// loaderFor is Debian's multiarch triplet and dynamic loader for a Go
// architecture.
func loaderFor(goarch string) (triplet, loader string, err error) {
	switch goarch {
	case "amd64":
		return "x86_64-linux-gnu", "ld-linux-x86-64.so.2", nil
	case "arm64":
		return "aarch64-linux-gnu", "ld-linux-aarch64.so.1", nil
	}
	return "", "", fmt.Errorf("no loader known for %s: install PostgreSQL's packages for this major instead and set UNDERSTUDY_PG_BINDIR", goarch)
}

// extractLayer unpacks from a `docker save` tarball's one layer the paths
// under the given prefixes (./usr/lib/..., with a trailing slash) into dir.
// tar does the unpacking (links, modes, owners), fed from Go's reader.
func extractLayer(ctx context.Context, tarPath, dir string, prefixes []string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	layer, err := layerName(f)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return fmt.Errorf("%s has no %s: %w", tarPath, layer, err)
		}
		if h.Name != layer {
			continue
		}
		args := []string{"-x", "--numeric-owner", "-C", dir}
		for _, p := range prefixes {
			args = append(args, strings.TrimSuffix(p, "/"))
		}
		cmd := exec.CommandContext(ctx, "tar", args...)
		cmd.Stdin = tr
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("tar %s: %v\n%s", strings.Join(args, " "), err, debimage.Tail(string(out), 10))
		}
		return nil
	}
}

// layerName reads manifest.json from a `docker save` tarball: the path of
// its single layer.
func layerName(r io.Reader) (string, error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("no manifest.json: %w", err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ Layers []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return "", err
		}
		if len(m) != 1 || len(m[0].Layers) != 1 {
			return "", errors.New("manifest.json does not describe one image of one layer")
		}
		return m[0].Layers[0], nil
	}
}
