package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/examples"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/internal/pgxwriter"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/setup"
)

// demoCommand runs the whole flow on the guide's example app, on this machine.
type demoCommand struct{ out io.Writer }

func (*demoCommand) Name() string { return "demo" }
func (*demoCommand) Summary() string {
	return "plan, init and run a primary + standby locally for the guide's app, then clean up"
}

func (c *demoCommand) Run(ctx context.Context, args []string) error {
	flags := flag.NewFlagSet("demo", flag.ContinueOnError)
	keep := flags.Bool("keep", false, "leave the lab running and its directory in place")
	if err := flags.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	say := func(format string, a ...any) { fmt.Fprintf(c.out, format+"\n", a...) }
	tmp, err := os.MkdirTemp("", "understudy-lab-")
	if err != nil {
		return err
	}
	os.Chmod(tmp, 0o755) // the lab's servers run as the postgres user when root
	app := filepath.Join(tmp, "teamyap")
	if err := copyEmbedded(examples.FS, "teamyap", app); err != nil {
		return err
	}

	say("understudy demo: TeamYap, the app of the replication guide, with its database made highly available.")
	// Step 8 needs the lab's S3 server: say now when it cannot run here,
	// and run the other steps.
	_, storageErr := lab.StorageReady()
	if storageErr != nil {
		say("note: step 9 (backups) will be skipped: %v", storageErr)
	}
	say("\n1. plan: read %s and show what would change", filepath.Join(app, "config/deploy.yml"))
	o := setup.Options{ReplicaHost: "123.123.123.125", ReplicaIP: "10.0.1.3", Env: os.LookupEnv}
	p, err := setup.Build(kamal.DirSource(app), o)
	if err != nil {
		return err
	}
	for _, ch := range p.Changes {
		verb := "edit  "
		if !ch.Exists {
			verb = "create"
		}
		say("   %s %s", verb, ch.Path)
	}
	say("   (understudy plan --replica-host 123.123.123.125 --replica-ip 10.0.1.3 prints the full diff)")
	say("\n2. init: write it")
	if err := writeChanges(app, p.Changes); err != nil {
		return err
	}
	again, err := setup.Build(kamal.DirSource(app), o)
	if err != nil {
		return err
	}
	say("   wrote %d files; running init again would change %d", len(p.Changes), len(again.Changes))

	say("\n3. lab: the same boot script, settings and pg_hba, rendered for two local PostgreSQL servers")
	ports, err := netutil.FreePorts(2)
	if err != nil {
		return err
	}
	_, noRouter := lab.FindHAProxy()
	l, err := lab.Create(ctx, filepath.Join(tmp, "lab"), lab.Config{Names: []string{p.Primary, p.Standby}, Ports: ports, Password: newPassword(32),
		Agents: true, MonitorPassword: newPassword(32), Router: noRouter == nil})
	if err != nil {
		return err
	}
	if !*keep {
		defer func() {
			say("\ncleaning up: stopping both servers and removing %s", tmp)
			if err := l.Down(context.WithoutCancel(ctx)); err != nil {
				say("   %v", err)
				return
			}
			os.RemoveAll(tmp)
		}()
	}
	say("   nodes: %s on 127.0.0.1:%d, %s on 127.0.0.1:%d; nothing runs yet", p.Primary, ports[0], p.Standby, ports[1])

	say("\n4. apply: bring the lab to the plan (what `understudy apply` does on Kamal)")
	t0 := time.Now()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true, Out: indentWriter{c.out, "   "}, Timeout: 2 * time.Minute}); err != nil {
		return err
	}
	say("   streaming %.1f s after the first server started", time.Since(t0).Seconds())
	res, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Out: io.Discard})
	if err != nil {
		return err
	}
	say("   apply again: %d changes (nothing to do)", len(res.Actions))
	if noRouter == nil {
		// The node agents and the router run before status and check read
		// them (step 8 shows what they do).
		say("   the node agents and the router (step 8):")
		if err := labRoutingUp(ctx, indentWriter{c.out, " "}, l, true); err != nil {
			return err
		}
	}

	say("\n5. verify: a write on the primary reaches the standby")
	vr, err := live.Verify(ctx, l.Target(), 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprint(c.out, indent(VerifyText(vr), "   "))

	say("\n6. status")
	st, err := live.Gather(ctx, l.Target())
	if err != nil {
		return err
	}
	fmt.Fprint(c.out, indent(live.StatusText(st), "   "))
	fs := live.Check(st, l.Cluster, live.DefaultThresholds)
	say("\n7. check: %d finding(s)", len(fs))
	if len(fs) > 0 {
		fmt.Fprint(c.out, indent(live.FindingsText(fs), "   "))
	}
	if noRouter != nil {
		say("\n8. router: skipped (%v)", noRouter)
	} else if err := demoRouter(ctx, c.out, l, p.Primary, p.Standby, say); err != nil {
		return err
	}
	if storageErr != nil {
		say("\n9. backups: skipped (no S3 server here; see the note at the start)")
	} else if err := demoBackups(ctx, c.out, l, p.Primary, *keep, say); err != nil {
		return err
	}
	if noRouter == nil {
		if err := demoFailover(ctx, c.out, filepath.Join(tmp, "lab-failover"), p.Primary, p.Standby, say); err != nil {
			return err
		}
	} else {
		say("\n10. automatic failover: skipped (%v)", noRouter)
	}
	if *keep {
		what := "both servers"
		if storageErr == nil {
			what = "both servers, the storage and the backup agent"
		}
		say("left running (%s): understudy status --lab %s; stop and remove with: understudy lab down --dir %s", what, l.Dir, l.Dir)
	}
	say("done in %.1f s.", time.Since(start).Seconds())
	return nil
}

