package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/release"
	"github.com/understudy-dev/understudy/remote"
	"github.com/understudy-dev/understudy/router"
	"github.com/understudy-dev/understudy/setup"
)

// defaultLabDir is where `lab up` puts a lab unless told otherwise, so the
// other commands find it without flags.
func defaultLabDir() string {
	if d := os.Getenv("UNDERSTUDY_LAB"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "understudy-lab")
}

// targetFlags select the nodes a live command works on: a lab (--lab), or
// the Kamal accessories of the app in --app (default: this directory).
type targetFlags struct {
	lab, app, config, dest *string
	pgVersion              *int
}

func addTargetFlags(fs *flag.FlagSet) *targetFlags {
	return &targetFlags{
		lab:       fs.String("lab", "", "work on the local lab in this directory (`understudy lab up` makes one)"),
		app:       fs.String("app", "", "the Kamal app directory (holding config/deploy.yml); default: this directory"),
		config:    fs.String("c", "config/deploy.yml", "Kamal config file, relative to the app directory"),
		dest:      fs.String("d", "", "Kamal destination"),
		pgVersion: fs.Int("pg-version", 0, "PostgreSQL major version, when the image tag does not say"),
	}
}

// target is an opened target; close releases SSH connections.
type target struct {
	live.Target
	lab    *lab.Lab
	kamal  *remote.Control
	agent  *remote.BackupAgent // the backup accessory, when init set one up
	backup *backup.Setup
	// backupSecrets: the storage's credentials and the key, resolved here
	// (restore --into NODE hands them to the server on stdin).
	backupSecrets backup.Secrets
	// openBackup resolves the backup secrets and opens the bucket (Kamal);
	// only the commands that read backups call it (withBackups), so a role
	// change never waits on a secret store or on the storage.
	openBackup func(context.Context)
	// noBackups says why the target has no backups, and how to add them.
	noBackups string
	close     func()
}

// withBackups opens the backup storage for the commands that read it
// (status, check, the backup commands); once.
func (t *target) withBackups(ctx context.Context) *target {
	if t.openBackup != nil {
		t.openBackup(ctx)
		t.openBackup = nil
	}
	return t
}

// open picks the target: --lab; else the app's deploy.yml when there is
// one (--app or this directory); else the default lab.
func (t *targetFlags) open(ctx context.Context) (*target, error) {
	if *t.lab != "" {
		return openLab(*t.lab)
	}
	app := *t.app
	if app == "" {
		if _, err := os.Stat(*t.config); err != nil {
			if _, err := os.Stat(filepath.Join(defaultLabDir(), "lab.json")); err == nil {
				fmt.Fprintf(os.Stderr, "understudy: no %s here, so this is the lab in %s (--lab DIR or --app DIR to choose)\n", *t.config, defaultLabDir())
				return openLab(defaultLabDir())
			}
			return nil, errors.New("no target: run in the app directory (with config/deploy.yml), pass --app DIR, or --lab DIR for a local lab (`understudy lab up` makes one)")
		}
		app = "."
	}
	return openKamal(ctx, app, *t.config, *t.dest, *t.pgVersion)
}

func openLab(dir string) (*target, error) {
	l, err := lab.Open(dir)
	if err != nil {
		return nil, err
	}
	return &target{Target: l.Target(), lab: l, close: func() {},
		noBackups: fmt.Sprintf("the lab in %s has no backups: make one with `understudy lab up --backup`", l.Dir)}, nil
}

