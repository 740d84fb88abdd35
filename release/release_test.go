package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/internal/version"
)

// The version the tests release. A plain version, so Bundler picks it
// without a pre-release requirement.
const testVersion = "0.9.1"

var tmpRoot string

func TestMain(m *testing.M) {
	code := func() int {
		var err error
		if tmpRoot, err = os.MkdirTemp("", "understudy-release-test-"); err != nil {
			panic(err)
		}
		defer os.RemoveAll(tmpRoot)
		return m.Run()
	}()
	os.Exit(code)
}

// needTool skips a test when a tool it needs is not installed.
func needTool(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (%s; ./scripts/setup-debian installs it)", name, install)
	}
	return p
}

func sourceRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

var full struct {
	sync.Once
	r       *Result
	err     error
	elapsed time.Duration
}

// fullRelease is one release build (all platforms, gems when Ruby is
// installed) shared by the tests of this process.
func fullRelease(t testing.TB) *Result {
	t.Helper()
	needTool(t, "go", "https://go.dev/dl/")
	full.Do(func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		full.r, full.err = Build(ctx, Options{Version: testVersion, Source: sourceRoot(t), Out: filepath.Join(tmpRoot, "dist"),
			AllowDirty: true, Gems: "auto", Log: testLog{t}})
		full.elapsed = time.Since(start)
	})
	if full.err != nil {
		t.Fatalf("release build: %v", full.err)
	}
	t.Logf("the release build took %.1f s (binaries %.1f s)", full.elapsed.Seconds(), full.r.Timings["binaries"].Seconds())
	return full.r
}

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Each binary is the platform it is named for, the Linux ones static, and
// this machine's says the version and commit it was stamped with.
func TestReleaseBinaries(t *testing.T) {
	r := fullRelease(t)
	if len(r.Binaries) != len(Platforms) {
		t.Fatalf("%d binaries, want %d", len(r.Binaries), len(Platforms))
	}
	for _, p := range Platforms {
		b, err := Inspect(r.Binaries[p])
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if b.Platform != p {
			t.Errorf("the %s build is %s", p, b.Platform)
		}
		if p.GOOS == "linux" && !b.Static {
			t.Errorf("the %s build is not static", p)
		}
		if p.GOARCH == "arm64" && p.GOOS == "darwin" && !b.Signed {
			t.Errorf("the %s build has no code signature: Apple silicon would kill it", p)
		}
	}
	here := Platform{runtime.GOOS, runtime.GOARCH}
	if exe, ok := r.Binaries[here]; ok {
		out, err := exec.Command(exe, "version").CombinedOutput()
		want := "understudy " + testVersion + ", commit " + r.Commit + ", "
		if err != nil || !strings.HasPrefix(string(out), want) || !strings.HasSuffix(strings.TrimSpace(string(out)), " "+here.String()) {
			t.Errorf("understudy version: %v\n%s\nwant it to start with %q", err, out, want)
		}
	}
	// Inspect tells a dynamically linked executable (this machine's sh).
	if b, err := Inspect("/bin/sh"); err == nil && b.Static {
		t.Errorf("/bin/sh reads as static")
	}
}

// Each archive holds one directory: the executable for its platform, the
// Linux builds for the other machine in libexec/, a README; SHA256SUMS
// lists every artifact and sha256sum(1) agrees.
func TestReleaseArchives(t *testing.T) {
	r := fullRelease(t)
	for _, p := range Platforms {
		files := readTarGz(t, r.Archives[p])
		root := "understudy-" + testVersion + "-" + p.Slug() + "/"
		want := map[string]string{root + "understudy": r.Binaries[p]}
		for _, q := range Platforms {
			if q.GOOS == "linux" && q != p {
				want[root+"libexec/understudy-linux-"+q.GOARCH] = r.Binaries[q]
			}
		}
		for name, bin := range want {
			b, _ := os.ReadFile(bin)
			if f, ok := files[name]; !ok || !bytes.Equal(f.data, b) || f.mode != 0o755 {
				t.Errorf("%s: %s is missing, differs from the build, or is not 0755", filepath.Base(r.Archives[p]), name)
			}
		}
		if _, ok := files[root+"README.txt"]; !ok || len(files) != len(want)+1 {
			t.Errorf("%s holds %d files, want %d and README.txt", filepath.Base(r.Archives[p]), len(files), len(want))
		}
	}
	sums, _ := os.ReadFile(r.Sums)
	if n := strings.Count(string(sums), "\n"); n != len(r.Archives)+len(r.Gems) {
		t.Errorf("SHA256SUMS has %d lines for %d archives and %d gems:\n%s", n, len(r.Archives), len(r.Gems), sums)
	}
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Log("sha256sum is not installed: SHA256SUMS is not checked with it")
	} else {
		c := exec.Command("sha256sum", "-c", "SHA256SUMS")
		c.Dir = filepath.Dir(r.Sums)
		if out, err := c.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
		}
	}
}

