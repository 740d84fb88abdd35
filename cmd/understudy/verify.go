package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/understudy-dev/understudy/live"
)

type verifyCommand struct{ out io.Writer }

func (*verifyCommand) Name() string { return "verify" }
func (*verifyCommand) Summary() string {
	return "prove a write on the primary reaches every standby (measured), and standbys refuse writes"
}

func (c *verifyCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	tf := addTargetFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long a canary may take to arrive")
	t, err := tf.parse(ctx, fs, args, false)
	if err != nil {
		return err
	}
	defer t.close()
	res, err := live.Verify(ctx, t.Target, *timeout)
	if err != nil {
		return err
	}
	fmt.Fprint(c.out, VerifyText(res))
	return nil
}

// VerifyText renders verify's evidence.
func VerifyText(res *live.VerifyResult) string {
	s := ""
	for _, p := range res.Proofs {
		s += fmt.Sprintf("✓ a row written on %s was readable on %s after %.1f ms\n", res.Primary, p.Standby, float64(p.Delay.Microseconds())/1000)
		s += fmt.Sprintf("✓ %s refuses writes: %s\n", p.Standby, p.Refusal)
	}
	for _, o := range res.Outsider {
		s += fmt.Sprintf("✓ %s refuses replication from %s (not a node), even with the right password: %s\n", o.Node, o.From, o.Refusal)
	}
	return s
}