// openKamal reads the deployment init wrote, resolves the two passwords
// the way Kamal resolves secrets, and reaches the nodes over SSH.
func openKamal(ctx context.Context, app, config, dest string, pgVersion int) (*target, error) {
	abs, err := filepath.Abs(app)
	if err != nil {
		return nil, err
	}
	d, err := setup.LoadDeployed(kamal.DirSource(abs), setup.Options{ConfigPath: config, Destination: dest, Env: os.LookupEnv, PGVersion: pgVersion})
	if err != nil {
		return nil, err
	}
	if d.Legacy != "" {
		fmt.Fprintln(os.Stderr, "understudy: note:", d.Legacy)
	}
	dbPassword, err := d.Secrets.Resolve(ctx, abs, d.DBPasswordSecret)
	if err != nil {
		return nil, err
	}
	replPassword, err := d.Secrets.Resolve(ctx, abs, d.ReplPasswordSecret)
	if err != nil {
		return nil, err
	}
	dbUser, userFrom := d.DBUser, "POSTGRES_USER in env.clear, or the image's default"
	if d.DBUserSecret != "" {
		// The image creates POSTGRES_USER from the secret at first boot, so
		// that is the role to log in as (the guide's app keeps it there).
		if dbUser, err = d.Secrets.Resolve(ctx, abs, d.DBUserSecret); err != nil {
			return nil, err
		}
		userFrom = "secret " + d.DBUserSecret + " in " + d.Config.SecretsPath()
	}
	o := remote.Options{User: d.SSH.User, Port: d.SSH.Port, Proxy: d.SSH.Proxy, KeysOnly: d.SSH.KeysOnly}
	for _, k := range d.SSH.Keys {
		if !filepath.IsAbs(k) && !strings.HasPrefix(k, "~") {
			k = filepath.Join(abs, k)
		}
		o.Keys = append(o.Keys, k)
	}
	if kh := os.Getenv("UNDERSTUDY_KNOWN_HOSTS"); kh != "" {
		o.KnownHost = filepath.SplitList(kh)
	}
	var names []string
	for _, n := range d.Cluster.Nodes {
		names = append(names, n.Name)
	}
	if d.Backup != nil {
		names = append(names, d.Backup.Accessory)
	}
	for _, a := range d.Agents {
		names = append(names, a.Name)
	}
	if d.Router != nil {
		names = append(names, d.Router.Name)
	}
	if d.Witness != nil {
		names = append(names, d.Witness.Name)
	}
	cmds, err := remote.NodeCommands(d.Config, names)
	if err != nil {
		return nil, err
	}
	dialer := remote.NewDialer(o)
	ctl := &remote.Control{
		Kamal:  remote.Kamal{ConfigFile: config, Destination: dest},
		Runner: remote.ExecRunner{Dir: abs},
		Dialer: dialer, Shell: dialer, Nodes: remote.NodesFromCluster(d.Cluster, d.Hosts, cmds),
		DBUser: dbUser, DBUserFrom: userFrom, DBPassword: dbPassword, Builds: serverBuilds(),
		AppDir: abs, BootPath: setup.BootPath,
	}
	tg := &target{Target: live.Target{Cluster: d.Cluster, Control: ctl, Password: replPassword, Images: map[string]live.NodeImage{}}, kamal: ctl, close: dialer.Close,
		noBackups: "this app has no backups set up: run `understudy init --backup --backup-endpoint URL --backup-bucket NAME` (with the flags you gave init before), then `understudy apply`; see docs/backups.md"}
	for n, img := range d.Images {
		tg.Images[n] = live.NodeImage{Ref: img.Ref, Major: img.Major}
	}
	if d.Backup != nil {
		tg.backup = d.Backup
		tg.agent = &remote.BackupAgent{Control: ctl, Name: d.Backup.Accessory, Host: d.BackupHost, Commands: cmds[d.Backup.Accessory],
			BinDir: setup.BackupBinDir, Setup: d.BackupText}
		tg.BackupAgent = tg.agent
		tg.openBackup = func(ctx context.Context) {
			tg.Backup, tg.backupSecrets = kamalBackupAccess(ctx, d, abs)
			tg.Backups = &remote.BackupSite{Control: ctl, Agent: tg.agent, Binary: setup.BackupBinary, SetupPath: setup.BackupSetupPath,
				Storage: d.Backup.Storage, Secrets: tg.backupSecrets, KeyErr: tg.Backup.KeyErr,
				DataDir: d.Cluster.DataDir, Major: d.Cluster.Major}
		}
	}
	kamalRouting(ctx, tg, d, abs, ctl, cmds)
	if d.Cluster.Failover != nil {
		tg.Lease = kamalLease(ctx, d, abs, dialer)
	}
	return tg, nil
}

// kamalLease is failover's lease as this machine reaches it: each etcd
// member through SSH on its own server, the client's certificate from
// FAILOVER_SECRET resolved as Kamal resolves secrets (when it does not
// resolve, each use of the lease says so and what to do).
func kamalLease(ctx context.Context, d *setup.Deployed, app string, dialer *remote.Dialer) *remote.Lease {
	witnessHost := ""
	if d.Witness != nil && len(d.Witness.Hosts) > 0 {
		witnessHost = d.Witness.Hosts[0]
	}
	l := &remote.Lease{Failover: d.Cluster.Failover, Dialer: dialer}
	l.Routes, l.Err = remote.MemberRoutes(d.Cluster.Failover, d.Hosts, witnessHost)
	l.Secret, l.SecretErr = d.Secrets.Resolve(ctx, app, failover.SecretName)
	return l
}

