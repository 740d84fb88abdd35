package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/pgconf"
)

// agentCommand runs the node agent: one per database server.
type agentCommand struct{ out io.Writer }

func (*agentCommand) Name() string { return "agent" }
func (*agentCommand) Summary() string {
	return "the node agent: role checks for the router (/primary, /replica, /health), /status and /metrics"
}

// Where the agent finds things in its accessory's container.
const (
	agentClusterPath = pgconf.MountPoint + "/cluster.json"
)

func (c *agentCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	labDir := fs.String("lab", "", "run as the agent of a node of the local lab in this directory")
	clusterFile := fs.String("cluster", agentClusterPath, "the cluster model (cluster.json, as init writes it)")
	node := fs.String("node", os.Getenv("UNDERSTUDY_NODE"), "this server's node (default $UNDERSTUDY_NODE)")
	listen := fs.String("listen", "", "address:port to serve on (default: the node's private address and agent port from the model)")
	pgHost := fs.String("pg-host", "", "the local PostgreSQL: a socket directory or an address (default: the node's address)")
	pgPort := fs.Int("pg-port", 0, "its port (default: the node's)")
	interval := fs.Duration("interval", agent.DefaultInterval, "how often PostgreSQL is observed")
	deadline := fs.Duration("deadline", agent.DefaultDeadline, "how long an observation may take before PostgreSQL counts as not answering")
	backupReport := fs.String("backup-report", "", "the backup agent's report (agent-status.json) when it runs on this server, for /metrics")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: every option is a flag (understudy agent -h)", fs.Args())
	}
	if *node == "" {
		return errors.New("which node is this? pass --node NAME (or set UNDERSTUDY_NODE)")
	}
	if *interval < 10*time.Millisecond || *deadline < 50*time.Millisecond {
		return fmt.Errorf("--interval %s / --deadline %s: give at least 10ms and 50ms", *interval, *deadline)
	}
	var cfg agent.Config
	var addr string
	if *labDir != "" {
		l, err := lab.Open(*labDir)
		if err != nil {
			return err
		}
		if cfg, err = l.NodeAgentConfig(*node, c.out); err != nil {
			return err
		}
		n, _ := l.Cluster.Node(*node)
		addr = n.Agent()
	} else {
		b, err := os.ReadFile(*clusterFile)
		if err != nil {
			return fmt.Errorf("reading the cluster model: %w (pass --cluster FILE, or --lab DIR for a lab)", err)
		}
		cl, err := pgconf.UnmarshalCluster(b)
		if err != nil {
			return fmt.Errorf("%s: %w", *clusterFile, err)
		}
		n, ok := cl.Node(*node)
		if !ok {
			return fmt.Errorf("%s has no node %q", *clusterFile, *node)
		}
		if cl.MonitorUser == "" {
			return fmt.Errorf("%s names no monitoring login: it was written before the node agents existed; re-run `understudy init`, then `understudy apply`", *clusterFile)
		}
		password := os.Getenv(pgconf.MonitorSecret)
		if password == "" {
			return fmt.Errorf("%s is not set: the agent's accessory gets it from .kamal/secrets (env.secret); re-run `understudy init`, then `understudy apply`", pgconf.MonitorSecret)
		}
		os.Unsetenv(pgconf.MonitorSecret) // nothing this process starts needs it
		cfg = agent.Config{Node: *node, Log: c.out, PG: agent.PGSource{Host: n.Addr, Port: n.Port, User: cl.MonitorUser, Password: password}}
		for _, p := range cl.Nodes {
			if p.Name != *node {
				cfg.Peers = append(cfg.Peers, agent.Peer{Name: p.Name, Addr: p.Agent()})
			}
		}
		addr = n.Agent()
	}
	if *listen != "" {
		addr = *listen
	}
	if *pgHost != "" {
		cfg.PG.Host = *pgHost
	}
	if *pgPort != 0 {
		cfg.PG.Port = *pgPort
	}
	cfg.Interval, cfg.Deadline, cfg.BackupReport = *interval, *deadline, *backupReport
	l, err := agent.Listen(addr)
	if err != nil {
		return err
	}
	return agent.New(cfg).Run(ctx, l)
}
