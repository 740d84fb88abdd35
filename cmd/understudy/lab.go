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

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgconf"
)

// labCommand runs the cluster as local PostgreSQL processes.
type labCommand struct{ out io.Writer }

func (*labCommand) Name() string { return "lab" }
func (*labCommand) Summary() string {
	return "lab up|down: a primary and standbys as local PostgreSQL processes (--netns: one network namespace each)"
}

func (c *labCommand) Run(ctx context.Context, args []string) error {
	const usage = "usage: understudy lab up [--dir DIR] [--nodes db,db-replica] [--netns] [--bare] [--backup] [--no-router] [--failover [--synchronous]] | understudy lab down [--dir DIR]"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintln(c.out, usage)
		return nil
	}
	if len(args) == 0 || (args[0] != "up" && args[0] != "down") {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("lab "+args[0], flag.ContinueOnError)
	dir := fs.String("dir", defaultLabDir(), "the lab's directory")
	if args[0] == "down" {
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		l, err := lab.Open(*dir)
		if err != nil {
			return err
		}
		if err := l.Down(ctx); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "lab in %s stopped and removed\n", *dir)
		return nil
	}
	nodes := fs.String("nodes", "db,db-replica", "node names, the initial primary first")
	netns := fs.Bool("netns", false, "give each node its own network namespace and address in "+lab.Subnet+".0/24 (root)")
	bare := fs.Bool("bare", false, "only create the lab's files; start nothing (then: understudy apply --lab DIR)")
	walCap := fs.String("wal-cap", pgconf.DefaultLabWALCap, "max_slot_wal_keep_size for the lab")
	withBackup := fs.Bool("backup", false, "also run local S3-compatible storage (versitygw) and the backup agent, and take a first base backup")
	noRouter := fs.Bool("no-router", false, "no router (HAProxy on 127.0.0.1 in front of the nodes); a --netns lab never has one")
	withFailover := fs.Bool("failover", false, "automatic failover: three etcd members on this machine (the two nodes' agents and a witness), a leader lease the router follows")
	synchronous := fs.Bool("synchronous", false, "with --failover: synchronous replication while the standby is in sync (no acknowledged commit lost on failover)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *synchronous && !*withFailover {
		return errors.New("--synchronous goes with --failover")
	}
	if *withFailover && len(strings.Split(*nodes, ",")) != 2 {
		return errors.New("--failover takes two nodes (and a witness, which the lab adds)")
	}
	if *withBackup {
		// Before anything is created: without its storage the lab would
		// fail at the last step.
		if _, err := lab.StorageReady(); err != nil {
			return fmt.Errorf("--backup: %w", err)
		}
	}
	names := strings.Split(*nodes, ",")
	ports, err := netutil.FreePorts(len(names))
	if err != nil {
		return err
	}
	l, err := lab.Create(ctx, *dir, lab.Config{Names: names, Ports: ports, NetNS: *netns, Password: newPassword(32), WALCap: *walCap,
		Agents: true, MonitorPassword: newPassword(32), Router: !*noRouter && !*netns})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "lab created in %s: %d nodes, files in %s/conf\n", l.Dir, len(names), l.Dir)
	if *bare {
		fmt.Fprintf(c.out, "start it with: understudy apply --lab %s\n", l.Dir)
		return nil
	}
	start := time.Now()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true, Out: c.out, Timeout: 10 * time.Minute}); err != nil {
		return fmt.Errorf("%w\nthe lab is left in place for inspection; remove it with: understudy lab down --dir %s", err, l.Dir)
	}
	if *withBackup {
		if err := labBackupUp(ctx, c.out, l, false); err != nil {
			return fmt.Errorf("%w\nthe lab is left in place for inspection; remove it with: understudy lab down --dir %s", err, l.Dir)
		}
	}
	if *withFailover {
		if err := labFailoverUp(ctx, c.out, l, *synchronous); err != nil {
			return fmt.Errorf("%w\nthe lab is left in place for inspection; remove it with: understudy lab down --dir %s", err, l.Dir)
		}
	}
	if err := labRoutingUp(ctx, c.out, l, false); err != nil {
		return fmt.Errorf("%w\nthe lab is left in place for inspection; remove it with: understudy lab down --dir %s", err, l.Dir)
	}
	if *withFailover {
		if err := waitHolder(ctx, l, l.Cluster.InitialPrimary, time.Minute); err != nil {
			return fmt.Errorf("%w\nthe lab is left in place for inspection; remove it with: understudy lab down --dir %s", err, l.Dir)
		}
		fmt.Fprintf(c.out, "  ✓ failover: %s holds the leader lease; kill it and %s takes over by itself (understudy failover status --lab %s)\n",
			l.Cluster.InitialPrimary, otherNode(l, l.Cluster.InitialPrimary), l.Dir)
	}
	fmt.Fprintf(c.out, "lab up in %.1f s. Try: understudy status --lab %s; understudy lab down --dir %s\n", time.Since(start).Seconds(), l.Dir, l.Dir)
	return nil
}

