// Package debimage builds Docker images for tests from Debian's packages,
// with no registry: a base layer made by debootstrap and apt-get in a
// chroot, cached by its recipe, and a top layer of the files a test
// brings, written together in `docker save`'s layout for `docker load`.
package debimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// File is one file of the top layer.
type File struct {
	Path string // inside the image, absolute
	Mode os.FileMode
	Body []byte
}

// Recipe says what an image is made of. Everything in it goes into the
// cache key: a change to any part builds a new image.
type Recipe struct {
	Name     string   // cache file prefix, e.g. "app"
	Tag      string   // what `docker load` names it
	Suite    string   // Debian suite, e.g. "bookworm"
	Packages []string // apt-get install --no-install-recommends
	Files    []File   // the top layer
	// The image's runtime config, as a Dockerfile would set it.
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	StopSignal string
}

// baseKey names the cached base layer: suite and packages only.
func (r Recipe) baseKey() string {
	pk := append([]string(nil), r.Packages...)
	sort.Strings(pk)
	sum := sha256.Sum256([]byte("debimage base v1\n" + r.Suite + "\n" + strings.Join(pk, " ")))
	return hex.EncodeToString(sum[:6])
}

// imageKey names the cached image: the base, the files and the config.
func (r Recipe) imageKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "debimage image v1\n%s\n%s\n", r.baseKey(), r.Tag)
	for _, f := range r.Files {
		fmt.Fprintf(h, "%s %o %d\n", f.Path, f.Mode, len(f.Body))
		h.Write(f.Body)
	}
	cfg, _ := json.Marshal([]any{r.Env, r.Entrypoint, r.Cmd, r.WorkingDir, r.StopSignal})
	h.Write(cfg)
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// Build returns a `docker load` tarball of the image, building what is
// not cached in cacheDir yet (the base layer takes minutes: debootstrap,
// then apt-get in the chroot; the image around a cached base, seconds).
// Concurrent test processes wait for one build; older images of the same
// Name are removed from the cache.
func Build(ctx context.Context, r Recipe, cacheDir string, logf func(string, ...any)) (string, error) {
	out := filepath.Join(cacheDir, r.Name+"-"+r.imageKey()+".tar")
	err := Once(out, func() error {
		base := filepath.Join(cacheDir, r.Name+"-base-"+r.baseKey()+".layer.tar")
		if _, err := os.Stat(base); err != nil {
			start := time.Now()
			logf("building the %s base layer from Debian %s packages (%s; once per machine, cached in %s)", r.Tag, r.Suite, strings.Join(r.Packages, " "), cacheDir)
			if err := buildBase(ctx, r, cacheDir, base); err != nil {
				return err
			}
			logf("built the %s base layer in %.0f s", r.Tag, time.Since(start).Seconds())
		}
		top, err := filesLayer(r.Files)
		if err != nil {
			return err
		}
		tmp := out + ".tmp"
		if err := writeArchive(r, base, top, tmp); err != nil {
			os.Remove(tmp)
			return err
		}
		if err := os.Rename(tmp, out); err != nil {
			return err
		}
		// Earlier images of this name (other files) are dead weight now.
		old, _ := filepath.Glob(filepath.Join(cacheDir, r.Name+"-*.tar"))
		for _, o := range old {
			if o != out && !strings.HasSuffix(o, ".layer.tar") {
				os.Remove(o)
				os.Remove(o + ".lock")
			}
		}
		return nil
	})
	return out, err
}

// Once makes path, once per machine: when it does not exist yet, make runs
// under an exclusive lock (path.lock), so concurrent test processes wait
// for one maker instead of racing. make must create path last, whole
// (write elsewhere, then rename). Not to be nested for one path.
func Once(path string, make func() error) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(path); err == nil {
		return nil // another process made it meanwhile
	}
	return make()
}

