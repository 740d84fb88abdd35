package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/internal/pgxwriter"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
)

// demoFailover: automatic failover, on a lab of its own made as `lab up
// --failover` makes one (an etcd member in each node agent and a witness,
// the agents and the router as background processes of this executable).
// The app writes through the router; the primary's whole server is killed
// and nobody runs a command: the standby's agent takes the lease and
// promotes, the router follows; the old primary's server comes back
// read-only and its agent rejoins it as the new primary's standby.
func demoFailover(ctx context.Context, out io.Writer, dir, primary, standby string, say func(string, ...any)) error {
	say("\n10. automatic failover (opt-in: `understudy init --failover --witness-host HOST`; here `understudy lab up --failover`)")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ports, err := netutil.FreePorts(2)
	if err != nil {
		return err
	}
	l, err := lab.Create(ctx, dir, lab.Config{Names: []string{primary, standby}, Ports: ports, Password: newPassword(32),
		Agents: true, MonitorPassword: newPassword(32), Router: true})
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Down(context.WithoutCancel(ctx)); err != nil {
			say("   %v", err)
		}
	}()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true, Out: io.Discard, Timeout: 2 * time.Minute}); err != nil {
		return err
	}
	if err := labFailoverUp(ctx, io.Discard, l, false); err != nil {
		return err
	}
	if err := labRoutingUp(ctx, io.Discard, l, false); err != nil {
		return err
	}
	if err := waitHolder(ctx, l, primary, time.Minute); err != nil {
		return err
	}
	// Settled: the holder's agent moves etcd's leader to the witness, away
	// from both database servers (docs/failover.md), before the kill.
	if err := waitEtcdLeader(ctx, l, primary, lab.WitnessName, 30*time.Second); err != nil {
		return err
	}
	say("   a new lab: %s and %s, an etcd member in each node agent and a third on a witness, which leads etcd; %s's agent holds the leader lease", primary, standby, primary)

	w, err := demoAppWriter(ctx, l, primary)
	if err != nil {
		return err
	}
	defer w.Stop()
	ackedBy := func(node string, after time.Time, limit time.Duration) (pgxwriter.Attempt, error) {
		addr := nodeAddr(l, node)
		for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for _, a := range pgxwriter.Acked(w.Log()) {
				if a.Node == addr && a.End.After(after) {
					return a, nil
				}
			}
		}
		return pgxwriter.Attempt{}, fmt.Errorf("no write through the router was acknowledged by %s within %s (logs: %s)", node, limit, l.Dir)
	}
	if _, err := ackedBy(primary, time.Time{}, 30*time.Second); err != nil {
		return err
	}
	say("   the app writes a row every 50 ms through the router (127.0.0.1:%d)", l.Router().Port)

	killed := time.Now()
	if _, err := l.KillServer(primary); err != nil {
		return err
	}
	say("   %s's server dies: its agent, its etcd member and PostgreSQL killed with SIGKILL; nobody runs a command", primary)
	first, err := ackedBy(standby, killed, time.Minute)
	if err != nil {
		return err
	}
	say("   %s's lease ran out, %s's agent took it and promoted %s, the router followed: the app's first write on %s %d ms after the kill", primary, standby, standby, standby, first.End.Sub(killed).Milliseconds())

	// The old primary's server comes back: PostgreSQL boots read-only (the
	// model has failover), then its agent, which rejoins it.
	back := time.Now()
	if err := l.Start(ctx, primary); err != nil {
		return err
	}
	if err := l.StartNodeAgents(ctx, exe); err != nil {
		return err
	}
	if err := waitStreaming(ctx, l, standby, primary, 2*time.Minute); err != nil {
		return err
	}
	c, err := l.Conn(ctx, primary)
	if err != nil {
		return err
	}
	var inRecovery bool
	err = c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
	c.Close(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	if !inRecovery {
		return fmt.Errorf("%s came back writable without the lease: report this as a bug (logs in %s)", primary, l.Dir)
	}
	say("   %s's server comes back: PostgreSQL boots read-only, and its agent rejoins it as %s's standby (%.1f s)", primary, standby, time.Since(back).Seconds())
	w.Stop()
	n, _ := l.Cluster.Node(standby)
	lost, err := pgxwriter.Lost(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", filepath.Join(l.Dir, "sock", standby), n.Port), w.Log())
	if err != nil {
		return err
	}
	say("   ✓ %d rows acknowledged, %d missing from %s (asynchronous replication can lose the last moment's commits; --synchronous loses none)", len(pgxwriter.Acked(w.Log())), len(lost), standby)
	return nil
}

// nodeAddr is a node's address:port as the writers record it.
func nodeAddr(l *lab.Lab, node string) string {
	n, _ := l.Cluster.Node(node)
	return fmt.Sprintf("%s:%d", n.Addr, n.Port)
}

// waitStreaming waits until standby streams from primary.
func waitStreaming(ctx context.Context, l *lab.Lab, primary, standby string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := l.Conn(ctx, primary)
		if err == nil {
			var n int
			err = c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", standby).Scan(&n)
			c.Close(context.WithoutCancel(ctx))
			if err == nil && n == 1 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not stream from %s within %s (see %s)", standby, primary, limit, l.ServiceLog("agent-"+standby))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitEtcdLeader waits until node's agent reports member leading etcd.
func waitEtcdLeader(ctx context.Context, l *lab.Lab, node, member string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := l.AgentStatus(sctx, node)
		cancel()
		var r failover.Report
		if err == nil && json.Unmarshal(st.Failover, &r) == nil {
			for _, m := range r.Members {
				if m.Leader && m.Name == member {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd's leader did not move to %s within %s (see %s)", member, limit, l.ServiceLog("agent-"+node))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
