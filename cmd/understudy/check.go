package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/understudy-dev/understudy/live"
)

type checkCommand struct{ out io.Writer }

func (*checkCommand) Name() string { return "check" }
func (*checkCommand) Summary() string {
	return "find what is wrong and say how to fix it; exit 0 ok, 1 warnings, 2 critical"
}

func (c *checkCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	tf := addTargetFlags(fs)
	th := live.DefaultThresholds
	fs.Int64Var(&th.MaxLagBytes, "max-lag-bytes", th.MaxLagBytes, "warn when a standby's replay is more than this many bytes behind")
	fs.DurationVar(&th.MaxLag, "max-lag", th.MaxLag, "warn when a standby's replay is more than this far behind in time")
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	t, err := tf.parse(ctx, fs, args, false)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer t.close()
	st, err := live.Gather(ctx, t.withBackups(ctx).Target)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	fs2 := live.Check(st, t.Cluster, th)
	if *asJSON {
		if fs2 == nil {
			fs2 = []live.Finding{}
		}
		writeJSON(c.out, fs2)
	} else {
		fmt.Fprint(c.out, live.FindingsText(fs2))
	}
	if w := live.Worst(fs2); w > live.Info {
		return &exitError{code: int(w)}
	}
	return nil
}
