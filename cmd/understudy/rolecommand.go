package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/understudy-dev/understudy/live"
)

// roleCommand is the shape switchover, promote and rejoin share: one
// node name, a few flags (each command is defined in its own file).
type roleCommand struct {
	out     io.Writer
	name    string
	summary string
	run     func(context.Context, live.Target, string, live.RoleOptions) (*live.RoleResult, error)
	fence   string // help for --fence; "" when the command has none
	// plan gives --dry-run: the steps the command would take, rendered.
	plan func(context.Context, live.Target, string, live.RoleOptions) (string, error)
}

func (c *roleCommand) Name() string    { return c.name }
func (c *roleCommand) Summary() string { return c.summary }

func (c *roleCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	tf := addTargetFlags(fs)
	var o live.RoleOptions
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for a node to stop, start or stream")
	if c.fence != "" {
		fs.BoolVar(&o.Fence, "fence", false, c.fence)
	}
	dryRun := fs.Bool("dry-run", false, "show the steps, and change nothing")
	fs.Usage = func() { fmt.Fprintf(fs.Output(), "usage: understudy %s [flags] NODE\n", c.name); fs.PrintDefaults() }
	// The node name may come before, between or after the flags.
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	node, err := oneNode(c.name, pos)
	if err != nil {
		return err
	}
	t, err := tf.open(ctx)
	if err != nil {
		return err
	}
	defer t.close()
	if err := t.forChange(ctx); err != nil {
		return err
	}
	o.Out = c.out
	if *dryRun {
		text, err := c.plan(ctx, t.Target, node, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "plan:\n%s", text)
		return nil
	}
	start := time.Now()
	res, err := c.run(ctx, t.Target, node, o)
	if err != nil {
		return err
	}
	if res.Path != "" {
		fmt.Fprintf(c.out, "%s: %s\n", node, res.Path)
	}
	if res.WriteOutage > 0 {
		fmt.Fprintf(c.out, "writes were paused for %d ms\n", res.WriteOutage.Milliseconds())
	}
	if res.Routing != "" {
		fmt.Fprintln(c.out, res.Routing)
	}
	fmt.Fprintf(c.out, "done in %.1f s\n", time.Since(start).Seconds())
	return nil
}
