package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/examples"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/setup"
)

// demoCommand runs the whole flow on the guide's example app, on this machine.
type demoCommand struct{ out io.Writer }

func (*demoCommand) Name() string { return "demo" }
func (*demoCommand) Summary() string {
	return "plan, init and run a primary + standby locally for the guide's app, then clean up"
}

func (c *demoCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	keep := fs.Bool("keep", false, "leave the lab running and its directory in place")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	say := func(format string, a ...any) { fmt.Fprintf(c.out, format+"\n", a...) }
	tmp, err := os.MkdirTemp("", "understudy-lab-")
	if err != nil {
		return err
	}
	app := filepath.Join(tmp, "teamyap")
	if err := copyEmbedded(examples.FS, "teamyap", app); err != nil {
		return err
	}

	say("understudy demo: TeamYap, the app of the replication guide, with its database made highly available.")
	say("\n1. plan: read %s and show what would change", filepath.Join(app, "config/deploy.yml"))
	o := setup.Options{ReplicaHost: "123.123.123.125", ReplicaIP: "10.0.1.3", Env: os.LookupEnv}
	p, err := setup.Build(kamal.DirSource(app), o)
	if err != nil {
		return err
	}
	for _, ch := range p.Changes {
		verb := "edit  "
		if !ch.Exists {
			verb = "create"
		}
		say("   %s %s", verb, ch.Path)
	}
	say("   (understudy plan --replica-host 123.123.123.125 --replica-ip 10.0.1.3 prints the full diff)")
	say("\n2. init: write it")
	if err := writeChanges(app, p.Changes); err != nil {
		return err
	}
	again, err := setup.Build(kamal.DirSource(app), o)
	if err != nil {
		return err
	}
	say("   wrote %d files; running init again would change %d", len(p.Changes), len(again.Changes))

	say("\n3. lab: the same boot script, settings and pg_hba, rendered for two local PostgreSQL servers")
	ports, err := netutil.FreePorts(2)
	if err != nil {
		return err
	}
	l, err := lab.New(tmp, []string{p.Primary, p.Standby}, ports, newPassword(32))
	if err != nil {
		return err
	}
	if !*keep {
		defer func() {
			say("\ncleaning up: stopping both servers and removing %s", tmp)
			if err := l.Down(); err != nil {
				say("   %v", err)
			}
		}()
	}
	t0 := time.Now()
	if err := l.Up(ctx, 60*time.Second); err != nil {
		return err
	}
	say("   %s (primary) on 127.0.0.1:%d initialised by its boot script; role %s created from a SCRAM verifier", p.Primary, ports[0], l.Cluster.ReplUser)
	say("   %s cloned itself from %s over slot %s and is streaming (%.1f s)", p.Standby, p.Primary, l.Cluster.Nodes[1].Slot(), time.Since(t0).Seconds())

	say("\n4. verify: a write on the primary reaches the standby")
	res, err := lab.Verify(ctx, l)
	if err != nil {
		return err
	}
	say("   canary row visible on %s after %.1f ms", p.Standby, float64(res.Delay.Microseconds())/1000)
	say("   %s refuses writes: %s", p.Standby, res.StandbyRefusal)

	say("\n5. status")
	st, err := lab.Status(ctx, l)
	if err != nil {
		return err
	}
	say("%s", indent(st, "   "))
	if *keep {
		say("left running in %s (stop with: pg_ctl -D %s/data/<node> stop)", tmp, tmp)
	}
	say("done in %.1f s.", time.Since(start).Seconds())
	return nil
}

func copyEmbedded(src fs.FS, root, dst string) error {
	return fs.WalkDir(src, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, strings.TrimPrefix(p, root))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
