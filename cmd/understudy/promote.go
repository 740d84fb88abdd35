package main

import (
	"context"
	"io"

	"github.com/understudy-dev/understudy/live"
)

func promoteCommand(out io.Writer) command {
	return &roleCommand{out: out, name: "promote", run: live.Promote, plan: planPromote,
		summary: "emergency: make standby NODE the primary when the primary is lost (fences the old one)",
		fence:   "stop a primary that is still up and mark it a standby of NODE before promoting"}
}

func planPromote(ctx context.Context, t live.Target, to string, o live.RoleOptions) (string, error) {
	d, err := live.PlanPromote(ctx, t, to, o)
	if err != nil {
		return "", err
	}
	return live.StepsText(d.Steps), nil
}