// kamalRouting gives a Kamal target its node agents and router: the
// monitoring login's password (resolved as Kamal does; apply says what to
// do when it does not resolve), the accessories apply runs, and the
// reader status and check use.
func kamalRouting(ctx context.Context, tg *target, d *setup.Deployed, app string, ctl *remote.Control, cmds map[string]*kamal.AccessoryCommands) {
	if d.Cluster.MonitorUser == "" || len(d.Agents) == 0 {
		return
	}
	if pw, err := d.Secrets.Resolve(ctx, app, pgconf.MonitorSecret); err == nil {
		tg.MonitorPassword = pw
	}
	rr := &remote.Routing{Control: ctl, StatsPort: router.DefaultStatsPort, AgentsPorts: map[string]int{}}
	for _, n := range d.Cluster.Nodes {
		rr.AgentsPorts[n.Name] = pgconf.DefaultAgentPort
		if n.AgentPort != 0 {
			rr.AgentsPorts[n.Name] = n.AgentPort
		}
	}
	if w := d.Witness; w != nil {
		// First: failover's third vote is up before the agents' members
		// look for a quorum.
		tg.RoutingDeployers = append(tg.RoutingDeployers, &remote.RoutingAccessory{Control: ctl, Acc: w.Name, Hosts: w.Hosts, Commands: cmds[w.Name],
			What: live.RoutingWitness, BinDir: setup.BackupBinDir, File: setup.AgentClusterPath, Text: w.Config})
	}
	for _, a := range d.Agents {
		tg.RoutingDeployers = append(tg.RoutingDeployers, &remote.RoutingAccessory{Control: ctl, Acc: a.Name, Node: a.Node, Hosts: a.Hosts, Commands: cmds[a.Name],
			BinDir: setup.BackupBinDir, File: setup.AgentClusterPath, Text: a.Config})
	}
	if r := d.Router; r != nil {
		tg.RoutingDeployers = append(tg.RoutingDeployers, &remote.RoutingAccessory{Control: ctl, Acc: r.Name, Hosts: r.Hosts, Commands: cmds[r.Name],
			What: live.RoutingRouter, File: setup.RouterConfigPath, Text: r.Config})
		rr.Routers = r.Hosts
	}
	tg.Routing = rr
}

// kamalBackupAccess opens the bucket with the backup secrets resolved here,
// as Kamal resolves them; what does not resolve is reported by status and
// check, not fatal (the key is needed only to restore).
func kamalBackupAccess(ctx context.Context, d *setup.Deployed, app string) (*live.BackupAccess, backup.Secrets) {
	s := d.Backup
	a := &live.BackupAccess{Where: s.Storage.Endpoint + "/" + s.Storage.Bucket + "/" + s.Storage.Prefix}
	resolve := func(name string) (string, error) {
		v, err := d.Secrets.Resolve(ctx, app, name)
		if err == nil && v == "" {
			err = fmt.Errorf("%s is empty", name)
		}
		return v, err
	}
	var sec backup.Secrets
	if v, err := resolve(s.Secrets.EncryptionKey); err != nil {
		a.KeyErr = err
	} else if a.Key, err = backup.ParseKey(v); err != nil {
		a.KeyErr = fmt.Errorf("%s: %w", s.Secrets.EncryptionKey, err)
	}
	sec.Key = a.Key
	var err error
	if sec.AccessKeyID, err = resolve(s.Secrets.AccessKeyID); err != nil {
		a.Err = fmt.Errorf("the storage's access key does not resolve here: %w", err)
		return a, sec
	}
	if sec.SecretAccessKey, err = resolve(s.Secrets.SecretAccessKey); err != nil {
		a.Err = fmt.Errorf("the storage's secret key does not resolve here: %w", err)
		return a, sec
	}
	st, err := s.Open(sec)
	if err != nil {
		a.Err = err
		return a, sec
	}
	a.Store, a.Where = st, st.Where()
	return a, sec
}

// serverBuilds finds the understudy apply copies to a server: the
// release's Linux build for its machine, kept beside this executable
// (docs/install.md); $UNDERSTUDY_AGENT_BINARY, like --agent-binary, names
// one file instead (development).
func serverBuilds() remote.Builds {
	if p := os.Getenv("UNDERSTUDY_AGENT_BINARY"); p != "" {
		return remote.FixedBuild(p)
	}
	return release.NewLocal(os.Stderr)
}

// parse parses a live command's flags and opens its target; for a command
// that changes things (change), it also checks Kamal's deploy lock.
func (t *targetFlags) parse(ctx context.Context, fs *flag.FlagSet, args []string, change bool) (*target, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	tg, err := t.open(ctx)
	if err != nil {
		return nil, err
	}
	if change {
		if err := tg.forChange(ctx); err != nil {
			tg.close()
			return nil, err
		}
	}
	return tg, nil
}

// forChange checks, before a command changes anything on Kamal, that no
// deploy holds Kamal's lock and that kamal can be run.
func (t *target) forChange(ctx context.Context) error {
	if t.kamal == nil {
		return nil
	}
	if err := t.kamal.CheckLock(ctx); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("kamal is not installed here, and understudy drives the accessories through it: install Kamal 2 (gem install kamal), then run again")
		}
		return err
	}
	return nil
}
