package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	cases := []struct {
		name            string
		stampV, stampC  string
		bi              *debug.BuildInfo
		want            Build
		short, describe string
	}{
		{"release build: the stamp wins over the toolchain's record", "1.2.3", rev,
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Build{"1.2.3", rev, "go1.26.8"}, "1.2.3 (0123456789ab)", "1.2.3, commit " + rev + ", go1.26.8"},
		{"go install …@v1.2.3: the module version", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
			Build{"v1.2.3", "", "go1.26.8"}, "v1.2.3", "v1.2.3, go1.26.8"},
		{"go build in a modified checkout: dev and the revision", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201101530-0123456789ab+dirty"}, Settings: vcs(rev, "true")},
			Build{"dev", rev + "-dirty", "go1.26.8"}, "dev (0123456789ab-dirty)", "dev, commit " + rev + "-dirty, go1.26.8"},
		{"go install …@main: the pseudo-version, no VCS record", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201101530-0123456789ab"}},
			Build{"v0.0.0-20261201101530-0123456789ab", "", "go1.26.8"}, "v0.0.0-20261201101530-0123456789ab", "v0.0.0-20261201101530-0123456789ab, go1.26.8"},
		{"go build without VCS stamping (a test binary)", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Build{"dev", "", "go1.26.8"}, "dev", "dev, go1.26.8"},
		{"no build info at all", "", "", nil, Build{"dev", "", "go1.x"}, "dev", "dev, go1.x"},
	}
	for _, c := range cases {
		got := fromBuildInfo(c.stampV, c.stampC, c.bi, "go1.x")
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		if got.Short() != c.short || got.String() != c.describe {
			t.Errorf("%s: Short %q, String %q", c.name, got.Short(), got.String())
		}
	}
}

func TestSame(t *testing.T) {
	a := Build{"1.2.3", "abc", "go1.26.8"}
	if !a.Same(Build{"1.2.3", "abc", "go1.26.9"}) {
		t.Error("the same commit by another toolchain is the same understudy")
	}
	if a.Same(Build{"1.2.4", "abc", "go1.26.8"}) || a.Same(Build{"1.2.3", "abd", "go1.26.8"}) {
		t.Error("another version or commit is not the same understudy")
	}
	if !(Build{}).IsZero() || a.IsZero() {
		t.Error("IsZero")
	}
}
