package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/setup"
	"github.com/understudy-dev/understudy/udiff"
)

// planCommand prints what init would change, as a unified diff, and writes nothing.
type planCommand struct{ out io.Writer }

func (*planCommand) Name() string { return "plan" }
func (*planCommand) Summary() string {
	return "show, as a diff, what init would change (writes nothing)"
}

func (c *planCommand) Run(ctx context.Context, args []string) error {
	var sf setupFlags
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	if err := sf.parse(fs, args); err != nil {
		return err
	}
	p, err := setup.Build(kamal.DirSource(sf.dir), sf.opts)
	if err != nil {
		return err
	}
	fmt.Fprint(c.out, renderPlan(p, true))
	if len(p.Changes) > 0 {
		fmt.Fprintln(c.out, "\nNothing was written. Run `understudy init` with the same flags to write it.")
	}
	return nil
}

// appText tells how the app reaches the primary.
func appText(in setup.ConnectInput) string {
	if in.Router != nil {
		return fmt.Sprintf("One DATABASE_URL through the router, on Kamal's network (the app's containers reach it as %s), the same before and after a switchover:\n"+
			"  %s\n"+
			"Reads from the standby: %s\n"+
			"Deploy the app with it once `understudy apply` has booted the router; `understudy connect --stack rails|django|laravel|node|postgresjs|go|python|php` prints each framework's form.\n",
			in.Router.Host, in.RouterURL(false), in.RouterURL(true))
	}
	return "Without the router, each framework takes the node list its own way, and some cannot follow a role change at all:\n" +
		"run `understudy connect --stack rails|django|laravel|node|postgresjs|go|python|php` for yours (node-postgres and Prisma need the router: `understudy init --router`).\n"
}

// renderPlan is the human summary of a plan, with diffs when asked.
func renderPlan(p *setup.Plan, diffs bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Replication for accessory %s (PostgreSQL %d, %s)\n", p.Primary, p.Image.Major, p.Image.Ref)
	fmt.Fprintf(&b, "  primary  %-18s on %s, listening on %s\n", p.Primary, p.PrimaryHost, hostPort(p.Cluster.Nodes[0].Addr, p.Cluster.Nodes[0].Port))
	fmt.Fprintf(&b, "  standby  %-18s on %s, listening on %s\n", p.Standby, p.StandbyHost, hostPort(p.Cluster.Nodes[1].Addr, p.Cluster.Nodes[1].Port))
	if len(p.Changes) == 0 {
		b.WriteString("\nEverything is already in place: nothing to change.\n")
	} else {
		b.WriteString("\nWhat changes:\n")
		for _, n := range p.Notes {
			b.WriteString(indent("- "+n, "  "))
		}
		b.WriteString("\nFiles:\n")
		for _, c := range p.Changes {
			verb := "edit  "
			if !c.Exists {
				verb = "create"
			}
			fmt.Fprintf(&b, "  %s %s\n", verb, c.Path)
		}
	}
	for _, w := range p.Warnings {
		b.WriteString(indent("warning: "+w, ""))
	}
	if diffs {
		for _, c := range p.Changes {
			b.WriteString("\n")
			b.WriteString(udiff.Diff(c.Path, c.Old, c.New, 3, !c.Exists))
		}
	}
	b.WriteString("\nThe replication password:\n")
	b.WriteString(indent(p.SecretHowTo, "  "))
	b.WriteString("\nThe app (suggested, not applied):\n")
	b.WriteString(indent(appText(p.Connect), "  "))
	return b.String()
}

// hostPort is addr:port as a client writes it ([addr]:port for IPv6).
func hostPort(addr string, port int) string { return net.JoinHostPort(addr, strconv.Itoa(port)) }
