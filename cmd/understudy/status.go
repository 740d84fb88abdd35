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
	st, err := live.Gather(ctx, t.Target)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(c.out, st)
	}
	fmt.Fprint(c.out, live.StatusText(st))
	return nil
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