// labFailoverUp turns a running lab's failover on: the members in the
// model (every node boots read-only from now on) and the witness as a
// background service; labRoutingUp then starts the agents with their
// members and failover loops.
func labFailoverUp(ctx context.Context, out io.Writer, l *lab.Lab, synchronous bool) error {
	if err := l.EnableFailover(synchronous); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := l.StartWitness(ctx, exe); err != nil {
		return err
	}
	fmt.Fprintf(out, "  ✓ failover witness (the third etcd member, standing in for an app host); log: %s\n", l.ServiceLog("witness"))
	return nil
}

// waitHolder waits until node's agent reports holding the lease.
func waitHolder(ctx context.Context, l *lab.Lab, node string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := ""
	for time.Now().Before(deadline) {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := l.AgentStatus(sctx, node)
		cancel()
		if err == nil && st.Lease.Holder == node {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = "the lease is held by " + orNone(st.Lease.Holder)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not take the failover lease within %s (%s): see %s", node, limit, last, l.ServiceLog("agent-"+node))
}

func orNone(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}

func otherNode(l *lab.Lab, node string) string {
	for _, n := range l.Cluster.Nodes {
		if n.Name != node {
			return n.Name
		}
	}
	return ""
}

// labRoutingUp starts a running lab's node agents (background processes
// of this executable, or goroutines of this process when inProcess: the
// demo, whose agents end with ctx) and its router.
func labRoutingUp(ctx context.Context, out io.Writer, l *lab.Lab, inProcess bool) error {
	if !l.HasAgents() {
		return nil
	}
	if inProcess {
		for _, n := range l.Cluster.Nodes {
			logf, err := os.OpenFile(l.ServiceLog("agent-"+n.Name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			cfg, err := l.NodeAgentConfig(n.Name, logf)
			if err != nil {
				return err
			}
			ln, err := agent.Listen(n.Agent())
			if err != nil {
				return err
			}
			go func() { agent.New(cfg).Run(ctx, ln); logf.Close() }()
		}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		if err := l.StartNodeAgents(ctx, exe); err != nil {
			return err
		}
	}
	var where []string
	for _, n := range l.Cluster.Nodes {
		where = append(where, n.Name+" "+l.AgentURL(n.Name))
	}
	fmt.Fprintf(out, "  ✓ node agents: %s (GET /primary, /replica, /health, /status, /metrics)\n", strings.Join(where, ", "))
	r := l.Router()
	if r == nil {
		return nil
	}
	if err := l.StartRouter(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "  ✓ router (HAProxy) on 127.0.0.1: writes on port %d, reads on %d, metrics at http://127.0.0.1:%d/metrics\n", r.Port, r.ROPort, r.StatsPort)
	fmt.Fprintf(out, "    an app connects to one host: postgres://USER:PASSWORD@127.0.0.1:%d/DB?target_session_attrs=read-write\n", r.Port)
	return nil
}

// labBackupUp gives a running lab its storage and agent, and waits for the
// agent's first base backup. The agent runs as a background process of
// this executable, or in this process when inProcess (the demo: it ends
// with ctx).
func labBackupUp(ctx context.Context, out io.Writer, l *lab.Lab, inProcess bool) error {
	if _, err := lab.FindVersityGW(); err != nil {
		fmt.Fprintf(out, "  installing versitygw %s (the lab's S3-compatible storage) with go install: about a minute, once\n", lab.VersityGWVersion)
		if _, err := lab.BuildVersityGW(ctx, io.Discard); err != nil {
			return err
		}
	}
	store, err := l.BackupUp(ctx)
	if err != nil {
		return err
	}
	if inProcess {
		key, err := l.BackupKey()
		if err != nil {
			return err
		}
		logf, err := os.OpenFile(l.ServiceLog("agent"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		go func() {
			backup.NewAgent(l.AgentConfig(logf), store, key).Run(ctx)
			logf.Close()
		}()
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		if err := l.StartAgent(exe); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "  ✓ storage %s (versitygw), agent streaming WAL from the standby; log: %s\n", store.Where(), l.ServiceLog("agent"))
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if cat, err := backup.ReadCatalog(ctx, store); err == nil && len(cat.Bases) > 0 {
			b := cat.Bases[0]
			fmt.Fprintf(out, "  ✓ first base backup %s: %.1f MB from %s in %.1f s\n", b.ID, float64(b.Bytes)/(1<<20), b.Source, b.Duration().Seconds())
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("the agent took no base backup within 2 minutes: see %s", l.ServiceLog("agent"))
}
