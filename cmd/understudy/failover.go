package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/understudy-dev/understudy/failover"
)

// failoverCommand: the failover subcommands that need no running cluster.
// (pause, resume and status come with the node agent that runs the
// failover loop.)
type failoverCommand struct{ out io.Writer }

func (*failoverCommand) Name() string { return "failover" }
func (*failoverCommand) Summary() string {
	return "automatic failover: `failover secret` prints a new " + failover.SecretName
}

func (c *failoverCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 1 && args[0] == "secret" {
		fmt.Fprintln(c.out, failover.NewSecret())
		return nil
	}
	return errors.New("usage: understudy failover secret (prints a new " + failover.SecretName + ": store it where POSTGRES_PASSWORD is stored; .kamal/secrets holds only a reference to it)")
}
