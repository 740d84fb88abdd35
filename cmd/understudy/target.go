package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"

	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
)

// defaultLabDir is where `lab up` puts a lab unless told otherwise, so the
// other commands find it without flags.
func defaultLabDir() string {
	if d := os.Getenv("UNDERSTUDY_LAB"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "understudy-lab")
}

// targetFlags selects the nodes a live command works on.
type targetFlags struct{ lab *string }

func addTargetFlags(fs *flag.FlagSet) *targetFlags {
	return &targetFlags{lab: fs.String("lab", "", "work on the local lab in this directory (`understudy lab up` makes one; default "+defaultLabDir()+")")}
}

// open returns the target and, for a lab, the lab.
func (t *targetFlags) open() (live.Target, *lab.Lab, error) {
	dir := *t.lab
	if dir == "" {
		if _, err := os.Stat(filepath.Join(defaultLabDir(), "lab.json")); err != nil {
			return live.Target{}, nil, errors.New("no target: pass --lab DIR for a local lab (`understudy lab up` makes one). Driving Kamal accessories over SSH is not built yet")
		}
		dir = defaultLabDir()
	}
	l, err := lab.Open(dir)
	if err != nil {
		return live.Target{}, nil, err
	}
	return l.Target(), l, nil
}
