package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/lab"
)

// errKamalBackups: the Kamal side of backups is not built yet.
var errKamalBackups = errors.New("backups work on the lab so far (`understudy lab up --backup`); on Kamal, the backup accessory is not built yet: see docs/backups.md")

// labBackup is a lab's bucket and key.
func labBackup(l *lab.Lab) (*backup.S3, *backup.Key, error) {
	store, err := l.BackupStore()
	if err != nil {
		return nil, nil, err
	}
	key, err := l.BackupKey()
	return store, key, err
}

// openBackups parses a backup command's flags and opens its lab, bucket and key.
func openBackups(ctx context.Context, fs *flag.FlagSet, args []string) (*lab.Lab, *backup.S3, *backup.Key, error) {
	l, err := backupLab(ctx, fs, args)
	if err != nil {
		return nil, nil, nil, err
	}
	store, key, err := labBackup(l)
	return l, store, key, err
}

// backupLab opens the lab a backup command works on.
func backupLab(ctx context.Context, fs *flag.FlagSet, args []string) (*lab.Lab, error) {
	tf := addTargetFlags(fs)
	t, err := tf.parse(ctx, fs, args, false)
	if err != nil {
		return nil, err
	}
	defer t.close()
	if t.lab == nil {
		return nil, errKamalBackups
	}
	if t.lab.Backup() == nil {
		return nil, fmt.Errorf("the lab in %s has no backups: make one with `understudy lab up --backup`", t.lab.Dir)
	}
	return t.lab, nil
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
	l, store, key, err := openBackups(ctx, flag.NewFlagSet("backup", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	cfg := l.AgentConfig(io.Discard)
	fmt.Fprintf(c.out, "base backup into %s\n", store.Where())
	bi, err := backup.TakeBase(ctx, &cfg, store, key, func(p backup.Progress) {
		fmt.Fprintf(c.out, "  %s\n", progressText(p))
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "✓ base backup %s: %s from %s in %.1f s (%s stored), WAL %s to %s on timeline %d\n", bi.ID, mb(bi.Bytes), bi.Source, bi.Duration().Seconds(), mb(bi.Stored), bi.StartLSN, bi.EndLSN, bi.Timeline)
	n, err := backup.ApplyRetention(ctx, store, l.Backup().Policy, time.Now())
	if err != nil {
		return fmt.Errorf("the backup is stored, but retention failed: %w", err)
	}
	if n > 0 {
		fmt.Fprintf(c.out, "retention removed %d objects (policy: keep %d base backups)\n", n, l.Backup().Policy.KeepBases)
	}
	return nil
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

func progressText(p backup.Progress) string {
	rate := float64(p.Done) / max(p.Elapsed.Seconds(), 0.001) / (1 << 20)
	if p.Total > 0 {
		return fmt.Sprintf("%s of %s (%.0f%%), %.1f MB/s", mb(p.Done), mb(p.Total), 100*float64(p.Done)/float64(p.Total), rate)
	}
	return fmt.Sprintf("%s, %.1f MB/s", mb(p.Done), rate)
}

// agent runs the backup agent in the foreground until SIGINT/SIGTERM.
func (c *backupCommand) agent(ctx context.Context, args []string) error {
	l, store, key, err := openBackups(ctx, flag.NewFlagSet("backup agent", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	return backup.NewAgent(l.AgentConfig(c.out), store, key).Run(ctx)
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
	l, err := backupLab(ctx, fs, args)
	if err != nil {
		return err
	}
	store, key, err := labBackup(l)
	if err != nil {
		return err
	}
	cat, err := backup.ReadCatalog(ctx, store)
	if err != nil {
		return err
	}
	steps, err := backup.HistorySteps(ctx, store, key, backup.NewestTimeline(cat))
	if err != nil {
		return err
	}
	w := backup.RecoveryWindow(cat, steps)
	if *asJSON {
		return writeJSON(c.out, struct {
			Where  string            `json:"where"`
			Bases  []backup.BaseInfo `json:"base_backups"`
			Window backup.Window     `json:"recovery_window"`
			Broken []string          `json:"unreadable,omitempty"`
		}{store.Where(), append([]backup.BaseInfo{}, cat.Bases...), w, cat.Broken})
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BASE BACKUP\tFINISHED (UTC)\tSIZE\tSTORED\tDURATION\tFROM\tTIMELINE\tWAL FROM\tWAL TO")
	for _, b := range cat.Bases {
		from := b.Source
		if b.FromStandby {
			from += " (standby)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f s\t%s\t%d\t%s\t%s\n", b.ID, b.Finished.UTC().Format("2006-01-02 15:04:05"), mb(b.Bytes), mb(b.Stored), b.Duration().Seconds(), from, b.Timeline, b.StartLSN, b.EndLSN)
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
