// Command testimage builds (or finds in the cache) the test image of a
// PostgreSQL major and prints its path; with -bindir, the directory of that
// major's programs for the lab on this machine (UNDERSTUDY_PG_BINDIR).
// scripts/test-majors runs it; it is also how to time a build:
//
//	time go run ./internal/dockertest/testimage -major 18
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/internal/dockertest"
)

func main() {
	major := flag.Int("major", dockertest.DefaultMajor, fmt.Sprintf("the PostgreSQL major, one of %v", dockertest.Majors()))
	bindir := flag.Bool("bindir", false, "print the directory of the major's programs for this machine instead of the image's path")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "testimage: "+format+"\n", a...) }
	var path string
	var err error
	if *bindir {
		path, err = dockertest.PGBinDir(ctx, *major, logf)
	} else {
		var img dockertest.Image
		if img, err = dockertest.ImageFor(*major); err == nil {
			path, err = dockertest.ImageTar(ctx, img, logf)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testimage:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
