package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/failover"
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
	withFailover := fs.Bool("failover", false, "run automatic failover: this server's etcd member, the failover loop and its watchdog (the cluster model names the members)")
	failoverData := fs.String("failover-data", "", "with --failover: the etcd member's data directory, on a volume of its own (the lab: under its directory)")
	pgdata := fs.String("pgdata", os.Getenv("PGDATA"), "with --failover: the node's data directory, to fence it (the lab: its own)")
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
	var fc failover.NodeConfig
	exe, err := os.Executable()
	if err != nil {
		return err
	}
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
		if *withFailover {
			if fc, err = l.FailoverNodeConfig(*node, exe, c.out); err != nil {
				return err
			}
		}
	} else {
		cl, err := readClusterModel(*clusterFile)
		if err != nil {
			return err
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
		if *withFailover {
			if fc, err = kamalFailoverConfig(cl, n, *failoverData, *pgdata, exe, c.out); err != nil {
				return fmt.Errorf("%s: %w", *clusterFile, err)
			}
		}
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
	if !*withFailover {
		return agent.New(cfg).Run(ctx, l)
	}
	// Failover: the member joins the other two (up to a minute), then the
	// loop runs beside the agent, which asks it at every /primary check.
	fn, err := failover.StartNode(ctx, fc)
	if err != nil {
		l.Close()
		return fmt.Errorf("starting failover: %w", err)
	}
	fmt.Fprintf(c.out, "%s understudy agent %s: %s\n", time.Now().UTC().Format("2006-01-02 15:04:05.000"), *node, fn.Describe(fc))
	cfg.Failover = fn.Runner
	done := make(chan struct{})
	go func() { fn.Run(ctx); close(done) }()
	err = agent.New(cfg).Run(ctx, l)
	<-done
	return err
}

// kamalFailoverConfig is the failover part of an agent on a Kamal server:
// the member's data on its volume, FAILOVER_SECRET from the accessory's
// secrets, the runner's sessions as the superuser (POSTGRES_PASSWORD: it
// promotes, sets synchronous_standby_names and fences), the fence over SQL
// (failover.SQLFencer: the agent runs in a container of its own, which
// cannot signal PostgreSQL), the node's data directory mounted for the
// fence note, no restart (the container's restart policy starts a fenced
// node) and no automatic rejoin (`understudy rejoin`).
func kamalFailoverConfig(cl pgconf.Cluster, n pgconf.Node, dataDir, pgdata, exe string, log io.Writer) (failover.NodeConfig, error) {
	if cl.Failover == nil {
		return failover.NodeConfig{}, errors.New("--failover, but the cluster model has no failover members: run `understudy init --failover --witness-host HOST`, then `understudy apply`")
	}
	if dataDir == "" || pgdata == "" {
		return failover.NodeConfig{}, errors.New("--failover needs --failover-data DIR (the etcd member's volume) and --pgdata DIR (the node's data directory, mounted here)")
	}
	if _, err := os.Stat(pgdata); err != nil {
		return failover.NodeConfig{}, fmt.Errorf("--pgdata: %w (mount the node's data volume into the agent's container)", err)
	}
	text := os.Getenv(failover.SecretName)
	os.Unsetenv(failover.SecretName)
	secret, err := failover.ParseSecret(text)
	if err != nil {
		return failover.NodeConfig{}, err
	}
	password := os.Getenv("POSTGRES_PASSWORD")
	os.Unsetenv("POSTGRES_PASSWORD") // only the watchdog gets it, in its environment
	if password == "" {
		return failover.NodeConfig{}, errors.New("POSTGRES_PASSWORD is not set: the failover loop promotes and fences its node as the superuser; add it to the agent accessory's env secrets")
	}
	// The image's bootstrap superuser: POSTGRES_USER as the node has it
	// (init gives the agent the same), else the image's default.
	user := os.Getenv("POSTGRES_USER")
	if user == "" {
		user = "postgres"
	}
	conninfo := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres connect_timeout=5", n.Addr, n.Port, conninfoQuote(user))
	cc, err := pgx.ParseConfig(conninfo)
	if err != nil {
		return failover.NodeConfig{}, err
	}
	cc.Password = password
	connect := func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cc) }
	fencer := &failover.SQLFencer{Connect: connect}
	pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := fencer.Prepare(pctx); err != nil {
		fmt.Fprintf(log, "understudy agent %s: the fence's session: %v (it is opened again when needed)\n", n.Name, err)
	}
	cancel()
	fc := failover.NodeConfig{Spec: failover.SpecFor(cl.Failover, n.Name, dataDir), Secret: secret, Node: n.Name,
		Settings: failover.SettingsFor(cl.Failover), Log: log, Fencer: fencer,
		WatchdogArgv: []string{exe, "failover", "watchdog", "--pg", conninfo},
		WatchdogEnv:  append(os.Environ(), "PGPASSWORD="+password)}
	var slots []string
	for _, p := range cl.Nodes {
		if p.Name != n.Name {
			fc.Standbys = append(fc.Standbys, p.Name)
			slots = append(slots, p.Slot())
		}
	}
	fc.PG = &failover.SQLPG{Connect: connect, DataDir: pgdata, Slots: slots}
	return fc, nil
}

// readClusterModel reads the cluster.json an accessory of an agent or of
// the witness has mounted.
func readClusterModel(path string) (pgconf.Cluster, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return pgconf.Cluster{}, fmt.Errorf("reading the cluster model: %w (pass --cluster FILE, or --lab DIR for a lab)", err)
	}
	cl, err := pgconf.UnmarshalCluster(b)
	if err != nil {
		return pgconf.Cluster{}, fmt.Errorf("%s: %w", path, err)
	}
	return cl, nil
}

// conninfoQuote quotes a libpq keyword value (libpq docs: a value with
// spaces is single-quoted, with \\ and \' escaped).
func conninfoQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
