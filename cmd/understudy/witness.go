package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/lab"
)

// witnessCommand runs the third etcd member of automatic failover, on an
// app host: a member only, no database.
type witnessCommand struct{ out io.Writer }

func (*witnessCommand) Name() string { return "witness" }
func (*witnessCommand) Summary() string {
	return "automatic failover's third etcd member, on an app host (started by apply or lab up --failover)"
}

func (c *witnessCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("witness", flag.ContinueOnError)
	labDir := fs.String("lab", "", "run as the witness of the local lab in this directory")
	clusterFile := fs.String("cluster", agentClusterPath, "the cluster model (cluster.json, as init writes it)")
	dataDir := fs.String("data", "", "the member's data directory, on a volume of its own (Kamal)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: every option is a flag (understudy witness -h)", fs.Args())
	}
	var fc failover.NodeConfig
	if *labDir != "" {
		l, err := lab.Open(*labDir)
		if err != nil {
			return err
		}
		if fc, err = l.FailoverNodeConfig("", "", c.out); err != nil {
			return err
		}
	} else {
		cl, err := readClusterModel(*clusterFile)
		if err != nil {
			return err
		}
		if cl.Failover == nil {
			return fmt.Errorf("%s has no failover members: run `understudy init --failover --witness-host HOST`", *clusterFile)
		}
		if *dataDir == "" {
			return errors.New("the witness needs --data DIR: its etcd member's data, on a volume of its own")
		}
		secret, err := failover.ParseSecret(os.Getenv(failover.SecretName))
		if err != nil {
			return err
		}
		os.Unsetenv(failover.SecretName)
		fc = failover.NodeConfig{Spec: failover.SpecFor(cl.Failover, cl.Failover.Witness, *dataDir), Secret: secret, Log: c.out}
	}
	n, err := failover.StartNode(ctx, fc)
	if err != nil {
		return fmt.Errorf("starting the witness: %w", err)
	}
	fmt.Fprintf(c.out, "%s understudy witness: %s\n", time.Now().UTC().Format("2006-01-02 15:04:05.000"), n.Describe(fc))
	return n.Run(ctx)
}
