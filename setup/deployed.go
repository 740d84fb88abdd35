package setup

import (
	"fmt"
	"net"
	"regexp"
	"strconv"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/pgconf"
)

// Deployed is the cluster as `init` left it in deploy.yml: what the live
// commands work on when the nodes are Kamal accessories.
type Deployed struct {
	Config  *kamal.Config
	Cluster pgconf.Cluster
	Hosts   map[string]string // node → the server Kamal reaches over SSH
	SSH     kamal.SSH
	// DBUser is POSTGRES_USER of the primary's accessory when it is clear
	// (default postgres); DBUserSecret names the secret it comes from when
	// it is in env.secret instead (the guide's app), and then wins.
	DBUser, DBUserSecret string
	// Secret names the nodes' env uses, as Kamal looks them up.
	DBPasswordSecret, ReplPasswordSecret string
	Secrets                              *kamal.Secrets
	// Backup is the backup setup (backup.json) when init was given
	// --backup; BackupHost is its accessory's server.
	Backup     *backup.Setup
	BackupText string // backup.json's bytes, as Kamal uploads them
	BackupHost string
	// Agents are the node agents' accessories and Router the router's,
	// when init wrote them.
	Agents []DeployedAccessory
	Router *DeployedAccessory
	// Witness is automatic failover's witness accessory, when
	// cluster.json has failover (Cluster.Failover).
	Witness *DeployedAccessory
	// Legacy is set when the cluster came from an older init's rendered
	// files (no cluster.json): what to tell the user.
	Legacy string
	// Images: each node's image as deploy.yml gives it (its accessory's
	// image:, else the app's).
	Images map[string]Image
}

// Setups written before cluster.json existed are read once from the
// rendered boot.sh and postgresql.conf (Deployed.Legacy says so); the next
// init writes cluster.json.
var bootVarRE = regexp.MustCompile(`(?m)^(INITIAL_PRIMARY|REPL_USER)='([^']*)'$`)
var confWALCapRE = regexp.MustCompile(`(?m)^max_slot_wal_keep_size = '([^']*)'$`)

