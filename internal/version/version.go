// Package version says which understudy this is: the release version and
// commit a release build is stamped with (-ldflags -X, see release.GoBuild),
// else what the Go toolchain recorded (runtime/debug.BuildInfo: the module
// version of `go install …@vX`, the VCS revision of a build in a checkout).
// The CLI prints it, status reports carry it, and the agents on the servers
// report theirs, so `check` can tell when they differ.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by release builds: -ldflags "-X <this package>.version=1.2.3
// -X <this package>.commit=<40 hex>". Plain strings, so -X can set them.
var (
	version string
	commit  string
)

// Dev is the version of a build that is not a release nor a tagged module.
const Dev = "dev"

// Build is one understudy build. It is comparable (==); Same compares
// what matters between two machines.
type Build struct {
	Version string `json:"version"`          // 1.2.3, v1.2.3 (go install), or "dev"
	Commit  string `json:"commit,omitempty"` // full hex; "-dirty" appended for a modified tree
	Go      string `json:"go"`               // the toolchain, e.g. go1.26.8
}

// Info is this process's build.
func Info() Build {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(version, commit, bi, runtime.Version())
}

// fromBuildInfo: stamped values first, then the toolchain's record. Pure.
func fromBuildInfo(stampedVersion, stampedCommit string, bi *debug.BuildInfo, goVersion string) Build {
	b := Build{Version: stampedVersion, Commit: stampedCommit, Go: goVersion}
	if bi == nil {
		if b.Version == "" {
			b.Version = Dev
		}
		return b
	}
	if bi.GoVersion != "" {
		b.Go = bi.GoVersion
	}
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev != "" && modified {
		rev += "-dirty"
	}
	if b.Version == "" {
		// "(devel)": a build in a checkout without VCS stamping. A
		// pseudo-version (v0.0.0-2026…-abcdef+dirty) with a VCS revision
		// beside it: a build in a checkout, which the commit says better.
		// Otherwise the module's version: `go install …@v1.2.3` (or @main).
		switch v := bi.Main.Version; {
		case v == "" || v == "(devel)", rev != "" && strings.HasPrefix(v, "v0.0.0-"):
			b.Version = Dev
		default:
			b.Version = v
		}
	}
	if b.Commit == "" {
		b.Commit = rev
	}
	return b
}

// Same says whether two builds are the same understudy: version and commit
// (two builds of one commit by different toolchains behave alike).
func (b Build) Same(o Build) bool { return b.Version == o.Version && b.Commit == o.Commit }

// IsZero: nothing known (an agent that reported no version: an older one).
func (b Build) IsZero() bool { return b == Build{} }

// Short is the version with an abbreviated commit, for messages:
// "1.2.3 (1a2b3c4d5e6f)", "dev (1a2b3c4d5e6f-dirty)", "1.2.3".
func (b Build) Short() string {
	if b.IsZero() {
		return "unknown (a build from before versions were reported)"
	}
	if b.Commit == "" {
		return b.Version
	}
	hash, suffix, _ := strings.Cut(b.Commit, "-")
	if len(hash) > 12 {
		hash = hash[:12]
	}
	if suffix != "" {
		hash += "-" + suffix
	}
	return fmt.Sprintf("%s (%s)", b.Version, hash)
}

// String is the whole build: "1.2.3, commit <hex>, go1.26.8".
func (b Build) String() string {
	s := b.Version
	if b.Commit != "" {
		s += ", commit " + b.Commit
	}
	return s + ", " + b.Go
}
