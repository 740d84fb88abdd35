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
	"strconv"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/internal/debimage"
)

//go:embed docker-entrypoint.sh
var entrypoint string

// Image is one test image: a PostgreSQL major from Debian's own package of
// the Debian release that ships it, in the shape of the official image of
// that major (docker-library/postgres: its Dockerfile's user, locale,
// PGDATA and VOLUME; the entrypoint's documented behaviour).
type Image struct {
	Major  int
	Suite  string // the Debian release whose postgresql-<Major> package it holds
	Tag    string // as in an app's deploy.yml: postgres:<Major>
	PGDATA string // the image's PGDATA
	Volume string // the image's VOLUME: what an app mounts its data directory at
}

// The majors the tests run on. Debian 12 (bookworm) ships 15, Debian 13
// (trixie) 17, and Debian 14 (forky, testing) 18. From 18 on the official
// image keeps PGDATA in /var/lib/postgresql/<major>/docker and its volume is
// /var/lib/postgresql (docker-library/postgres#1259).
var images = map[int]Image{
	15: {Major: 15, Suite: "bookworm", Tag: "postgres:15", PGDATA: "/var/lib/postgresql/data", Volume: "/var/lib/postgresql/data"},
	17: {Major: 17, Suite: "trixie", Tag: "postgres:17", PGDATA: "/var/lib/postgresql/data", Volume: "/var/lib/postgresql/data"},
	18: {Major: 18, Suite: "forky", Tag: "postgres:18", PGDATA: "/var/lib/postgresql/18/docker", Volume: "/var/lib/postgresql"},
}

// DefaultMajor is what the real-Docker tests run on unless told otherwise:
// the guide's app runs postgres:17.
const DefaultMajor = 17

// MajorEnv names the variable that picks the major the tests run on
// (scripts/test-majors sets it).
const MajorEnv = "UNDERSTUDY_TEST_MAJOR"

// Majors lists the majors there is a test image for, oldest first.
func Majors() []int { return []int{15, 17, 18} }

// ImageFor is the test image of a major.
func ImageFor(major int) (Image, error) {
	img, ok := images[major]
	if !ok {
		return Image{}, fmt.Errorf("there is no test image for PostgreSQL %d: the tests run on %v", major, Majors())
	}
	return img, nil
}

// TestMajor is the major the tests run on: $UNDERSTUDY_TEST_MAJOR, else
// DefaultMajor.
func TestMajor() (int, error) {
	v := os.Getenv(MajorEnv)
	if v == "" {
		return DefaultMajor, nil
	}
	m, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a PostgreSQL major, one of %v", MajorEnv, v, Majors())
	}
	if _, err := ImageFor(m); err != nil {
		return 0, fmt.Errorf("%s=%d: %w", MajorEnv, m, err)
	}
	return m, nil
}

// recipe is everything the image is made from; its hash names the cached
// tarball, so a change to any step builds a new one.
func (img Image) recipe() string {
	return strings.Join([]string{img.Suite + " minbase (debootstrap, sid's script)", fmt.Sprintf("locales postgresql-%d gosu", img.Major), "en_US.utf8",
		"uid/gid 999", "/var/lib/postgresql 1777", "create_main_cluster=false", "listen_addresses=*", "/var/run/postgresql 3777",
		"PGDATA " + img.PGDATA, "VOLUME " + img.Volume, "v4", entrypoint}, "\n")
}