// LoadDeployed reads the understudy nodes (accessories with UNDERSTUDY_NODE
// in their env) and the generated files back from an app directory.
func LoadDeployed(src kamal.Source, o Options) (*Deployed, error) {
	configPath := o.ConfigPath
	if configPath == "" {
		configPath = "config/deploy.yml"
	}
	cfg, err := kamal.Load(src, configPath, o.Destination, o.Env)
	if err != nil {
		return nil, err
	}
	d := &Deployed{Config: cfg, Hosts: map[string]string{}, DBUser: "postgres", Images: map[string]Image{}}
	gen := GeneratedDir(o.Destination)
	var c, model pgconf.Cluster
	if text, err := src.ReadFile(gen + "/" + ClusterFile); err == nil {
		if model, err = pgconf.UnmarshalCluster([]byte(text)); err != nil {
			return nil, fmt.Errorf("%s/%s: %v; re-run `understudy init` to write it again", gen, ClusterFile, err)
		}
		c = pgconf.Cluster{InitialPrimary: model.InitialPrimary, ReplUser: model.ReplUser, MonitorUser: model.MonitorUser, WALCap: model.WALCap,
			DataDir: model.DataDir, ConfFile: model.ConfFile, HBAFile: model.HBAFile, ContainerDefaults: model.ContainerDefaults,
			Failover: model.Failover}
	} else {
		boot, err := src.ReadFile(gen + "/boot.sh")
		if err != nil {
			return nil, fmt.Errorf("%s/%s is missing: run `understudy init` first (it writes the replication setup this command works on)", gen, ClusterFile)
		}
		vars := map[string]string{}
		for _, m := range bootVarRE.FindAllStringSubmatch(boot, -1) {
			vars[m[1]] = m[2]
		}
		c = pgconf.Cluster{InitialPrimary: vars["INITIAL_PRIMARY"], ReplUser: vars["REPL_USER"], WALCap: DefaultWALCap,
			ConfFile: ConfPath, HBAFile: HBAPath, ContainerDefaults: true}
		conf, err := src.ReadFile(gen + "/postgresql.conf")
		if err != nil {
			return nil, fmt.Errorf("%s/postgresql.conf is missing: re-run `understudy init`", gen)
		}
		m := confWALCapRE.FindStringSubmatch(conf)
		if m == nil || c.InitialPrimary == "" || c.ReplUser == "" {
			return nil, fmt.Errorf("%s was written by an older understudy and cannot be read back: re-run `understudy init` (it writes %s/%s)", gen, gen, ClusterFile)
		}
		c.WALCap = m[1]
		d.Legacy = fmt.Sprintf("read the cluster from %s/boot.sh and postgresql.conf (written by an older understudy); run `understudy init` once to write %s/%s", gen, gen, ClusterFile)
	}
	for _, a := range cfg.Accessories() {
		if _, ok := a.Env().Clear[NodeEnv]; !ok {
			continue
		}
		hosts, _, err := a.Hosts()
		if err != nil {
			return nil, err
		}
		if len(hosts) != 1 {
			return nil, fmt.Errorf("%s: accessory %s must run on exactly one server", a.Val.Pos(), a.Name)
		}
		ps, _ := a.Str("port")
		port, err := kamal.ParsePort(ps)
		if err != nil || port.BindIP == "" {
			return nil, fmt.Errorf("%s: accessory %s's port %q does not name the private IP it listens on; re-run `understudy init`", a.Val.Pos(), a.Name, ps)
		}
		c.Nodes = append(c.Nodes, pgconf.Node{Name: a.Name, Addr: port.BindIP, Port: port.HostPort})
		d.Hosts[a.Name] = hosts[0]
		img, _ := a.Str("image")
		if img == "" {
			img, _ = cfg.Str(cfg.Root.Get("image"))
		}
		d.Images[a.Name] = ParseImage(img)
		if a.Name == c.InitialPrimary {
			c.Major = ParseImage(img).Major
			if o.PGVersion != 0 {
				c.Major = o.PGVersion
			}
			if v, ok := a.Env().Clear["POSTGRES_USER"]; ok {
				if u, ok := cfg.Str(v); ok && u != "" {
					d.DBUser = u
				}
			}
			for _, s := range a.Env().Secret {
				switch s.Name {
				case "POSTGRES_PASSWORD":
					d.DBPasswordSecret = s.Secret
				case "POSTGRES_USER":
					d.DBUserSecret = s.Secret
				case PasswordSecret:
					d.ReplPasswordSecret = s.Secret
				}
			}
		}
	}
	if len(c.Nodes) < 2 {
		return nil, fmt.Errorf("%s has fewer than two understudy nodes (accessories with %s in env): run `understudy init` first", configPath, NodeEnv)
	}
	if c.Major == 0 && model.Major != 0 {
		c.Major = model.Major // an image tag without a version: init was told it
	}
	if c.Major == 0 {
		return nil, fmt.Errorf("cannot tell the PostgreSQL version from %s's image: pass --pg-version", c.InitialPrimary)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(model.Nodes) > 0 {
		// deploy.yml is what Kamal runs: it must still say what init wrote.
		if err := sameNodes(model, c); err != nil {
			return nil, fmt.Errorf("%s and %s/%s disagree (%v): deploy.yml was edited after init; re-run `understudy init` to bring them together", configPath, gen, ClusterFile, err)
		}
		if o.PGVersion == 0 && c.Major != model.Major {
			return nil, fmt.Errorf("the image in %s is PostgreSQL %d, but the setup in %s was made for %d: a major upgrade needs a new cluster (pg_upgrade or dump and restore); to keep %d, put its image back", configPath, c.Major, gen, model.Major, model.Major)
		}
	}
	d.Cluster = c
	if err := d.loadBackup(src, gen); err != nil {
		return nil, err
	}
	if err := d.loadRouting(src, gen); err != nil {
		return nil, err
	}
	if err := d.checkFailover(configPath, gen); err != nil {
		return nil, err
	}
	if d.DBPasswordSecret == "" {
		return nil, fmt.Errorf("accessory %s has no POSTGRES_PASSWORD in env.secret, so understudy cannot log in to it: add it (as the postgres image expects)", c.InitialPrimary)
	}
	if d.ReplPasswordSecret == "" {
		d.ReplPasswordSecret = PasswordSecret
	}
	if d.SSH, err = cfg.SSH(); err != nil {
		return nil, err
	}
	if d.Secrets, err = kamal.LoadSecrets(src, cfg.SecretsPath(), o.Destination); err != nil {
		return nil, err
	}
	return d, nil
}

// sameNodes compares the nodes init wrote with the ones deploy.yml has now.
func sameNodes(model, now pgconf.Cluster) error {
	if len(model.Nodes) != len(now.Nodes) {
		return fmt.Errorf("%d nodes against %d", len(now.Nodes), len(model.Nodes))
	}
	for _, n := range model.Nodes {
		m, ok := now.Node(n.Name)
		if !ok {
			return fmt.Errorf("node %s is gone", n.Name)
		}
		if m != n {
			return fmt.Errorf("node %s is at %s, the setup has %s", n.Name, net.JoinHostPort(m.Addr, strconv.Itoa(m.Port)), net.JoinHostPort(n.Addr, strconv.Itoa(n.Port)))
		}
	}
	return nil
}

// loadBackup reads backup.json, when there is one, and finds its accessory.
func (d *Deployed) loadBackup(src kamal.Source, gen string) error {
	file := gen + "/" + BackupSetupFile
	text, err := src.ReadFile(file)
	if err != nil {
		return nil // no backups set up
	}
	s, err := backup.ParseSetup([]byte(text))
	if err != nil {
		return fmt.Errorf("%s: %v; re-run `understudy init --backup ...` to write it again", file, err)
	}
	a := d.Config.Accessory(s.Accessory)
	if a == nil {
		return fmt.Errorf("%s names the backup accessory %s, which is not in %s: re-run `understudy init --backup ...`, or remove %s if you no longer want backups", file, s.Accessory, d.Config.ConfigPath, file)
	}
	if _, ok := a.Env().Clear[BackupEnv]; !ok {
		return fmt.Errorf("%s: accessory %s lacks %s in env.clear, so it is not understudy's backup accessory: re-run `understudy init --backup ...`", a.Val.Pos(), s.Accessory, BackupEnv)
	}
	hosts, _, err := a.Hosts()
	if err != nil {
		return err
	}
	if len(hosts) != 1 {
		return fmt.Errorf("%s: accessory %s must run on exactly one server", a.Val.Pos(), a.Name)
	}
	d.Backup, d.BackupText, d.BackupHost = &s, text, hosts[0]
	return nil
}
