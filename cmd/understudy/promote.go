package main

import (
	"io"

	"github.com/understudy-dev/understudy/live"
)

func promoteCommand(out io.Writer) command {
	return &roleCommand{out: out, name: "promote", run: live.Promote,
		summary: "emergency: make standby NODE the primary when the primary is lost (fences the old one)",
		fence:   "stop a primary that is still up and mark it a standby of NODE before promoting"}
}