type tarFile struct {
	data []byte
	mode int64
	time time.Time
}

func readTarGz(t testing.TB, file string) map[string]tarFile {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]tarFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = tarFile{b, h.Mode, h.ModTime}
	}
}

// unpack extracts a release archive into dir and returns its top directory.
func unpack(t testing.TB, archive, dir string) string {
	t.Helper()
	var root string
	for name, f := range readTarGz(t, archive) {
		dst := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, f.data, os.FileMode(f.mode)); err != nil {
			t.Fatal(err)
		}
		root = filepath.Join(dir, strings.SplitN(name, "/", 2)[0])
	}
	return root
}

// Reproducible: the same commit gives the same bytes. The archives and
// gems packed again from the binaries into another directory, and the
// linux/amd64 binary built again from a copy of the source at another path
// with an empty build cache (so nothing is reused), are identical.
func TestReleaseReproducible(t *testing.T) {
	r := fullRelease(t)
	ctx := context.Background()
	// The packing, twice.
	again := filepath.Join(tmpRoot, "again")
	os.MkdirAll(again, 0o755)
	for _, p := range Platforms {
		var buf bytes.Buffer
		files := append(Contents(p, r.Binaries), File{Name: "README.txt", Mode: 0o644, Data: []byte(ArchiveReadme(testVersion, p))})
		if err := WriteTarGz(&buf, strings.TrimSuffix(ArchiveName(testVersion, p), ".tar.gz"), files, r.Time); err != nil {
			t.Fatal(err)
		}
		if first, _ := os.ReadFile(r.Archives[p]); !bytes.Equal(first, buf.Bytes()) {
			t.Errorf("the %s archive differs when packed again", p)
		}
	}
	if gem, err := exec.LookPath("gem"); err == nil {
		for gp, first := range r.Gems {
			p := Platform{}
			for _, q := range Platforms {
				if g, _ := GemPlatform(q); g == gp {
					p = q
				}
			}
			dir := filepath.Join(again, "gem-"+orRuby(gp))
			built, err := buildGem(ctx, gem, dir, testVersion, gp, GemFiles(testVersion, p, gp, r.Binaries), r.Time)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(first)
			b, _ := os.ReadFile(built)
			if !bytes.Equal(a, b) {
				t.Errorf("the %s gem differs when built again (%d and %d bytes)", orRuby(gp), len(a), len(b))
			}
		}
	} else {
		t.Log("gem is not installed: the gems' reproducibility is not checked")
	}

	// The linux/amd64 binary, from elsewhere, from nothing cached.
	src := filepath.Join(tmpRoot, "elsewhere", "understudy-src")
	copyTree(t, sourceRoot(t), src)
	p := Platform{"linux", "amd64"}
	out := filepath.Join(tmpRoot, "elsewhere", "understudy")
	argv, env := GoBuild(p, r.Version, r.Commit, out)
	cmd := exec.CommandContext(ctx, "go", argv...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), append(env, "GOCACHE="+filepath.Join(tmpRoot, "elsewhere", "gocache"))...)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building again: %v\n%s", err, b)
	}
	t.Logf("the linux/amd64 build with an empty cache took %.1f s", time.Since(start).Seconds())
	a, _ := os.ReadFile(r.Binaries[p])
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Errorf("the linux/amd64 binary built from %s with an empty cache differs from the release's (%d and %d bytes)", src, len(a), len(b))
	}
}

