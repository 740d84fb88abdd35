package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/setup"
)

// setupFlags are the flags plan and init share.
type setupFlags struct {
	dir              string
	opts             setup.Options
	backup           bool
	bo               setup.BackupOptions
	router, noRouter bool
	failover         bool
	fo               setup.FailoverOptions
}

func (s *setupFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.dir, "app", ".", "the app directory (holding config/deploy.yml)")
	fs.StringVar(&s.opts.ConfigPath, "c", "config/deploy.yml", "Kamal config file, relative to the app directory")
	fs.StringVar(&s.opts.Destination, "d", "", "Kamal destination (reads config/deploy.DEST.yml and .kamal/secrets.DEST)")
	fs.StringVar(&s.opts.Accessory, "accessory", "", "the PostgreSQL accessory to replicate, when there are several")
	fs.StringVar(&s.opts.ReplicaName, "replica-name", "", "name of the standby accessory (default <accessory>-replica)")
	fs.StringVar(&s.opts.ReplicaHost, "replica-host", "", "the standby's server, as Kamal reaches it over SSH (a later init finds it where the first put it)")
	fs.StringVar(&s.opts.ReplicaIP, "replica-ip", "", "the standby server's private IP; PostgreSQL listens there")
	fs.StringVar(&s.opts.PrimaryIP, "primary-ip", "", "the primary's private IP, when the port is ERB understudy cannot read")
	fs.IntVar(&s.opts.PGVersion, "pg-version", 0, "PostgreSQL major version, when the image tag does not say")
	fs.StringVar(&s.opts.WALCap, "wal-cap", "", "most WAL a slot may hold for an absent standby (max_slot_wal_keep_size), e.g. 20GB")
	fs.StringVar(&s.opts.ReplUser, "replication-user", pgconf.DefaultReplUser, "name of the replication role")
	fs.BoolVar(&s.router, "router", false, "add the router (HAProxy on the app's hosts: the app's database host becomes one name that follows the primary); the default for a new setup")
	fs.BoolVar(&s.noRouter, "no-router", false, "no router: the app lists the nodes itself (understudy connect prints what each framework takes)")
	fs.StringVar(&s.opts.RouterImage, "router-image", "", "the router's image (default "+setup.DefaultRouterImage+", the official HAProxy image)")
	fs.BoolVar(&s.failover, "failover", false, "automatic failover (docs/failover.md): etcd members in the node agents and a witness on an app host; a dead primary is replaced in seconds, never by a second primary")
	fs.StringVar(&s.fo.WitnessHost, "witness-host", "", "with --failover: the app host that runs the witness (the third vote), as Kamal reaches it over SSH")
	fs.StringVar(&s.fo.WitnessIP, "witness-ip", "", "with --failover: the witness host's private IP (default --witness-host, when that is a private IP)")
	fs.BoolVar(&s.fo.Synchronous, "synchronous", false, "with --failover: a commit waits for the standby (no acknowledged commit lost on failover; one round trip added to each commit)")
	fs.BoolVar(&s.backup, "backup", false, "add the backup accessory: continuous WAL and base backups from the standby to S3-compatible storage (docs/backups.md)")
	fs.StringVar(&s.bo.Endpoint, "backup-endpoint", "", "with --backup: the storage's URL, e.g. https://s3.eu-central-1.amazonaws.com or https://ACCOUNT.r2.cloudflarestorage.com")
	fs.StringVar(&s.bo.Bucket, "backup-bucket", "", "with --backup: the bucket")
	fs.StringVar(&s.bo.Region, "backup-region", "", "with --backup: the bucket's region (default: asked of the storage)")
	fs.StringVar(&s.bo.Prefix, "backup-prefix", "", "with --backup: a path inside the bucket (default <service>[/<destination>])")
	fs.BoolVar(&s.bo.PathStyle, "backup-path-style", false, "with --backup: path-style bucket URLs (MinIO, Ceph, versitygw)")
	fs.StringVar(&s.bo.Host, "backup-host", "", "with --backup: the server the backup accessory runs on (default the standby's)")
	fs.IntVar(&s.bo.KeepBases, "backup-keep", 0, "with --backup: base backups to keep (default 7, one a day)")
	fs.StringVar(&s.bo.DrillEvery, "backup-drill-every", "", "with --backup: how often the backup accessory runs a restore drill (default 168h; 0 for never); a drill needs disk for a whole copy")
	fs.StringVar(&s.bo.DrillCheck, "backup-drill-check", "", "with --backup: an SQL query each drill runs on its restored copy, e.g. \"SELECT count(*) FROM orders\"")
}

func (s *setupFlags) parse(fs *flag.FlagSet, args []string) error {
	s.register(fs)
	// Accept flags after positional words too (understudy plan -d x --replica-host y).
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; flags look like --replica-host HOST", fs.Arg(0))
	}
	abs, err := filepath.Abs(s.dir)
	if err != nil {
		return err
	}
	s.dir = abs
	s.opts.Env = os.LookupEnv
	switch {
	case s.router && s.noRouter:
		return errors.New("--router and --no-router: pick one")
	case s.router:
		s.opts.Router = setup.RouterOn
	case s.noRouter:
		if s.opts.RouterImage != "" {
			return errors.New("--router-image with --no-router: drop one")
		}
		s.opts.Router = setup.RouterOff
	}
	if s.failover {
		s.opts.Failover = &s.fo
	} else if s.fo != (setup.FailoverOptions{}) {
		return errors.New("--witness-host, --witness-ip and --synchronous need --failover")
	}
	if s.backup {
		s.opts.Backup = &s.bo
	} else if s.bo != (setup.BackupOptions{}) {
		return errors.New("--backup-* flags need --backup")
	}
	return nil
}

func indent(s, pad string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
