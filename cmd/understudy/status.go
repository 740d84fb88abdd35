package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/understudy-dev/understudy/live"
)

type statusCommand struct{ out io.Writer }

func (*statusCommand) Name() string { return "status" }
func (*statusCommand) Summary() string {
	return "what every node is doing: role, timeline, WAL, lag, slots (--json for scripts)"
}

func (c *statusCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	tf := addTargetFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON (schema: docs/status-json.md)")
	t, err := tf.parse(ctx, fs, args, false)
	if err != nil {
		return err
	}
	defer t.close()
	st, err := live.Gather(ctx, t.withBackups(ctx).Target)
	if err != nil {
		return err
	}
	if *asJSON {
		err = writeJSON(c.out, st)
	} else {
		fmt.Fprint(c.out, live.StatusText(st))
	}
	if err != nil {
		return err
	}
	// A status that reached no node is not a status: say so in the exit code
	// too, so a script or cron job notices.
	for _, n := range st.Nodes {
		if n.Reachable {
			return nil
		}
	}
	return &exitError{code: 2, err: fmt.Errorf("no node answered (see each node's error above); run `understudy check` for the fixes")}
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