// copyTree copies the module's source (not .git, dist/ or build output).
func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() && (rel == ".git" || rel == "dist" || strings.HasPrefix(d.Name(), ".build-")) {
			return filepath.SkipDir
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The gem for this machine, installed with `gem install --local` into a
// scratch GEM_HOME, runs understudy in an app through Bundler, as
// `bundle exec understudy` and as a binstub; the platform-less gem says
// what to do instead of failing obscurely.
func TestGemInstallsAndRuns(t *testing.T) {
	gem := needTool(t, "gem", "Debian: apt-get install ruby")
	bundle := needTool(t, "bundle", "Debian: apt-get install bundler")
	ruby := needTool(t, "ruby", "Debian: apt-get install ruby")
	r := fullRelease(t)
	if len(r.Gems) == 0 {
		t.Fatal("the release built no gems although gem is installed")
	}
	local, err := exec.Command(ruby, "-e", "print Gem::Platform.local").Output()
	if err != nil {
		t.Fatal(err)
	}
	file, ok := r.Gems[string(local)]
	if !ok {
		t.Skipf("no gem for this machine's platform %s", local)
	}
	dir := t.TempDir()
	gems, home, app := filepath.Join(dir, "gems"), filepath.Join(dir, "home"), filepath.Join(dir, "app")
	for _, d := range []string{gems, home, app} {
		os.MkdirAll(d, 0o755)
	}
	env := []string{"PATH=" + filepath.Join(gems, "bin") + ":" + os.Getenv("PATH"), "HOME=" + home, "GEM_HOME=" + gems, "GEM_PATH=" + gems,
		"BUNDLE_USER_HOME=" + filepath.Join(home, ".bundle"), "BUNDLE_GEMFILE=" + filepath.Join(app, "Gemfile"), "BUNDLE_SILENCE_ROOT_WARNING=1", "LANG=C.UTF-8"}
	run := func(dir string, name string, args ...string) (string, error) {
		c := exec.Command(name, args...)
		c.Dir, c.Env = dir, env
		out, err := c.CombinedOutput()
		return string(out), err
	}
	if out, err := run(dir, gem, "install", "--local", "--no-document", file); err != nil {
		t.Fatalf("gem install --local %s: %v\n%s", filepath.Base(file), err, out)
	}
	os.WriteFile(filepath.Join(app, "Gemfile"), []byte("source \"https://rubygems.org\"\n\ngem \"understudy\", group: :development\n"), 0o644)
	if out, err := run(app, bundle, "install", "--local"); err != nil {
		t.Fatalf("bundle install --local: %v\n%s", err, out)
	}
	want := "understudy " + testVersion + ", commit " + r.Commit
	if out, err := run(app, bundle, "exec", "understudy", "version"); err != nil || !strings.HasPrefix(out, want) {
		t.Errorf("bundle exec understudy version: %v\n%s\nwant %q", err, out, want)
	}
	if out, err := run(app, bundle, "binstubs", "understudy"); err != nil {
		t.Fatalf("bundle binstubs understudy: %v\n%s", err, out)
	}
	if out, err := run(app, filepath.Join("bin", "understudy"), "version"); err != nil || !strings.HasPrefix(out, want) {
		t.Errorf("bin/understudy version: %v\n%s", err, out)
	}
	// Arguments and the exit status pass through the shim.
	if out, err := run(app, bundle, "exec", "understudy", "no-such-command"); exitCode(err) != 2 || !strings.Contains(out, `unknown command "no-such-command"`) {
		t.Errorf("an unknown command through the gem: %v\n%s", err, out)
	}
	// The installed gem's executable finds the Linux builds beside it.
	spec, err := run(app, bundle, "exec", "ruby", "-e", `print Gem.loaded_specs["understudy"].full_gem_path`)
	if err != nil {
		t.Fatalf("the gem's path: %v\n%s", err, spec)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		l := &Local{Exe: filepath.Join(spec, "libexec", "understudy"), Build: version.Build{Version: testVersion, Commit: r.Commit}}
		got, err := l.Linux(context.Background(), arch)
		if err != nil {
			t.Errorf("the gem's executable finds no linux/%s build: %v", arch, err)
			continue
		}
		if b, err := Inspect(got); err != nil || b.Platform != (Platform{"linux", arch}) || !b.Static {
			t.Errorf("the gem's linux/%s build %s: %+v %v", arch, got, b, err)
		}
	}

	// The platform-less gem, where Bundler would pick it.
	plain := filepath.Join(dir, "plain")
	env[2], env[3] = "GEM_HOME="+plain, "GEM_PATH="+plain
	if out, err := run(dir, gem, "install", "--local", "--no-document", r.Gems[""]); err != nil {
		t.Fatalf("gem install --local %s: %v\n%s", filepath.Base(r.Gems[""]), err, out)
	}
	out, err := run(dir, filepath.Join(plain, "bin", "understudy"), "version")
	if exitCode(err) != 1 || !strings.Contains(out, "bundle lock --add-platform "+string(local)) || !strings.Contains(out, "docs/install.md") {
		t.Errorf("the platform-less gem: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// An executable finds the Linux build for each server machine where its
// release put it: in libexec/ of a macOS archive, itself or libexec/ in a
// Linux one; without libexec/, the error says to reinstall.
func TestLocalFindsTheReleaseBuilds(t *testing.T) {
	r := fullRelease(t)
	ctx := context.Background()
	build := version.Build{Version: testVersion, Commit: r.Commit}
	mac := unpack(t, r.Archives[Platform{"darwin", "arm64"}], t.TempDir())
	linux := unpack(t, r.Archives[Platform{"linux", "amd64"}], t.TempDir())
	cases := []struct{ exe, arch, want string }{
		{filepath.Join(mac, "understudy"), "amd64", filepath.Join(mac, "libexec", "understudy-linux-amd64")},
		{filepath.Join(mac, "understudy"), "arm64", filepath.Join(mac, "libexec", "understudy-linux-arm64")},
		{filepath.Join(linux, "understudy"), "amd64", filepath.Join(linux, "understudy")},
		{filepath.Join(linux, "understudy"), "arm64", filepath.Join(linux, "libexec", "understudy-linux-arm64")},
	}
	for _, c := range cases {
		l := &Local{Exe: c.exe, Build: build}
		got, err := l.Linux(ctx, c.arch)
		if err != nil || got != c.want {
			t.Errorf("%s, linux/%s: %q %v, want %q", c.exe, c.arch, got, err, c.want)
		}
	}
	os.RemoveAll(filepath.Join(mac, "libexec"))
	l := &Local{Exe: filepath.Join(mac, "understudy"), Build: build, Checkout: sourceRoot(t), Go: "go", CacheDir: t.TempDir()}
	if _, err := l.Linux(ctx, "arm64"); err == nil || !strings.Contains(err.Error(), "libexec/ directory was not kept") || !strings.Contains(err.Error(), "Reinstall understudy "+testVersion) {
		t.Errorf("a release without its libexec/: %v", err)
	}
	// go install's layout: $GOPATH/bin/understudy, $GOPATH/bin/linux_arm64/understudy.
	gobin := t.TempDir()
	os.MkdirAll(filepath.Join(gobin, "linux_arm64"), 0o755)
	b, _ := os.ReadFile(r.Binaries[Platform{"linux", "arm64"}])
	os.WriteFile(filepath.Join(gobin, "linux_arm64", "understudy"), b, 0o755)
	l = &Local{Exe: filepath.Join(gobin, "understudy"), Build: version.Build{Version: "v" + testVersion}}
	if got, err := l.Linux(ctx, "arm64"); err != nil || got != filepath.Join(gobin, "linux_arm64", "understudy") {
		t.Errorf("go install's cross-build: %q %v", got, err)
	}
	if _, err := l.Linux(ctx, "amd64"); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go install "+Module+"/cmd/understudy@v"+testVersion) {
		t.Errorf("go install without the cross-build: %v", err)
	}
}

// A dev build with a checkout and Go at hand cross-builds the server's
// binary; without Go, it says exactly what to run.
func TestLocalDevBuild(t *testing.T) {
	needTool(t, "go", "https://go.dev/dl/")
	ctx := context.Background()
	var log bytes.Buffer
	l := &Local{Exe: filepath.Join(t.TempDir(), "understudy"), Build: version.Build{Version: version.Dev}, Checkout: sourceRoot(t), Go: "go",
		CacheDir: t.TempDir(), Log: &log}
	got, err := l.Linux(ctx, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := Inspect(got); err != nil || b.Platform != (Platform{"linux", "arm64"}) || !b.Static {
		t.Errorf("the cross-build %s: %+v %v", got, b, err)
	}
	if !strings.Contains(log.String(), "building understudy for linux/arm64 from the checkout "+sourceRoot(t)) {
		t.Errorf("the build is not announced: %q", log.String())
	}
	log.Reset()
	if again, err := l.Linux(ctx, "arm64"); err != nil || again != got || log.Len() != 0 {
		t.Errorf("a second server of the same machine: %q %v, log %q", again, err, log.String())
	}
	l = &Local{Exe: filepath.Join(t.TempDir(), "understudy"), Build: version.Build{Version: version.Dev}, Checkout: sourceRoot(t)}
	_, err = l.Linux(ctx, "arm64")
	if err == nil || !strings.Contains(err.Error(), "install Go") || !strings.Contains(err.Error(), "CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -o ") {
		t.Errorf("a dev build without Go: %v", err)
	}
	if FindCheckout(filepath.Join(sourceRoot(t), "release", "gem")) != sourceRoot(t) || FindCheckout(t.TempDir()) != "" {
		t.Error("FindCheckout")
	}
}

// The pure parts: the go build flags, the version rules, the layouts.
func TestBuildRules(t *testing.T) {
	argv, env := GoBuild(Platform{"darwin", "arm64"}, "1.2.0", "abc", "/out/understudy")
	if got := strings.Join(argv, " "); got != "build -trimpath -buildvcs=false -gcflags=all=-dwarf=false -ldflags=-s -w -X "+Module+"/internal/version.version=1.2.0 -X "+Module+"/internal/version.commit=abc -o /out/understudy ./cmd/understudy" {
		t.Errorf("GoBuild argv: %s", got)
	}
	if got := strings.Join(env, " "); !strings.Contains(got, "CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 GOFLAGS= ") {
		t.Errorf("GoBuild env: %s", got)
	}
	for v, ok := range map[string]bool{"1.2.0": true, "1.2.0-rc.1": true, "v1.2.0": false, "1.2": false, "1.2.0+meta": false, "1.2.0-": false} {
		if err := CheckVersion(v); (err == nil) != ok {
			t.Errorf("CheckVersion(%q): %v", v, err)
		}
	}
	if GemVersion("1.2.0-rc.1") != "1.2.0.pre.rc.1" || GemName("1.2.0", "arm64-darwin") != "understudy-1.2.0-arm64-darwin.gem" || GemName("1.2.0", "") != "understudy-1.2.0.gem" {
		t.Error("gem names")
	}
	builds := map[Platform]string{}
	for _, p := range Platforms {
		builds[p] = "/b/" + p.Slug()
	}
	names := func(fs []File) string {
		var n []string
		for _, f := range fs {
			n = append(n, f.Name+"="+f.Path)
		}
		return strings.Join(n, " ")
	}
	if got := names(Contents(Platform{"linux", "arm64"}, builds)); got != "understudy=/b/linux-arm64 libexec/understudy-linux-amd64=/b/linux-amd64" {
		t.Errorf("linux/arm64 archive: %s", got)
	}
	if got := names(GemFiles("1.2.0", Platform{"darwin", "amd64"}, "x86_64-darwin", builds)); got != "README.md= exe/understudy= libexec/understudy=/b/darwin-amd64 libexec/understudy-linux-amd64=/b/linux-amd64 libexec/understudy-linux-arm64=/b/linux-arm64" {
		t.Errorf("x86_64-darwin gem: %s", got)
	}
	if got := names(GemFiles("1.2.0", Platform{}, "", builds)); got != "README.md= exe/understudy=" {
		t.Errorf("ruby gem: %s", got)
	}
	spec := Gemspec("1.2.0-rc.1", "aarch64-linux", GemFiles("1.2.0-rc.1", Platform{"linux", "arm64"}, "aarch64-linux", builds))
	for _, want := range []string{`s.version = "1.2.0.pre.rc.1"`, `s.platform = "aarch64-linux"`, `s.bindir = "exe"`, `s.executables = ["understudy"]`,
		`s.files = ["README.md", "exe/understudy", "libexec/understudy", "libexec/understudy-linux-amd64"]`} {
		if !strings.Contains(spec, want) {
			t.Errorf("the gemspec lacks %s:\n%s", want, spec)
		}
	}
}
