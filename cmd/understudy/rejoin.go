package main

import (
	"io"

	"github.com/understudy-dev/understudy/live"
)

func rejoinCommand(out io.Writer) command {
	return &roleCommand{out: out, name: "rejoin", run: live.Rejoin,
		summary: "bring former primary NODE back as a standby: re-point, pg_rewind or fresh clone",
		fence:   "also when NODE still accepts writes: what was written to it since the split is discarded"}
}