// buildBase debootstraps the suite, installs the packages and tars the
// root filesystem into out.
func buildBase(ctx context.Context, r Recipe, cacheDir, out string) error {
	work, err := os.MkdirTemp(cacheDir, "build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	args := []string{"--variant=minbase", r.Suite, rootfs}
	if m := AptMirror(); m != "" {
		args = append(args, m)
	}
	if err := run(ctx, "debootstrap", args...); err != nil {
		return fmt.Errorf("debootstrap (apt-get install debootstrap; it fetches Debian's packages): %w", err)
	}
	proc := filepath.Join(rootfs, "proc")
	if err := run(ctx, "mount", "-t", "proc", "proc", proc); err != nil {
		return err
	}
	// No service may start inside the chroot while packages install.
	os.WriteFile(filepath.Join(rootfs, "usr/sbin/policy-rc.d"), []byte("#!/bin/sh\nexit 101\n"), 0o755)
	c := exec.CommandContext(ctx, "chroot", append([]string{rootfs, "apt-get", "install", "-y", "-qq", "--no-install-recommends"}, r.Packages...)...)
	c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	outb, err := c.CombinedOutput()
	run(context.WithoutCancel(ctx), "umount", proc)
	if err != nil {
		return fmt.Errorf("apt-get install %s in the image: %v\n%s", strings.Join(r.Packages, " "), err, Tail(string(outb), 15))
	}
	os.Remove(filepath.Join(rootfs, "usr/sbin/policy-rc.d"))
	for _, g := range []string{"var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/locale"} {
		os.RemoveAll(filepath.Join(rootfs, g))
	}
	os.MkdirAll(filepath.Join(rootfs, "var/lib/apt/lists/partial"), 0o755)
	tmp := out + ".tmp"
	if err := run(ctx, "tar", "--numeric-owner", "--xattrs", "-C", rootfs, "--exclude=./proc/*", "--exclude=./sys/*",
		"--exclude=./dev/*", "-cf", tmp, "."); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

// filesLayer is the top layer: the files, their parent directories first,
// owned by root, with a fixed time so the same files give the same layer.
func filesLayer(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	when := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dirs := map[string]bool{}
	var addDir func(d string) error
	addDir = func(d string) error {
		if d == "/" || d == "." || dirs[d] {
			return nil
		}
		if err := addDir(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: when})
	}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("image file %q: the path must be absolute", f.Path)
		}
		if err := addDir(path.Dir(f.Path)); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(f.Path, "/"), Mode: int64(f.Mode.Perm()), Size: int64(len(f.Body)),
			Typeflag: tar.TypeReg, ModTime: when}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// config is the image's config JSON (the OCI image config as `docker save` writes it).
func config(r Recipe, diffIDs []string) ([]byte, error) {
	created := "2026-01-01T00:00:00Z"
	c := map[string]any{"Env": r.Env}
	if len(r.Entrypoint) > 0 {
		c["Entrypoint"] = r.Entrypoint
	}
	if len(r.Cmd) > 0 {
		c["Cmd"] = r.Cmd
	}
	if r.WorkingDir != "" {
		c["WorkingDir"] = r.WorkingDir
	}
	if r.StopSignal != "" {
		c["StopSignal"] = r.StopSignal
	}
	ids := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		ids[i] = "sha256:" + d
	}
	return json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux", "created": created, "config": c,
		"rootfs":  map[string]any{"type": "layers", "diff_ids": ids},
		"history": []map[string]any{{"created": created, "created_by": "understudy internal/debimage: Debian " + r.Suite + " minbase + " + strings.Join(r.Packages, " ")}, {"created": created, "created_by": "understudy internal/debimage: files"}},
	})
}

// writeArchive writes the `docker save` layout: config, one directory per
// layer, manifest.json.
func writeArchive(r Recipe, basePath string, top []byte, out string) error {
	bf, err := os.Open(basePath)
	if err != nil {
		return err
	}
	defer bf.Close()
	h := sha256.New()
	baseSize, err := io.Copy(h, bf)
	if err != nil {
		return err
	}
	baseID := hex.EncodeToString(h.Sum(nil))
	topSum := sha256.Sum256(top)
	topID := hex.EncodeToString(topSum[:])
	cfg, err := config(r, []string{baseID, topID})
	if err != nil {
		return err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{r.Tag},
		"Layers": []string{baseID + "/layer.tar", topID + "/layer.tar"}}})
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(w)
	add := func(name string, size int64, body io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := io.Copy(tw, body)
		return err
	}
	if _, err := bf.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	err = add(cfgName, int64(len(cfg)), bytes.NewReader(cfg))
	if err == nil {
		err = tw.WriteHeader(&tar.Header{Name: baseID + "/", Mode: 0o755, Typeflag: tar.TypeDir})
	}
	if err == nil {
		err = add(baseID+"/layer.tar", baseSize, bf)
	}
	if err == nil {
		err = tw.WriteHeader(&tar.Header{Name: topID + "/", Mode: 0o755, Typeflag: tar.TypeDir})
	}
	if err == nil {
		err = add(topID+"/layer.tar", int64(len(top)), bytes.NewReader(top))
	}
	if err == nil {
		err = add("manifest.json", int64(len(manifest)), bytes.NewReader(manifest))
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// AptMirror is the Debian archive this machine's apt uses, so an image
// comes from the same place as the machine's own packages ("" lets
// debootstrap use its default).
func AptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, "/etc/apt/sources.list")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "URIs:" && strings.HasSuffix(strings.TrimRight(fields[1], "/"), "/debian") {
				return fields[1]
			}
			if len(fields) >= 3 && fields[0] == "deb" && strings.HasSuffix(strings.TrimRight(fields[1], "/"), "/debian") {
				return fields[1]
			}
		}
	}
	return ""
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, Tail(string(out), 15))
	}
	return nil
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