// cacheName is the stem of the image's files in the cache.
func (img Image) cacheName() string {
	sum := sha256.Sum256([]byte(img.recipe()))
	return fmt.Sprintf("postgres%d-%s", img.Major, hex.EncodeToString(sum[:6]))
}

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
// the chroot). Concurrent test processes wait for one build of it
// (debimage.Once: a lock per image).
func ImageTar(ctx context.Context, img Image, logf func(string, ...any)) (string, error) {
	dir := CacheDir()
	path := filepath.Join(dir, img.cacheName()+".tar")
	err := debimage.Once(path, func() error {
		start := time.Now()
		logf("building the %s test image from Debian %s's packages (once per machine; cached in %s)", img.Tag, img.Suite, dir)
		work, err := os.MkdirTemp(dir, "build-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(work)
		rootfs := filepath.Join(work, "rootfs")
		if err := buildRootfs(ctx, img, rootfs); err != nil {
			return err
		}
		layer := filepath.Join(work, "layer.tar")
		if err := run(ctx, "tar", "--numeric-owner", "--xattrs", "-C", rootfs, "--exclude=./proc/*", "--exclude=./sys/*",
			"--exclude=./dev/*", "-cf", layer, "."); err != nil {
			return err
		}
		tmp := path + ".tmp"
		if err := writeArchive(img, layer, tmp); err != nil {
			os.Remove(tmp)
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		logf("built the %s test image in %.0f s", img.Tag, time.Since(start).Seconds())
		return nil
	})
	return path, err
}

// debootstrapArgs is debootstrap's command line for a suite. Pure. The
// script is named: bookworm's debootstrap has none for forky, and sid's
// is the one every current Debian suite's links to (trixie's is a link to
// it already), so the same call builds all three.
func debootstrapArgs(suite, rootfs, mirror string) []string {
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	args := []string{"--variant=minbase", suite, rootfs, mirror}
	if _, err := os.Stat(sidScript); err == nil {
		args = append(args, sidScript)
	}
	return args
}

const sidScript = "/usr/share/debootstrap/scripts/sid"

// buildRootfs follows the official postgres image's Dockerfile steps for
// the major (the trixie ones for 17 and 18, bookworm's for 15), with
// Debian's own PostgreSQL instead of the PGDG build.
func buildRootfs(ctx context.Context, img Image, rootfs string) error {
	if err := run(ctx, "debootstrap", debootstrapArgs(img.Suite, rootfs, debimage.AptMirror())...); err != nil {
		return fmt.Errorf("debootstrap %s (apt-get install debootstrap; it fetches Debian's packages): %w", img.Suite, err)
	}
	pkg := fmt.Sprintf("postgresql-%d", img.Major)
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
			c := exec.CommandContext(ctx, "chroot", rootfs, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "locales", pkg, "gosu")
			c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := c.CombinedOutput(); err != nil {
				return fmt.Errorf("apt-get install %s gosu in the %s image: %v\n%s", pkg, img.Suite, err, debimage.Tail(string(out), 15))
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
			return in("sed", "-ri", `s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!`, fmt.Sprintf("/usr/share/postgresql/%d/postgresql.conf.sample", img.Major))
		},
		func() error {
			// The postgres user's home, 1777 as the official Dockerfile
			// makes it; PGDATA made ahead (1777) where the image does (up to 17).
			dirs := []struct {
				path  string
				mode  os.FileMode
				owned bool
			}{{"var/lib/postgresql", 0o1777, true}, {"var/run/postgresql", 0o3777, true}, {"docker-entrypoint-initdb.d", 0o755, false}}
			if img.PGDATA == img.Volume {
				dirs = append(dirs, struct {
					path  string
					mode  os.FileMode
					owned bool
				}{strings.TrimPrefix(img.PGDATA, "/"), 0o1777, true})
			}
			for _, d := range dirs {
				p := filepath.Join(rootfs, d.path)
				if err := os.MkdirAll(p, 0o755); err != nil {
					return err
				}
				if d.owned {
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
func imageConfig(img Image, diffID string) ([]byte, error) {
	created := "2026-01-01T00:00:00Z"
	cfg := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      created,
		"config": map[string]any{
			"Env": []string{
				fmt.Sprintf("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/%d/bin", img.Major),
				"LANG=en_US.utf8", fmt.Sprintf("PG_MAJOR=%d", img.Major), "PGDATA=" + img.PGDATA,
			},
			"Entrypoint":   []string{"docker-entrypoint.sh"},
			"Cmd":          []string{"postgres"},
			"StopSignal":   "SIGINT",
			"Volumes":      map[string]any{img.Volume: map[string]any{}},
			"ExposedPorts": map[string]any{"5432/tcp": map[string]any{}},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + diffID}},
		"history": []map[string]any{{"created": created, "created_by": fmt.Sprintf("understudy internal/dockertest: Debian %s minbase + postgresql-%d + gosu", img.Suite, img.Major)}},
	}
	return json.Marshal(cfg)
}

// writeArchive writes the `docker save` layout around one layer.
func writeArchive(img Image, layerPath, out string) error {
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
	cfg, err := imageConfig(img, diffID)
	if err != nil {
		return err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{img.Tag}, "Layers": []string{diffID + "/layer.tar"}}})
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
