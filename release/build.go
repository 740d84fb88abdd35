package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/understudy-dev/understudy/atomicfile"
)

// Options of a release build.
type Options struct {
	Version string // 1.2.3
	Source  string // the module's root (holding go.mod)
	Out     string // where the artifacts go; created, must hold no earlier artifacts of Version
	// Commit and Time stamp the build; empty/zero: read from git in Source
	// (HEAD, and its committer time, which archives and gems use as every
	// file's time).
	Commit string
	Time   time.Time
	// AllowDirty builds from a checkout with changes (the commit gets
	// "-dirty"); a release proper is built from a clean one.
	AllowDirty bool
	Platforms  []Platform // default: all of Platforms
	// Gems: "auto" (default) builds them when `gem` is installed, "yes"
	// requires it, "no" skips them.
	Gems string
	Go   string    // the go command (default "go")
	Gem  string    // the gem command (default "gem")
	Log  io.Writer // progress, one line a step
}

// Result lists what a build wrote.
type Result struct {
	Version, Commit string
	Time            time.Time
	Stage           string              // Out/.build-*: the binaries and gem trees, removed by Clean
	Binaries        map[Platform]string // in Stage
	Archives        map[Platform]string
	Gems            map[string]string // gem platform ("" for ruby) → file
	Sums            string            // SHA256SUMS
	Timings         map[string]time.Duration
}

// Artifacts are the files to publish, sorted by name.
func (r *Result) Artifacts() []string {
	var out []string
	for _, a := range r.Archives {
		out = append(out, a)
	}
	for _, g := range r.Gems {
		out = append(out, g)
	}
	out = append(out, r.Sums)
	sort.Strings(out)
	return out
}

// Clean removes the staging directory (the bare binaries).
func (r *Result) Clean() error { return os.RemoveAll(r.Stage) }

