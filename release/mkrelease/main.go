// Command mkrelease builds an understudy release: scripts/release runs it.
// See docs/install.md and package release.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/release"
)

func main() {
	fs := flag.NewFlagSet("release", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: scripts/release [flags] VERSION   (e.g. scripts/release 1.2.0)")
		fs.PrintDefaults()
	}
	out := fs.String("out", "", "where the artifacts go (default: dist/VERSION in the checkout)")
	dirty := fs.Bool("allow-dirty", false, "build from a checkout with uncommitted changes (stamped <commit>-dirty)")
	gems := fs.String("gems", "yes", "build the gems: yes (needs Debian's ruby), no, or auto (when gem is installed)")
	platforms := fs.String("platforms", "", "comma-separated GOOS/GOARCH subset (default: all four)")
	// The flags may follow VERSION, as in `scripts/release 1.2.0 --out /tmp/x`.
	args := os.Args[1:]
	var pos []string
	for len(args) > 0 {
		fs.Parse(args)
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fs.Usage()
		os.Exit(2)
	}
	src, err := os.Getwd()
	if err != nil {
		fail(err)
	}
	o := release.Options{Version: pos[0], Source: src, Out: *out, AllowDirty: *dirty, Gems: *gems, Log: os.Stderr}
	if o.Out == "" {
		o.Out = filepath.Join(src, "dist", o.Version)
	}
	if *platforms != "" {
		for _, s := range strings.Split(*platforms, ",") {
			goos, goarch, ok := strings.Cut(strings.TrimSpace(s), "/")
			if !ok {
				fail(fmt.Errorf("--platforms %q: want GOOS/GOARCH pairs such as linux/amd64,darwin/arm64", *platforms))
			}
			o.Platforms = append(o.Platforms, release.Platform{GOOS: goos, GOARCH: goarch})
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	r, err := release.Build(ctx, o)
	if err != nil {
		fail(err)
	}
	if err := r.Clean(); err != nil {
		fail(err)
	}
	fmt.Printf("understudy %s (commit %s) in %s, %.1f s (binaries %.1f s, archives and gems %.1f s):\n",
		r.Version, r.Commit, o.Out, time.Since(start).Seconds(), r.Timings["binaries"].Seconds(), r.Timings["packages"].Seconds())
	for _, a := range r.Artifacts() {
		st, err := os.Stat(a)
		if err != nil {
			fail(err)
		}
		fmt.Printf("  %-44s %6.1f MB\n", filepath.Base(a), float64(st.Size())/1e6)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "release:", err)
	os.Exit(1)
}
