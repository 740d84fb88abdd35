package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
	"github.com/understudy-dev/understudy/remote"
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
	agentBin := fs.String("agent-binary", "", "development, with --into NODE on Kamal: the understudy file to run on the node's server (default: the release's Linux build for its machine)")
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
		if s, ok := b.site.(*remote.BackupSite); ok && *agentBin != "" {
			abs, err := filepath.Abs(*agentBin)
			if err != nil {
				return err
			}
			s.Control.Builds = remote.FixedBuild(abs)
		}
		return live.RestoreIntoNode(ctx, b.t.Target, b.site, c.out, *into, live.RestoreTarget{Target: target, Text: *to})
	}
	dir, err := filepath.Abs(*into)
	if err != nil {
		return err
	}
	req, err := b.restoreRequest(target, dir, *port)
	if err != nil {
		return err
	}
	req.Progress = live.RestoreProgress(c.out)
	fmt.Fprintf(c.out, "restoring to %s into %s\n", target, dir)
	res, srv, err := backup.Restore(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "✓ restored base backup %s and %d WAL files: fetched in %.1f s, recovered in %.1f s\n", res.Base, res.Segments, res.Fetch.Seconds(), res.Replay.Seconds())
	fmt.Fprintf(c.out, "  recovery ended at %s, now on timeline %d; last transaction replayed: %s\n", res.Reached, res.Timeline, live.TimeText(res.LastCommit))
	fmt.Fprintf(c.out, "  it runs as a standalone primary on a local socket only:\n    psql \"host=%s port=%d user=%s dbname=postgres\"\n", srv.Sock, srv.Port, srv.User)
	fmt.Fprintf(c.out, "  stop it with: pg_ctl -D %s stop (as the postgres user)\n", dir)
	return nil
}

// restoreRequest is a restore on this machine, of target into dir.
func (b *backups) restoreRequest(target backup.Target, dir string, port int) (backup.RestoreRequest, error) {
	key, err := b.needKey()
	if err != nil {
		return backup.RestoreRequest{}, err
	}
	here, err := b.site.Here()
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
	return backup.RestoreRequest{Store: b.store, Key: key, Target: target, BinDir: here.BinDir, Dir: dir, Port: port, Cred: here.Cred, User: here.User}, nil
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
	rec, err := b.site.Drill(ctx, c.out, live.DrillOptions{Check: *check, JSON: *asJSON})
	var failed *live.DrillFailed
	if errors.As(err, &failed) {
		return &exitError{code: failed.Code, err: failed}
	}
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if rec == nil {
		return nil // it ran in the backup accessory, which printed the record
	}
	return c.drillResult(*rec, nil, *asJSON)
}

// drillResult prints a drill's record; exit 0 passed, 1 failed, 2 could not run.
func (c *restoreCommand) drillResult(rec backup.DrillRecord, err error, asJSON bool) error {
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if asJSON {
		writeJSON(c.out, rec)
	} else {
		fmt.Fprint(c.out, live.DrillText(rec))
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
	var in remote.RestoreHereInput
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
		User: *user, Cred: cred, Progress: live.RestoreProgress(c.out)})
	if err != nil {
		return err
	}
	if err := srv.Stop(ctx); err != nil {
		return err
	}
	fmt.Fprint(c.out, live.RestoredText(res))
	return nil
}