// Build compiles understudy for each platform, checks every binary's
// headers, then writes the archives, the gems and SHA256SUMS into Out.
func Build(ctx context.Context, o Options) (*Result, error) {
	if err := CheckVersion(o.Version); err != nil {
		return nil, err
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if o.Gem == "" {
		o.Gem = "gem"
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.Platforms) == 0 {
		o.Platforms = Platforms
	}
	gemCmd := ""
	switch o.Gems {
	case "", "auto", "yes":
		if p, err := exec.LookPath(o.Gem); err == nil {
			gemCmd = p
		} else if o.Gems == "yes" {
			return nil, ErrNoGem
		} else {
			fmt.Fprintf(o.Log, "skipping the gems: %v\n", ErrNoGem)
		}
	case "no":
	default:
		return nil, fmt.Errorf("gems %q: want auto, yes or no", o.Gems)
	}
	if _, err := os.Stat(filepath.Join(o.Source, "go.mod")); err != nil {
		return nil, fmt.Errorf("%s is not understudy's source (no go.mod): run the release from a checkout", o.Source)
	}
	r := &Result{Version: o.Version, Commit: o.Commit, Time: o.Time, Binaries: map[Platform]string{}, Archives: map[Platform]string{},
		Gems: map[string]string{}, Timings: map[string]time.Duration{}}
	if r.Commit == "" || r.Time.IsZero() {
		commit, when, err := gitStamp(ctx, o.Source, o.AllowDirty)
		if err != nil {
			return nil, err
		}
		if r.Commit == "" {
			r.Commit = commit
		}
		if r.Time.IsZero() {
			r.Time = when
		}
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(o.Out, ".build-")
	if err != nil {
		return nil, err
	}
	r.Stage = stage
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(stage)
		}
	}()

	// The binaries, two builds at a time: one go build leaves a core idle
	// while it links or waits on a package the rest depend on.
	start := time.Now()
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for _, p := range o.Platforms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t := time.Now()
			out := filepath.Join(stage, "bin", p.Slug(), "understudy")
			err := buildOne(ctx, o.Go, o.Source, p, r.Version, r.Commit, out)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			r.Binaries[p] = out
			r.Timings["go build "+p.String()] = time.Since(t)
			fmt.Fprintf(o.Log, "built %s in %.1f s\n", p, time.Since(t).Seconds())
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r.Timings["binaries"] = time.Since(start)

	// Archives and gems, two at a time (gzip is the work).
	start = time.Now()
	type job struct {
		name string
		run  func() (string, error)
	}
	var jobs []job
	for _, p := range o.Platforms {
		jobs = append(jobs, job{"archive " + p.String(), func() (string, error) {
			files := append(Contents(p, r.Binaries), File{Name: "README.txt", Mode: 0o644, Data: []byte(ArchiveReadme(r.Version, p))})
			dst := filepath.Join(o.Out, ArchiveName(r.Version, p))
			var buf bytes.Buffer
			if err := WriteTarGz(&buf, strings.TrimSuffix(ArchiveName(r.Version, p), ".tar.gz"), files, r.Time); err != nil {
				return "", err
			}
			return dst, atomicfile.Write(dst, buf.Bytes(), 0o644)
		}})
	}
	if gemCmd != "" {
		gemPlatforms := []string{""}
		gemFor := map[string]Platform{}
		for _, p := range o.Platforms {
			gp, err := GemPlatform(p)
			if err != nil {
				return nil, err
			}
			gemPlatforms = append(gemPlatforms, gp)
			gemFor[gp] = p
		}
		for _, gp := range gemPlatforms {
			jobs = append(jobs, job{"gem " + orRuby(gp), func() (string, error) {
				dir := filepath.Join(stage, "gem", orRuby(gp))
				built, err := buildGem(ctx, gemCmd, dir, r.Version, gp, GemFiles(r.Version, gemFor[gp], gp, r.Binaries), r.Time)
				if err != nil {
					return "", err
				}
				dst := filepath.Join(o.Out, filepath.Base(built))
				return dst, os.Rename(built, dst)
			}})
		}
	}
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t := time.Now()
			dst, err := j.run()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", j.name, err))
				return
			}
			r.Timings[j.name] = time.Since(t)
			fmt.Fprintf(o.Log, "wrote %s in %.1f s\n", filepath.Base(dst), time.Since(t).Seconds())
			if gp, isGem := strings.CutPrefix(j.name, "gem "); isGem {
				if gp == "ruby" {
					gp = ""
				}
				r.Gems[gp] = dst
			} else {
				for _, p := range o.Platforms {
					if j.name == "archive "+p.String() {
						r.Archives[p] = dst
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r.Timings["packages"] = time.Since(start)

	sums, err := SHA256Sums(append(mapValues(r.Archives), mapValues(r.Gems)...))
	if err != nil {
		return nil, err
	}
	r.Sums = filepath.Join(o.Out, "SHA256SUMS")
	if err := atomicfile.Write(r.Sums, []byte(sums), 0o644); err != nil {
		return nil, err
	}
	ok = true
	return r, nil
}

// buildOne builds understudy for p into out and checks what it built.
func buildOne(ctx context.Context, goCmd, src string, p Platform, version, commit, out string) error {
	argv, env := GoBuild(p, version, commit, out)
	cmd := exec.CommandContext(ctx, goCmd, argv...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building understudy for %s (%s %s): %w\n%s", p, goCmd, strings.Join(argv, " "), err, b)
	}
	b, err := Inspect(out)
	if err != nil {
		return err
	}
	if b.Platform != p {
		return fmt.Errorf("the build for %s is a %s executable", p, b.Platform)
	}
	if p.GOOS == "linux" && !b.Static {
		return fmt.Errorf("the build for %s is not static (it needs a program interpreter or shared libraries)", p)
	}
	if p == (Platform{"darwin", "arm64"}) && !b.Signed {
		return fmt.Errorf("the build for %s has no code signature, and macOS on Apple silicon runs none without one", p)
	}
	return nil
}

func mapValues[K comparable](m map[K]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// SHA256Sums is sha256sum's output for files, by base name, sorted:
// `sha256sum -c SHA256SUMS` checks them in the directory that holds them.
func SHA256Sums(files []string) (string, error) {
	sort.Slice(files, func(i, j int) bool { return filepath.Base(files[i]) < filepath.Base(files[j]) })
	var b strings.Builder
	for _, f := range files {
		h := sha256.New()
		fh, err := os.Open(f)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), filepath.Base(f))
	}
	return b.String(), nil
}

// gitStamp is HEAD's commit ("-dirty" appended when the checkout has
// changes and that is allowed) and its committer time.
func gitStamp(ctx context.Context, dir string, allowDirty bool) (string, time.Time, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, bytes.TrimSpace(ee.Stderr))
			}
			return "", fmt.Errorf("git %s in %s: %w (a release is built from a git checkout, or given its commit and time)", strings.Join(args, " "), dir, err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	commit, err := git("rev-parse", "HEAD")
	if err != nil {
		return "", time.Time{}, err
	}
	ct, err := git("log", "-1", "--format=%ct", "HEAD")
	if err != nil {
		return "", time.Time{}, err
	}
	sec, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("reading HEAD's commit time %q: %w", ct, err)
	}
	status, err := git("status", "--porcelain")
	if err != nil {
		return "", time.Time{}, err
	}
	if status != "" {
		if !allowDirty {
			first, _, _ := strings.Cut(status, "\n")
			return "", time.Time{}, fmt.Errorf("the checkout %s has changes (%s …): commit or stash them, so the release is exactly commit %.12s (--allow-dirty builds anyway, stamped %.12s-dirty)", dir, strings.TrimSpace(first), commit, commit)
		}
		commit += "-dirty"
	}
	return commit, time.Unix(sec, 0).UTC(), nil
}
