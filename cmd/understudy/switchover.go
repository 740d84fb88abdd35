package main

import (
	"io"

	"github.com/understudy-dev/understudy/live"
)

func switchoverCommand(out io.Writer) command {
	return &roleCommand{out: out, name: "switchover", run: live.Switchover,
		summary: "planned swap: make standby NODE the primary with no lost commit; the old primary follows it"}
}

func roleCommands(out io.Writer) []command {
	return []command{switchoverCommand(out), promoteCommand(out), rejoinCommand(out)}
}
