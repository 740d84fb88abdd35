package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/understudy-dev/understudy/failover"
)

// failoverCommand: the failover subcommands that need no running cluster:
// a new secret, and the watchdog process an agent starts beside itself.
// (pause, resume and status come with the node agent that runs the
// failover loop.)
type failoverCommand struct{ out io.Writer }

func (*failoverCommand) Name() string { return "failover" }
func (*failoverCommand) Summary() string {
	return "automatic failover: `failover secret` prints a new " + failover.SecretName
}

const failoverUsage = "usage: understudy failover secret | understudy failover watchdog --pgdata DIR"

func (c *failoverCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(failoverUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprintln(c.out, failoverUsage)
		return nil
	case "secret":
		if len(args) != 1 {
			return errors.New(failoverUsage)
		}
		fmt.Fprintln(c.out, failover.NewSecret())
		return nil
	case "watchdog":
		// Started by the node agent with a pipe on stdin: deadlines in,
		// a fence of PGDATA's PostgreSQL when one passes.
		fs := flag.NewFlagSet("failover watchdog", flag.ContinueOnError)
		pgdata := fs.String("pgdata", "", "the data directory of the PostgreSQL to fence")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *pgdata == "" {
			return errors.New("failover watchdog needs --pgdata DIR (the node agent starts it; it is not for a person to run)")
		}
		// Not ended by SIGINT/SIGTERM (which reach the agent's whole process
		// group): it ends when the agent's pipe closes, after fencing if a
		// deadline is still armed, within a lease's TTL.
		return failover.RunWatchdog(context.WithoutCancel(ctx), os.Stdin, failover.ProcessFencer{DataDir: *pgdata}, os.Stderr)
	}
	return fmt.Errorf("failover %s: unknown; %s (store the secret where POSTGRES_PASSWORD is stored; .kamal/secrets holds only a reference to it)", args[0], failoverUsage)
}
