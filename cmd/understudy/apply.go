package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/remote"
	"golang.org/x/sys/unix"
)

type applyCommand struct {
	out io.Writer
	in  io.Reader
}

func (*applyCommand) Name() string { return "apply" }
func (*applyCommand) Summary() string {
	return "bring the running nodes to the plan: role, slots, settings, standby clone"
}

func (c *applyCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	tf := addTargetFlags(fs)
	yes := fs.Bool("yes", false, "agree in advance to restarting nodes whose settings need a restart")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long to wait for a node to start, clone and stream")
	dryRun := fs.Bool("dry-run", false, "show the steps apply would take, and change nothing")
	agentBin := fs.String("agent-binary", "", "development: the understudy file to put on the node agents' and the backup accessory's servers (default: the release's Linux build for their machines; docs/install.md)")
	t, err := tf.parse(ctx, fs, args, true)
	if err != nil {
		return err
	}
	defer t.close()
	if *agentBin != "" {
		if t.agent == nil && len(t.RoutingDeployers) == 0 {
			return errors.New("--agent-binary: this app has no node agents and no backup accessory (`understudy init` adds the agents)")
		}
		abs, err := filepath.Abs(*agentBin)
		if err != nil {
			return err
		}
		t.kamal.Builds = remote.FixedBuild(abs)
	}
	// One reading, one decision: what --dry-run prints is the slice that runs.
	start := time.Now()
	if err := live.ReachAll(ctx, t.Target); err != nil {
		return err
	}
	steps, err := live.PlanApply(ctx, t.Target)
	if err != nil {
		return err
	}
	if len(steps) > 0 {
		fmt.Fprintf(c.out, "plan:\n%s\n", live.StepsText(steps))
	}
	if *dryRun {
		if len(steps) == 0 {
			fmt.Fprint(c.out, live.StepsText(nil))
		}
		return nil
	}
	res, err := live.ExecuteApply(ctx, t.Target, steps, live.ApplyOptions{Yes: *yes, Confirm: confirmer(c.in, c.out), Out: c.out, Timeout: *timeout})
	if err != nil {
		return err
	}
	if len(res.Actions) == 0 {
		fmt.Fprintf(c.out, "nothing to do: every node already matches the plan (%.2f s)\n", time.Since(start).Seconds())
		return nil
	}
	fmt.Fprintf(c.out, "applied %d change(s) in %.1f s\n", len(res.Actions), time.Since(start).Seconds())
	return nil
}

// confirmer asks on a terminal; elsewhere it returns nil, so apply refuses
// a restart unless --yes was given.
func confirmer(in io.Reader, out io.Writer) func(string) bool {
	f, ok := in.(*os.File)
	if !ok {
		return nil
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), ioctlReadTermios); err != nil {
		return nil // not a terminal (/dev/null is a character device too)
	}
	return func(prompt string) bool {
		fmt.Fprintf(out, "%s [y/N] ", prompt)
		line, _ := bufio.NewReader(in).ReadString('\n')
		return strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
	}
}
