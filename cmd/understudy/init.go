package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/setup"
)

// initCommand writes the replication setup into the app directory.
type initCommand struct{ out io.Writer }

func (*initCommand) Name() string { return "init" }
func (*initCommand) Summary() string {
	return "write the replication setup into the app (deploy.yml, secrets, config/understudy/)"
}

func (c *initCommand) Run(ctx context.Context, args []string) error {
	var sf setupFlags
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	if err := sf.parse(fs, args); err != nil {
		return err
	}
	p, err := setup.Build(kamal.DirSource(sf.dir), sf.opts)
	if err != nil {
		return err
	}
	if err := writeChanges(sf.dir, p.Changes); err != nil {
		return err
	}
	fmt.Fprint(c.out, renderPlan(p, false))
	if len(p.Changes) > 0 {
		fmt.Fprintf(c.out, "\nWrote %d file(s). Next:\n", len(p.Changes))
		if p.Cluster.Failover != nil {
			fmt.Fprintf(c.out, "  1. store the replication password as described above, and %s: make it with `understudy failover secret` and keep it where POSTGRES_PASSWORD is\n", setup.FailoverSecret)
		} else {
			fmt.Fprintln(c.out, "  1. store the replication password as described above")
		}
		fmt.Fprintln(c.out, "  2. review the change (git diff) and commit it")
		fmt.Fprintf(c.out, "  3. understudy apply%s   (creates the role and slot, restarts %s once, clones %s)\n", destFlag(sf.opts.Destination), p.Primary, p.Standby)
	}
	return nil
}

func destFlag(d string) string {
	if d == "" {
		return ""
	}
	return " -d " + d
}

// writeChanges writes every file atomically; generated files first and
// deploy.yml last, so an interrupted init leaves deploy.yml pointing at
// nothing that is missing.
func writeChanges(dir string, changes []setup.FileChange) error {
	for _, c := range changes {
		target := c.Path
		if !filepath.IsAbs(target) { // an absolute secrets_path stays where it is
			target = filepath.Join(dir, c.Path)
		}
		if err := atomicfile.Write(target, []byte(c.New), c.Mode); err != nil {
			return err
		}
	}
	return nil
}
