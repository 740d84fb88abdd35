package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
	"github.com/understudy-dev/understudy/remote"
	"github.com/understudy-dev/understudy/setup"
)

// restoreCommand: `restore --to TIME|latest --into DIR`, and `restore drill`.
type restoreCommand struct{ out io.Writer }

func (*restoreCommand) Name() string { return "restore" }
func (*restoreCommand) Summary() string {
	return "restore the backups to a point in time into a new directory (also: restore drill)"
}

// parseTarget reads --to: "latest", RFC 3339, or "2006-01-02 15:04:05[.frac]" (UTC).
func parseTarget(to string, tli int) (backup.Target, error) {
	t := backup.Target{Timeline: pgops.Timeline(tli)}
	if tli < 0 {
		return t, fmt.Errorf("--timeline %d: want a timeline number (`understudy backups` lists them)", tli)
	}
	if to == "latest" {
		t.Latest = true
		return t, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999"} {
		if v, err := time.Parse(layout, to); err == nil {
			t.Time = v
			return t, nil
		}
	}
	return t, fmt.Errorf("--to %q: want latest, or a time such as 2026-12-01T10:15:30Z or \"2026-12-01 10:15:30\" (UTC)", to)
}

func (c *restoreCommand) Run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "drill" {
		return c.drill(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == "--here" {
		return c.here(ctx, args[1:])
	}
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	to := fs.String("to", "", "latest, or a time (RFC 3339, or \"YYYY-MM-DD HH:MM:SS\" in UTC)")
	tli := fs.Int("timeline", 0, "follow this timeline (default: the newest)")
	into := fs.String("into", "", "a node of the cluster (when the cluster is lost: it starts as the primary), or a new or empty directory on this machine")
	port := fs.Int("port", 0, "port for the restored server's socket (default: a free one)")
	agentBin := fs.String("agent-binary", "", "with --into NODE on Kamal: the static Linux understudy binary to run on the node's server (default: this one, when it is)")
	b, err := openBackups(ctx, fs, args)
	if err != nil {
		return err
	}
	defer b.t.close()
	if *to == "" || *into == "" {
		return errors.New("usage: understudy restore --to TIME|latest --into NODE|DIR [--timeline N] [--lab DIR]")
	}
	target, err := parseTarget(*to, *tli)
	if err != nil {
		return err
	}
	if _, ok := b.t.Cluster.Node(*into); ok {
		return c.intoNode(ctx, b, *into, target, *to, *tli, *agentBin)
	}
	dir, err := filepath.Abs(*into)
	if err != nil {
		return err
	}
	req, err := b.restoreRequest(target, dir, *port)
	if err != nil {
		return err
	}
	req.Progress = restoreProgress(c.out)
	fmt.Fprintf(c.out, "restoring to %s into %s\n", target, dir)
	res, srv, err := backup.Restore(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "✓ restored base backup %s and %d WAL files: fetched in %.1f s, recovered in %.1f s\n", res.Base, res.Segments, res.Fetch.Seconds(), res.Replay.Seconds())
	fmt.Fprintf(c.out, "  recovery ended at %s, now on timeline %d; last transaction replayed: %s\n", res.Reached, res.Timeline, timeText(res.LastCommit))
	fmt.Fprintf(c.out, "  it runs as a standalone primary on a local socket only:\n    psql \"host=%s port=%d user=%s dbname=postgres\"\n", srv.Sock, srv.Port, srv.User)
	fmt.Fprintf(c.out, "  stop it with: pg_ctl -D %s stop (as the postgres user)\n", dir)
	return nil
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000000 UTC")
}

func (b *backups) restoreRequest(target backup.Target, dir string, port int) (backup.RestoreRequest, error) {
	key, err := b.needKey()
	if err != nil {
		return backup.RestoreRequest{}, err
	}
	bin, cred, err := b.pgBin()
	if err != nil {
		return backup.RestoreRequest{}, err
	}
	if port == 0 {
		ports, err := netutil.FreePorts(1)
		if err != nil {
			return backup.RestoreRequest{}, err
		}
		port = ports[0]
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return backup.RestoreRequest{}, err
	}
	return backup.RestoreRequest{Store: b.store, Key: key, Target: target, BinDir: bin, Dir: dir, Port: port, Cred: cred, User: b.dbUser()}, nil
}

func restoreProgress(out io.Writer) func(string, backup.Progress) {
	last := time.Time{}
	return func(stage string, p backup.Progress) {
		if time.Since(last) < time.Second && p.Done != p.Total {
			return
		}
		last = time.Now()
		switch stage {
		case "base":
			fmt.Fprintf(out, "  base backup: %s\n", progressText(p))
		case "WAL":
			fmt.Fprintf(out, "  WAL: %d of %d files\n", p.Done, p.Total)
		}
	}
}

// drill restores the latest point into a scratch directory, proves it
// reached where the primary was when the drill began, runs --check, and
// keeps a record. Exit status: 0 passed, 1 failed, 2 could not run.
func (c *restoreCommand) drill(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("restore drill", flag.ContinueOnError)
	check := fs.String("check", "", "an SQL query to run on the restored copy (its first value is recorded); the drill fails if it errors")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	if hasConfigFlag(args) {
		return c.drillInAccessory(ctx, fs, args, check, asJSON)
	}
	b, err := openBackups(ctx, fs, args)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer b.t.close()
	if b.t.agent != nil {
		// Kamal: the drill runs in the backup accessory, with the nodes'
		// own image (its PostgreSQL, its locales), next to the standby.
		argv := []string{setup.BackupBinary, "restore", "drill", "--config", setup.BackupSetupPath}
		if *check != "" {
			argv = append(argv, "--check", *check)
		}
		if *asJSON {
			argv = append(argv, "--json")
		}
		err := b.t.agent.Exec(ctx, c.out, argv...)
		if code := remote.ExitCode(err); code == 1 || code == 2 {
			return &exitError{code: code, err: errors.New("the restore drill in " + b.t.agent.Name + " did not pass")}
		}
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		return nil
	}
	scratch, err := os.MkdirTemp("", "understudy-drill-")
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer os.RemoveAll(scratch)
	os.Chmod(scratch, 0o755)
	req, err := b.restoreRequest(backup.Target{Latest: true}, filepath.Join(scratch, "drill"), 0)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	expected, tli, err := waitArchived(ctx, b.t.Target, req.Store, 2*time.Minute)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	fmt.Fprintf(c.out, "drill: restoring the latest backup; it must reach %s (where the primary was)\n", expected)
	rec, err := backup.Drill(ctx, backup.DrillRequest{RestoreRequest: req, Expected: expected, ExpectedTLI: tli, Check: *check})
	return c.drillResult(rec, err, *asJSON)
}

// drillResult prints a drill's record; exit 0 passed, 1 failed, 2 could not run.
func (c *restoreCommand) drillResult(rec backup.DrillRecord, err error, asJSON bool) error {
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if asJSON {
		writeJSON(c.out, rec)
	} else {
		fmt.Fprint(c.out, drillText(rec))
	}
	if !rec.OK {
		return &exitError{code: 1, err: errors.New("the restore drill failed: " + rec.Error)}
	}
	return nil
}

// drillInAccessory is a drill run inside the backup accessory: where the
// primary is comes from a replication login, and the archive's reach from
// the agent's report in the bucket.
func (c *restoreCommand) drillInAccessory(ctx context.Context, fs *flag.FlagSet, args []string, check *string, asJSON *bool) error {
	a, err := openAccessory(fs, args, io.Discard)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	d, err := a.setup.DrillSchedule(a.sec, a.cfg.BinDir)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if *check != "" {
		d.Check = *check
	}
	cat, err := backup.ReadCatalog(ctx, a.store)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	fmt.Fprintf(c.out, "drill: restoring the latest backup into %s (in the backup accessory)\n", d.Dir)
	rec, err := backup.DrillNow(ctx, &a.cfg, a.store, a.sec.Key, d, cat, func(ctx context.Context) (pgops.LSN, pgops.Timeline, error) {
		st, err := backup.ReadAgentStatus(ctx, a.store)
		return st.ArchivedLSN, st.ArchivedTLI, err
	})
	return c.drillResult(rec, err, *asJSON)
}

func drillText(r backup.DrillRecord) string {
	var b strings.Builder
	if r.OK {
		fmt.Fprintf(&b, "✓ drill %s passed: base %s + %d WAL files restored in %.1f s (fetch %.1f s, recovery %.1f s)\n", r.ID, r.Base, r.Segments, r.Total.Seconds(), r.Fetch.Seconds(), r.Replay.Seconds())
	} else {
		fmt.Fprintf(&b, "✗ drill %s FAILED: %s\n", r.ID, r.Error)
	}
	fmt.Fprintf(&b, "  reached %s (expected at least %s); last transaction %s\n", r.Reached, r.Expected, timeText(r.LastCommit))
	if r.Check != "" {
		fmt.Fprintf(&b, "  check %q → %s\n", r.Check, r.CheckResult)
	}
	b.WriteString("  record stored in the bucket under drills/" + r.ID + ".json\n")
	return b.String()
}

// waitArchived reads where the primary is and waits until the agent
// reports the archive holds it.
func waitArchived(ctx context.Context, t live.Target, store backup.Store, timeout time.Duration) (pgops.LSN, pgops.Timeline, error) {
	var primary string
	for _, n := range t.Cluster.Nodes {
		c, err := t.Control.Conn(ctx, n.Name)
		if err != nil {
			continue
		}
		in, err := pgops.InRecovery(ctx, c)
		if err == nil && !in {
			primary = n.Name
		}
		c.Close(ctx)
	}
	if primary == "" {
		return 0, 0, errors.New("no primary answers: a drill proves the archive against the primary's position")
	}
	c, err := t.Control.Conn(ctx, primary)
	if err != nil {
		return 0, 0, err
	}
	lsn, err := pgops.CurrentWALLSN(ctx, c)
	c.Close(ctx)
	if err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(timeout)
	for {
		st, err := backup.ReadAgentStatus(ctx, store)
		if err == nil && st.ArchivedLSN >= lsn {
			return lsn, st.ArchivedTLI, nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("the archive did not reach %s within %s (agent: %v): see `understudy status`", lsn, timeout, err)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// intoNode restores the backups into a node of a lost cluster, which then
// starts as the primary: Gather, the pure DecideRestoreInto, then the
// restore where the node's data lives (the lab's directory; on Kamal, a
// container of the node's image on its server, with its data directory).
func (c *restoreCommand) intoNode(ctx context.Context, b *backups, node string, target backup.Target, to string, tli int, agentBin string) error {
	st, err := live.GatherNodes(ctx, b.t.Target)
	if err != nil {
		return err
	}
	f := live.RestoreIntoFacts{Status: st, Node: node}
	if b.t.lab != nil {
		err := backup.CheckEmptyTarget(b.t.lab.DataDir(node))
		f.DataEmpty, f.DataWhat = err == nil, fmt.Sprint(err)
	} else if f.DataEmpty, f.DataWhat, err = b.t.kamal.NodeDataState(ctx, node, b.t.Cluster.DataDir); err != nil {
		return err
	}
	if err := live.DecideRestoreInto(f); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "restoring to %s into %s (no node runs: the cluster is lost)\n", target, b.t.Control.Where(node))
	if b.t.lab != nil {
		req, err := b.restoreRequest(target, b.t.lab.DataDir(node), 0)
		if err != nil {
			return err
		}
		req.Progress = restoreProgress(c.out)
		res, srv, err := backup.Restore(ctx, req)
		if err != nil {
			return err
		}
		if err := srv.Stop(ctx); err != nil {
			return err
		}
		fmt.Fprint(c.out, restoredIntoText(res))
	} else {
		key, err := b.needKey()
		if err != nil {
			return err
		}
		bin := defaultAgentBinary()
		if agentBin != "" {
			bin = agentBin
		}
		sec, _ := json.Marshal(hereInput{Storage: b.t.backup.Storage, AccessKeyID: b.t.backupSecrets.AccessKeyID, SecretAccessKey: b.t.backupSecrets.SecretAccessKey, Key: key.String()})
		args := []string{"--pgdata", b.t.Cluster.DataDir, "--to", to, "--timeline", strconv.Itoa(tli), "--user", b.dbUser(), "--major", strconv.Itoa(b.t.Cluster.Major)}
		if err := b.t.kamal.RestoreNode(ctx, node, b.t.Cluster.DataDir, bin, args, bytes.NewReader(sec), c.out); err != nil {
			return err
		}
	}
	if err := b.t.Control.Start(ctx, node); err != nil {
		return fmt.Errorf("the data is restored, but starting %s failed: %w", node, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		conn, err := b.t.Control.Conn(ctx, node)
		if err == nil {
			conn.Close(ctx)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the data is restored, but %s does not answer after 2 minutes: %w", node, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	fmt.Fprintf(c.out, "✓ %s runs the restored data as the primary\n", node)
	for _, n := range b.t.Cluster.Nodes {
		if n.Name != node {
			fmt.Fprintf(c.out, "  %s still holds the lost cluster's timeline: `understudy rejoin %s` makes it a standby of %s (pg_rewind, or a fresh clone)\n", n.Name, n.Name, node)
		}
	}
	return nil
}

// hereInput is what restore --here reads on stdin: never argv, env or a file.
type hereInput struct {
	Storage         backup.S3Config `json:"storage"`
	AccessKeyID     string          `json:"access_key_id"`
	SecretAccessKey string          `json:"secret_access_key"`
	Key             string          `json:"key"`
}

// here is restore --into NODE's part on the node's server, in a container
// of the node's image with its data directory mounted: restore into
// PGDATA, recover, stop.
func (c *restoreCommand) here(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("restore --here", flag.ContinueOnError)
	pgdata := fs.String("pgdata", "", "the node's data directory")
	to := fs.String("to", "", "latest or a time")
	tli := fs.Int("timeline", 0, "the timeline")
	user := fs.String("user", "postgres", "a role of the cluster")
	major := fs.Int("major", 0, "PostgreSQL's major version")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var in hereInput
	if err := json.NewDecoder(io.LimitReader(os.Stdin, 64<<10)).Decode(&in); err != nil {
		return fmt.Errorf("reading the storage's secrets on stdin: %w", err)
	}
	target, err := parseTarget(*to, *tli)
	if err != nil {
		return err
	}
	store, err := backup.OpenS3(in.Storage, in.AccessKeyID, in.SecretAccessKey)
	if err != nil {
		return err
	}
	key, err := backup.ParseKey(in.Key)
	if err != nil {
		return err
	}
	bin, err := backup.FindPGBin(*major)
	if err != nil {
		return err
	}
	cred, err := backup.PostgresCred()
	if err != nil {
		return err
	}
	res, srv, err := backup.Restore(ctx, backup.RestoreRequest{Store: store, Key: key, Target: target, BinDir: bin, Dir: *pgdata, Port: 5432,
		User: *user, Cred: cred, Progress: restoreProgress(c.out)})
	if err != nil {
		return err
	}
	if err := srv.Stop(ctx); err != nil {
		return err
	}
	fmt.Fprint(c.out, restoredIntoText(res))
	return nil
}

func restoredIntoText(res backup.Restored) string {
	return fmt.Sprintf("✓ restored base backup %s and %d WAL files; recovery ended at %s (last transaction %s)\n", res.Base, res.Segments, res.Reached, timeText(res.LastCommit))
}
