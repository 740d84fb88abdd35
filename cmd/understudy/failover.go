package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/live"
)

// failoverCommand: pause, resume and status of a running cluster's
// automatic failover (through etcd), and what needs no cluster: a new
// secret, and the watchdog process an agent starts beside itself.
type failoverCommand struct{ out io.Writer }

func (*failoverCommand) Name() string { return "failover" }
func (*failoverCommand) Summary() string {
	return "automatic failover: `failover secret` prints a new " + failover.SecretName
}

const failoverUsage = "usage: understudy failover pause|resume|status [--lab DIR | --app DIR] | understudy failover secret | understudy failover watchdog --pgdata DIR|--pg CONNINFO"

func (c *failoverCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(failoverUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprintln(c.out, failoverUsage)
		return nil
	case "pause", "resume", "status":
		return c.lease(ctx, args[0], args[1:])
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
		pgdata := fs.String("pgdata", "", "the data directory of the PostgreSQL to fence by PID (this process sees its processes)")
		pgConn := fs.String("pg", "", "or fence over SQL: a superuser connection string without its password (PGPASSWORD gives it), a session held open from the start")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		var f failover.Fencer
		switch {
		case *pgdata != "" && *pgConn == "":
			f = failover.ProcessFencer{DataDir: *pgdata}
		case *pgConn != "" && *pgdata == "":
			if strings.Contains(*pgConn, "password") {
				return errors.New("failover watchdog --pg: give the password in PGPASSWORD, never in the arguments")
			}
			sf := &failover.SQLFencer{Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, *pgConn) }}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := sf.Prepare(pctx); err != nil {
				fmt.Fprintf(os.Stderr, "watchdog: %v (it tries again when it must fence)\n", err)
			}
			cancel()
			f = sf
		default:
			return errors.New("failover watchdog needs --pgdata DIR or --pg CONNINFO (the node agent starts it; it is not for a person to run)")
		}
		// Not ended by SIGINT/SIGTERM (which reach the agent's whole process
		// group): it ends when the agent's pipe closes, after fencing if a
		// deadline is still armed, within a lease's TTL.
		return failover.RunWatchdog(context.WithoutCancel(ctx), os.Stdin, f, os.Stderr)
	}
	return fmt.Errorf("failover %s: unknown; %s (store the secret where POSTGRES_PASSWORD is stored; .kamal/secrets holds only a reference to it)", args[0], failoverUsage)
}

// lease pauses, resumes or shows failover on a target.
func (c *failoverCommand) lease(ctx context.Context, what string, args []string) error {
	fs := flag.NewFlagSet("failover "+what, flag.ContinueOnError)
	tf := addTargetFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	t, err := tf.open(ctx)
	if err != nil {
		return err
	}
	defer t.close()
	if t.Cluster.Failover == nil {
		return errors.New("automatic failover is off for this cluster: nothing to " + what + " (a lab: `understudy lab up --failover`)")
	}
	if t.Lease == nil {
		return errors.New("failover is on, but this target has no way to reach etcd from here; the agents keep running it")
	}
	switch what {
	case "pause", "resume":
		if err := t.Lease.SetPaused(ctx, what == "pause"); err != nil {
			return err
		}
		if what == "pause" {
			fmt.Fprintln(c.out, "failover paused: no agent promotes its node or rejoins one by itself until `understudy failover resume`; a primary that loses its lease still fences itself")
		} else {
			fmt.Fprintln(c.out, "failover resumed: a dead primary is replaced by itself again")
		}
		return nil
	}
	st := &live.Status{}
	st.Agents, _ = live.GatherRouting(ctx, t.Target)
	lr, err := t.Lease.ReadLease(ctx)
	if err != nil {
		lr.Error = err.Error()
	}
	st.Lease = &lr
	fmt.Fprint(c.out, strings.TrimPrefix(live.FailoverText(st, true), "\n"))
	return nil
}
