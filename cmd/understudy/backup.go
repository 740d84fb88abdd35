package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgops"
)

// backups is what a backup command works with: the target, its bucket and
// key, and where its backup work runs (the target's live.BackupSite).
type backups struct {
	t      *target
	site   live.BackupSite
	store  backup.Store
	where  string
	key    *backup.Key
	keyErr error
}

// openBackups parses a backup command's flags and opens its target and
// bucket. The caller closes b.t.
func openBackups(ctx context.Context, fs *flag.FlagSet, args []string) (*backups, error) {
	tf := addTargetFlags(fs)
	t, err := tf.parse(ctx, fs, args, false)
	if err != nil {
		return nil, err
	}
	return backupsOf(ctx, t)
}

// backupsOf is an opened target's backups; it closes t on failure.
func backupsOf(ctx context.Context, t *target) (*backups, error) {
	var err error
	t.withBackups(ctx)
	switch {
	case t.Backups == nil:
		err = errors.New(t.noBackups)
	case t.Backup == nil:
		err = errors.New("the backup storage cannot be opened: the lab's files in run/ are missing")
	case t.Backup.Err != nil:
		err = t.Backup.Err
	}
	if err != nil {
		t.close()
		return nil, err
	}
	return &backups{t: t, site: t.Backups, store: t.Backup.Store, where: t.Backup.Where, key: t.Backup.Key, keyErr: t.Backup.KeyErr}, nil
}

// needKey is the key, or why this machine has none.
func (b *backups) needKey() (*backup.Key, error) {
	if b.key == nil {
		return nil, fmt.Errorf("restoring needs the backup key here: %w", b.keyErr)
	}
	return b.key, nil
}

// backupCommand: `backup` (a base backup now), `backup keygen`, `backup agent`.
type backupCommand struct{ out io.Writer }

func (*backupCommand) Name() string { return "backup" }
func (*backupCommand) Summary() string {
	return "take a base backup now, from the standby (also: backup keygen, backup agent)"
}

func (c *backupCommand) Run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "keygen" {
		k, err := backup.GenerateKey()
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "# public key (recorded with each backup): %s\n# store the line below in your password manager and reference it as BACKUP_ENCRYPTION_KEY in .kamal/secrets;\n# without it no backup can be restored\n", k.Recipient())
		fmt.Fprintln(c.out, k.String())
		return nil
	}
	if len(args) > 0 && args[0] == "agent" {
		return c.agent(ctx, args[1:])
	}
	if hasConfigFlag(args) {
		return c.inAccessory(ctx, args, false)
	}
	b, err := openBackups(ctx, flag.NewFlagSet("backup", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	defer b.t.close()
	return b.site.TakeBase(ctx, c.out)
}

func hasConfigFlag(args []string) bool {
	for _, a := range args {
		if a == "--config" || a == "-config" || strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config=") {
			return true
		}
	}
	return false
}

// agent runs the backup agent in the foreground until SIGINT/SIGTERM: in
// the backup accessory (--config backup.json, secrets from the
// environment Kamal gives it), or for a lab.
func (c *backupCommand) agent(ctx context.Context, args []string) error {
	if hasConfigFlag(args) {
		return c.inAccessory(ctx, args, true)
	}
	b, err := openBackups(ctx, flag.NewFlagSet("backup agent", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	defer b.t.close()
	if b.t.lab == nil {
		return errors.New("on Kamal the backup agent runs in the backup accessory, which `understudy apply` boots; `backup agent --config backup.json` is its command there")
	}
	key, err := b.needKey()
	if err != nil {
		return err
	}
	return runAgent(ctx, backup.NewAgent(b.t.lab.AgentConfig(c.out), b.store, key))
}

// runAgent runs the agent until ctx ends; SIGHUP makes it choose its
// source again at once (a role change may send it: Agent.Rechoose).
func runAgent(ctx context.Context, a *backup.Agent) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.Rechoose()
			}
		}
	}()
	return a.Run(ctx)
}

