package setup

import (
	"fmt"
	"regexp"

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
}

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
	d := &Deployed{Config: cfg, Hosts: map[string]string{}, DBUser: "postgres"}
	gen := GeneratedDir(o.Destination)
	boot, err := src.ReadFile(gen + "/boot.sh")
	if err != nil {
		return nil, fmt.Errorf("%s/boot.sh is missing: run `understudy init` first (it writes the replication setup this command works on)", gen)
	}
	vars := map[string]string{}
	for _, m := range bootVarRE.FindAllStringSubmatch(boot, -1) {
		vars[m[1]] = m[2]
	}
	c := pgconf.Cluster{InitialPrimary: vars["INITIAL_PRIMARY"], ReplUser: vars["REPL_USER"], WALCap: DefaultWALCap,
		DataDir: "", ConfFile: ConfPath, HBAFile: HBAPath, ContainerDefaults: true}
	if conf, err := src.ReadFile(gen + "/postgresql.conf"); err == nil {
		if m := confWALCapRE.FindStringSubmatch(conf); m != nil {
			c.WALCap = m[1]
		}
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
		if a.Name == c.InitialPrimary {
			img, _ := a.Str("image")
			if img == "" {
				img, _ = cfg.Str(cfg.Root.Get("image"))
			}
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
	if c.Major == 0 {
		return nil, fmt.Errorf("cannot tell the PostgreSQL version from %s's image: pass --pg-version", c.InitialPrimary)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	d.Cluster = c
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
