// Package dockertest gives tests real Docker: an image in the shape of
// the official postgres image, built from Debian's packages at test time,
// and private dockerds, one per "server", each inside a network namespace
// and a mount namespace of its own, so nothing (bridge, iptables chain,
// mount) lands in the host's own namespaces.
package dockertest

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/internal/debimage"
)

//go:embed docker-entrypoint.sh
var entrypoint string

// ImageTag is what the image is called on every test server, as in an
// app's deploy.yml. Debian 12 ships PostgreSQL 15 only.
const ImageTag = "postgres:15"

// recipe is everything the image is made from; its hash names the cached
// tarball, so a change to any step builds a new one.
var recipe = strings.Join([]string{"bookworm minbase", "locales postgresql-15 gosu", "en_US.utf8", "uid/gid 999",
	"create_main_cluster=false", "listen_addresses=*", "/var/run/postgresql 3777", "PGDATA 1777",
	"v3", entrypoint}, "\n")

// CacheDir is where built images are kept between runs on one machine:
// $UNDERSTUDY_TEST_CACHE, else /var/cache/understudy-test.
func CacheDir() string {
	if d := os.Getenv("UNDERSTUDY_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/understudy-test"
}

// ImageTar returns a `docker load` tarball of the image, building it on
// first use on this machine (about a minute: debootstrap, then apt-get in
// the chroot). Concurrent test processes wait for one build.
func ImageTar(ctx context.Context, logf func(string, ...any)) (string, error) {
	sum := sha256.Sum256([]byte(recipe))
	dir := CacheDir()
	path := filepath.Join(dir, "postgres15-"+hex.EncodeToString(sum[:6])+".tar")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(path); err == nil {
		return path, nil // another process built it meanwhile
	}
	start := time.Now()
	logf("building the %s test image from Debian packages (once per machine; cached in %s)", ImageTag, dir)
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	if err := buildRootfs(ctx, rootfs); err != nil {
		return "", err
	}
	layer := filepath.Join(work, "layer.tar")
	if err := run(ctx, "tar", "--numeric-owner", "--xattrs", "-C", rootfs, "--exclude=./proc/*", "--exclude=./sys/*",
		"--exclude=./dev/*", "-cf", layer, "."); err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := writeArchive(layer, tmp); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	logf("built the test image in %.0f s", time.Since(start).Seconds())
	return path, nil
}

// buildRootfs follows the official postgres 15 bookworm Dockerfile's
// steps, with Debian's own PostgreSQL 15 instead of the PGDG build.
func buildRootfs(ctx context.Context, rootfs string) error {
	args := []string{"--variant=minbase", "bookworm", rootfs}
	if m := debimage.AptMirror(); m != "" {
		args = append(args, m)
	}
	if err := run(ctx, "debootstrap", args...); err != nil {
		return fmt.Errorf("debootstrap (apt-get install debootstrap; it fetches Debian's packages): %w", err)
	}
	in := func(argv ...string) error { return run(ctx, "chroot", append([]string{rootfs}, argv...)...) }
	steps := []func() error{
		func() error { return in("groupadd", "-r", "-g", "999", "postgres") },
		func() error {
			return in("useradd", "-r", "-g", "postgres", "-u", "999", "--home-dir=/var/lib/postgresql", "--shell=/bin/bash", "postgres")
		},
		func() error {
			d := filepath.Join(rootfs, "etc/postgresql-common/createcluster.d")
			os.MkdirAll(d, 0o755)
			return os.WriteFile(filepath.Join(d, "understudy-test.conf"), []byte("create_main_cluster = false\n"), 0o644)
		},
		func() error {
			proc := filepath.Join(rootfs, "proc")
			if err := run(ctx, "mount", "-t", "proc", "proc", proc); err != nil {
				return err
			}
			defer run(context.WithoutCancel(ctx), "umount", proc)
			// locales first, then en_US.UTF-8 generated and LANG set to it, as
			// the official image's Dockerfile does: initdb then writes
			// en_US.utf8 into every cluster's postgresql.conf and databases.
			c := exec.CommandContext(ctx, "chroot", rootfs, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "locales", "postgresql-15", "gosu")
			c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := c.CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get install postgresql-15 gosu in the image: %v\n%s", err, debimage.Tail(string(out), 15))
			}
			return nil
		},
		func() error {
			f, err := os.OpenFile(filepath.Join(rootfs, "etc/locale.gen"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			f.WriteString("en_US.UTF-8 UTF-8\n")
			f.Close()
			return in("locale-gen")
		},
		func() error {
			return in("sed", "-ri", `s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!`, "/usr/share/postgresql/15/postgresql.conf.sample")
		},
		func() error {
			for _, d := range []struct {
				path string
				mode os.FileMode
			}{{"var/run/postgresql", 0o3777}, {"var/lib/postgresql/data", 0o1777}, {"docker-entrypoint-initdb.d", 0o755}} {
				p := filepath.Join(rootfs, d.path)
				if err := os.MkdirAll(p, 0o755); err != nil {
					return err
				}
				if d.path != "docker-entrypoint-initdb.d" {
					os.Chown(p, 999, 999)
				}
				if err := os.Chmod(p, d.mode); err != nil {
					return err
				}
			}
			return os.WriteFile(filepath.Join(rootfs, "usr/local/bin/docker-entrypoint.sh"), []byte(entrypoint), 0o755)
		},
		func() error {
			for _, g := range []string{"var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale"} {
				os.RemoveAll(filepath.Join(rootfs, g))
			}
			return os.MkdirAll(filepath.Join(rootfs, "var/lib/apt/lists/partial"), 0o755)
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// imageConfig is the image's runtime config, as the official image sets it.
func imageConfig(diffID string) ([]byte, error) {
	created := "2026-01-01T00:00:00Z"
	cfg := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      created,
		"config": map[string]any{
			"Env": []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/15/bin",
				"LANG=en_US.utf8", "PG_MAJOR=15", "PGDATA=/var/lib/postgresql/data",
			},
			"Entrypoint":   []string{"docker-entrypoint.sh"},
			"Cmd":          []string{"postgres"},
			"StopSignal":   "SIGINT",
			"Volumes":      map[string]any{"/var/lib/postgresql/data": map[string]any{}},
			"ExposedPorts": map[string]any{"5432/tcp": map[string]any{}},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diffID}},
		"history": []map[string]any{{"created": created, "created_by": "understudy internal/dockertest: Debian bookworm minbase + postgresql-15 + gosu"}},
	}
	return json.Marshal(cfg)
}

// writeArchive writes the `docker save` layout around one layer.
func writeArchive(layerPath, out string) error {
	lf, err := os.Open(layerPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	h := sha256.New()
	size, err := io.Copy(h, lf)
	if err != nil {
		return err
	}
	diffID := hex.EncodeToString(h.Sum(nil))
	cfg, err := imageConfig(diffID)
	if err != nil {
		return err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{ImageTag}, "Layers": []string{diffID + "/layer.tar"}}})
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	add := func(name string, body []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	if err := add(cfgName, cfg); err != nil {
		f.Close()
		return err
	}
	tw.WriteHeader(&tar.Header{Name: diffID + "/", Mode: 0o755, Typeflag: tar.TypeDir})
	if err := tw.WriteHeader(&tar.Header{Name: diffID + "/layer.tar", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		f.Close()
		return err
	}
	lf.Seek(0, io.SeekStart)
	if _, err := io.Copy(tw, lf); err != nil {
		f.Close()
		return err
	}
	if err := add("manifest.json", manifest); err != nil {
		f.Close()
		return err
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, debimage.Tail(string(out), 15))
	}
	return nil
}
