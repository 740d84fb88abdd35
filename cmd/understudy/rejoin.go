package main

import (
	"context"
	"io"

	"github.com/understudy-dev/understudy/live"
)

func rejoinCommand(out io.Writer) command {
	return &roleCommand{out: out, name: "rejoin", run: live.Rejoin, plan: planRejoin,
		summary: "bring former primary NODE back as a standby: re-point, pg_rewind or fresh clone",
		fence:   "also when NODE still accepts writes: what was written to it since the split is discarded"}
}

func planRejoin(ctx context.Context, t live.Target, node string, o live.RoleOptions) (string, error) {
	p, err := live.PlanRejoin(ctx, t, node, o)
	if err != nil {
		return "", err
	}
	if p.Nothing != "" {
		return "  " + p.Nothing + "\n", nil
	}
	return live.StepsText(p.Steps), nil
}
