package main

import (
	"context"
	"io"

	"github.com/understudy-dev/understudy/live"
)

func switchoverCommand(out io.Writer) command {
	return &roleCommand{out: out, name: "switchover", run: live.Switchover, plan: planSwitchover,
		summary: "planned swap: make standby NODE the primary with no lost commit; the old primary follows it"}
}

func planSwitchover(ctx context.Context, t live.Target, to string, o live.RoleOptions) (string, error) {
	p, err := live.PlanSwitchover(ctx, t, to, o)
	if err != nil {
		return "", err
	}
	return live.StepsText(p.Steps), nil
}

func roleCommands(out io.Writer) []command {
	return []command{switchoverCommand(out), promoteCommand(out), rejoinCommand(out)}
}