// accessory is the backup accessory's own view: backup.json, its
// secrets (read from the environment Kamal gives the container, then
// removed from it, so pg_receivewal and pg_basebackup do not inherit
// them), the bucket and the agent's configuration.
type accessory struct {
	setup backup.Setup
	sec   backup.Secrets
	store *backup.S3
	cfg   backup.AgentConfig
}

func openAccessory(fs *flag.FlagSet, args []string, log io.Writer) (*accessory, error) {
	config := fs.String("config", "", "the backup setup (backup.json), inside the backup accessory")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	text, err := os.ReadFile(*config)
	if err != nil {
		return nil, fmt.Errorf("reading the backup setup: %w", err)
	}
	s, err := backup.ParseSetup(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", *config, err)
	}
	sec, err := s.ReadSecrets(os.LookupEnv, true)
	for _, n := range s.Secrets.Names() {
		os.Unsetenv(n)
	}
	if err != nil {
		return nil, err
	}
	store, err := s.Open(sec)
	if err != nil {
		return nil, err
	}
	cfg, err := s.AgentConfig(sec, log)
	if err != nil {
		return nil, err
	}
	return &accessory{setup: s, sec: sec, store: store, cfg: cfg}, nil
}

// inAccessory runs the agent, or one base backup, in the backup accessory.
func (c *backupCommand) inAccessory(ctx context.Context, args []string, agent bool) error {
	a, err := openAccessory(flag.NewFlagSet("backup", flag.ContinueOnError), args, c.out)
	if err != nil {
		return err
	}
	if agent {
		return runAgent(ctx, backup.NewAgent(a.cfg, a.store, a.sec.Key))
	}
	a.cfg.Log = io.Discard
	return live.TakeBaseHere(ctx, &a.cfg, a.store, a.store.Where(), a.sec.Key, a.setup.Retention, c.out)
}

// backupsCommand lists the base backups and the recovery window.
type backupsCommand struct{ out io.Writer }

func (*backupsCommand) Name() string { return "backups" }
func (*backupsCommand) Summary() string {
	return "list base backups (size, duration, WAL range) and the recovery window"
}

func (c *backupsCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("backups", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	b, err := openBackups(ctx, fs, args)
	if err != nil {
		return err
	}
	defer b.t.close()
	store, key := b.store, b.key
	cat, err := backup.ReadCatalog(ctx, store)
	if err != nil {
		return err
	}
	var steps []pgops.TimelineStep // history files are sealed: read with the key, when this machine has it
	if key != nil {
		if steps, err = backup.HistorySteps(ctx, store, key, backup.NewestTimeline(cat)); err != nil {
			return err
		}
	}
	w := backup.RecoveryWindow(cat, steps)
	if *asJSON {
		return writeJSON(c.out, struct {
			Where  string            `json:"where"`
			Bases  []backup.BaseInfo `json:"base_backups"`
			Window backup.Window     `json:"recovery_window"`
			Broken []string          `json:"unreadable,omitempty"`
		}{b.where, append([]backup.BaseInfo{}, cat.Bases...), w, cat.Broken})
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BASE BACKUP\tFINISHED (UTC)\tSIZE\tSTORED\tDURATION\tFROM\tTIMELINE\tWAL FROM\tWAL TO")
	for _, b := range cat.Bases {
		from := b.Source
		if b.FromStandby {
			from += " (standby)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f s\t%s\t%d\t%s\t%s\n", b.ID, b.Finished.UTC().Format("2006-01-02 15:04:05"), live.MB(b.Bytes), live.MB(b.Stored), b.Duration().Seconds(), from, b.Timeline, b.StartLSN, b.EndLSN)
	}
	tw.Flush()
	if w.OK {
		fmt.Fprintf(c.out, "\nrecovery window: %s to %s (restore --to any time in it, or --to latest)\n", w.Earliest.UTC().Format("2006-01-02 15:04:05"), w.Latest.UTC().Format("2006-01-02 15:04:05 UTC"))
	} else {
		fmt.Fprintf(c.out, "\nno recovery window yet%s\n", orColon(w.Gap))
	}
	for _, b := range cat.Broken {
		fmt.Fprintf(c.out, "unreadable base backup %s: its info.json or data is missing\n", b)
	}
	return nil
}

func orColon(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}