func copyEmbedded(src fs.FS, root, dst string) error {
	return fs.WalkDir(src, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, strings.TrimPrefix(p, root))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := fs.ReadFile(src, p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// indentWriter prefixes every line written through it.
type indentWriter struct {
	w      io.Writer
	prefix string
}

func (iw indentWriter) Write(p []byte) (int, error) {
	_, err := io.WriteString(iw.w, indent(string(p), iw.prefix))
	return len(p), err
}

// demoRouter: the node agents and the router, and an app writer that
// knows one host (the router's) kept writing across a switchover and back.
func demoRouter(ctx context.Context, out io.Writer, l *lab.Lab, primary, standby string, say func(string, ...any)) error {
	say("\n8. router: a node agent per server, HAProxy in front, and an app that knows one host")
	w, err := demoAppWriter(ctx, l, primary)
	if err != nil {
		return err
	}
	defer w.Stop()
	waitAck := func(since time.Time) (pgxwriter.Attempt, error) {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if a, ok := pgxwriter.FirstAckAfter(w.Log(), since); ok {
				return a, nil
			}
		}
		return pgxwriter.Attempt{}, fmt.Errorf("the app writer wrote nothing through the router for 30 s")
	}
	first, err := waitAck(time.Time{})
	if err != nil {
		return err
	}
	say("   the app writes a row every 50 ms to 127.0.0.1:%d; the first went to %s", l.Router().Port, nodeAt(l, first.Node))
	for _, to := range []string{standby, primary} {
		from := time.Now()
		if _, err := live.Switchover(ctx, l.Target(), to, live.RoleOptions{}); err != nil {
			return err
		}
		a, err := waitAck(time.Now())
		if err != nil {
			return err
		}
		say("   understudy switchover %s: the app's writes paused %d ms, then went to %s; no restart, no new address", to, pgxwriter.LongestPause(w.Log(), from, time.Now()).Milliseconds(), nodeAt(l, a.Node))
	}
	w.Stop()
	n, _ := l.Cluster.Node(primary)
	lost, err := pgxwriter.Lost(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", filepath.Join(l.Dir, "sock", primary), n.Port), w.Log())
	if err != nil {
		return err
	}
	say("   ✓ %d rows acknowledged through the router, %d missing from %s", len(pgxwriter.Acked(w.Log())), len(lost), primary)
	return nil
}

// demoAppWriter is the demo's app: a login of its own and a writer that
// knows one host, the router's, and writes a row every 50 ms.
func demoAppWriter(ctx context.Context, l *lab.Lab, primary string) (*pgxwriter.Writer, error) {
	c, err := l.Conn(ctx, primary)
	if err != nil {
		return nil, err
	}
	_, err = c.Exec(ctx, "CREATE ROLE app LOGIN PASSWORD 'app-demo-secret'; "+pgxwriter.CreateSQL+"; GRANT ALL ON "+pgxwriter.Table+" TO app")
	c.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	conn := fmt.Sprintf("host=127.0.0.1 port=%d user=app password=app-demo-secret dbname=postgres target_session_attrs=read-write connect_timeout=2", l.Router().Port)
	return pgxwriter.Start(ctx, "app", conn, 50*time.Millisecond, 5*time.Second), nil
}

// nodeAt names the node behind an address:port the writers record.
func nodeAt(l *lab.Lab, addr string) string {
	for _, n := range l.Cluster.Nodes {
		if nodeAddr(l, n.Name) == addr {
			return n.Name
		}
	}
	return addr
}

// demoBackups: continuous backups from the standby, a bad migration, and
// a point-in-time restore to the second before it.
// With keep, the agent runs as the lab's background service, as `lab up
// --backup` runs it, so it goes on with the lab; otherwise in this process.
func demoBackups(ctx context.Context, out io.Writer, l *lab.Lab, primary string, keep bool, say func(string, ...any)) error {
	say("\n9. backups: WAL streamed from the standby to S3-compatible storage, and a point-in-time restore")
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	if err := labBackupUp(agentCtx, indentWriter{out, " "}, l, !keep); err != nil {
		return err
	}
	c, err := l.Conn(ctx, primary)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	if _, err := c.Exec(ctx, `CREATE TABLE orders (id int PRIMARY KEY, total numeric); INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 5000) g`); err != nil {
		return err
	}
	time.Sleep(1100 * time.Millisecond)
	before := time.Now()
	time.Sleep(100 * time.Millisecond)
	if _, err := c.Exec(ctx, `DROP TABLE orders`); err != nil {
		return err
	}
	say("   the app wrote 5000 orders; then a bad migration dropped the table at %s", time.Now().UTC().Format("15:04:05.000"))
	b, err := backupsOf(ctx, &target{Target: l.Target(), lab: l, close: func() {}})
	if err != nil {
		return err
	}
	if _, _, err := live.WaitArchived(ctx, b.t.Target, b.store, time.Minute); err != nil {
		return err
	}
	dir := filepath.Join(filepath.Dir(l.Dir), "restored")
	req, err := b.restoreRequest(backup.Target{Time: before}, dir, 0)
	if err != nil {
		return err
	}
	say("   understudy restore --to %s --into %s", before.UTC().Format("2006-01-02T15:04:05.000Z"), dir)
	res, srv, err := backup.Restore(ctx, req)
	if err != nil {
		return err
	}
	defer srv.Stop(context.WithoutCancel(ctx))
	rc, err := srv.Conn(ctx)
	if err != nil {
		return err
	}
	var n int
	err = rc.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n)
	rc.Close(ctx)
	if err != nil {
		return fmt.Errorf("the restored copy: %w", err)
	}
	say("   ✓ restored in %.1f s (base backup %s + %d WAL files): the copy has all %d orders; the primary has none", (res.Fetch + res.Replay).Seconds(), res.Base, res.Segments, n)
	return nil
}
