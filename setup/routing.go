package setup

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/router"
)

// The node agents and the router in deploy.yml.
//
// A node agent is an accessory "<node>-agent" next to each node: the
// node's own image, unmodified, on the host network (it listens on the
// node's private address, port 8008, and reaches PostgreSQL there as the
// monitoring login), running the understudy binary apply puts in its bin
// directory, with cluster.json mounted. On the server of the backup
// accessory it also reads the backup agent's report, for /metrics.
//
// The router is an accessory "<primary>-router" on every host of the app's
// roles: HAProxy (the official image), the haproxy.cfg init renders
// mounted, on Kamal's docker network, so the app's database host is the
// router's container name, which never changes. Its Prometheus endpoint
// is published on the host's loopback only, for `status` and `check` over
// SSH.
const (
	AgentEnv           = "UNDERSTUDY_AGENT"  // env.clear marker of a node agent: its node
	RouterEnv          = "UNDERSTUDY_ROUTER" // env.clear marker of the router: the primary's accessory
	AgentClusterPath   = MountDir + "/cluster.json"
	RouterConfigFile   = "haproxy.cfg"                        // in GeneratedDir
	RouterConfigPath   = "/usr/local/etc/haproxy/haproxy.cfg" // the official image's
	DefaultRouterImage = "haproxy:2.8"                        // an LTS branch (haproxy.org)
	// AgentBackupReportDir is where an agent on the backup accessory's
	// server sees the backup state directory (read-only).
	AgentBackupReportDir = "/var/lib/understudy-backup-report"
)

// RouterChoice is init's --router / --no-router.
type RouterChoice int

const (
	RouterDefault RouterChoice = iota // on for a new setup; an existing one keeps what it has
	RouterOn
	RouterOff
)

// AgentName is a node's agent accessory.
func AgentName(node string) string { return node + "-agent" }

// RouterName is the router accessory for a primary.
func RouterName(primary string) string { return primary + "-router" }

// RouterPlan is what init decided about the router.
type RouterPlan struct {
	Accessory string   // its accessory
	Host      string   // its container name: the app's database host on Kamal's network
	Roles     []string // the app roles it runs with
	Image     string
}

// agentCmd is a node agent's cmd.
func agentCmd(node string, backupReport bool) string {
	c := BackupBinary + " agent --cluster " + AgentClusterPath + " --node " + node
	if backupReport {
		c += " --backup-report " + AgentBackupReportDir + "/agent-status.json"
	}
	return c
}

// planAgents adds (or brings in line) a node agent per node. It runs after
// the backup accessory is in place.
func planAgents(ed *kamal.Editor, p *Plan) error {
	cfg := ed.Config()
	svc, _ := cfg.Str(cfg.Root.Get("service"))
	backupName, backupHost := "", ""
	for _, a := range cfg.Accessories() {
		if _, ok := a.Env().Clear[BackupEnv]; ok {
			if hosts, _, err := a.Hosts(); err == nil && len(hosts) == 1 {
				backupName, backupHost = a.Name, hosts[0]
			}
		}
	}
	for _, n := range p.Cluster.Nodes {
		name := AgentName(n.Name)
		host := p.PrimaryHost
		if n.Name == p.Standby {
			host = p.StandbyHost
		}
		withReport := backupName != "" && sameHost(backupHost, host)
		cmd := agentCmd(n.Name, withReport)
		if p.Cluster.Failover != nil {
			cmd += agentFailoverFlags(p.Cluster.DataDir)
		}
		if a := cfg.Accessory(name); a != nil {
			if v, ours := a.Env().Clear[AgentEnv]; !ours {
				return refuse(a.Val.Pos(), fmt.Sprintf("accessory %s exists and was not made by understudy", name),
					"rename or remove it; understudy adds its node agent under that name")
			} else if s, _ := cfg.Str(v); s != n.Name {
				return refuse(v.Pos(), fmt.Sprintf("accessory %s is the agent of %q, not of %s", name, s, n.Name), "remove it and run init again")
			}
			for _, kv := range [][2]string{{hostKey(a), host}, {"network", "host"}, {"cmd", cmd}} {
				if err := ed.EnsureScalar(name, []string{kv[0]}, kamal.Quote(kv[1])); err != nil {
					return err
				}
			}
			if err := ensureItem(ed, name, []string{"env", "secret"}, pgconf.MonitorSecret, func(s string) bool {
				k, _, _ := strings.Cut(s, ":")
				return k == pgconf.MonitorSecret
			}); err != nil {
				return err
			}
			if withReport {
				if err := ensureItem(ed, name, []string{"directories"}, backupReportMount(svc, backupName), func(s string) bool {
					return strings.Contains(s, ":"+AgentBackupReportDir)
				}); err != nil {
					return err
				}
			}
			if p.Cluster.Failover != nil {
				if err := ensureAgentFailover(ed, name, n.Name, p); err != nil {
					return err
				}
			}
			continue
		}
		node := cfg.Accessory(n.Name)
		img := kamal.AccessoryBody(node).Get("image")
		dirs := kamal.List{kamal.Quote(BackupBinHostDir + ":" + BackupBinDir + ":ro")}
		if withReport {
			dirs = append(dirs, kamal.Quote(backupReportMount(svc, backupName)))
		}
		body := kamal.Map{
			{Key: "image", Val: img},
			{Key: "host", Val: kamal.Quote(host)},
			{Key: "network", Val: kamal.Quote("host")},
			{Key: "cmd", Val: kamal.Quote(cmd)},
			{Key: "env", Val: kamal.Map{
				{Key: "clear", Val: kamal.Map{{Key: AgentEnv, Val: kamal.Quote(n.Name)}}},
				{Key: "secret", Val: kamal.List{kamal.Quote(pgconf.MonitorSecret)}},
			}},
			{Key: "files", Val: kamal.List{kamal.Quote(path.Join(p.GenDir, ClusterFile) + ":" + AgentClusterPath)}},
			{Key: "directories", Val: dirs},
			{Key: "options", Val: kamal.Map{{Key: "user", Val: kamal.Quote("postgres")}, {Key: "stop-timeout", Val: kamal.Raw("5")}}},
		}
		if err := ed.AddAccessory(name, n.Name, body); err != nil {
			return err
		}
		if p.Cluster.Failover != nil {
			if err := ensureAgentFailover(ed, name, n.Name, p); err != nil {
				return err
			}
		}
	}
	p.Notes = append(p.Notes, fmt.Sprintf("%s and %s run the node agent (understudy agent) next to each node, on its private address port %d: GET /primary, /replica, /health for the router, /status and /metrics; it logs in as %s (pg_monitor, no superuser) with %s",
		AgentName(p.Primary), AgentName(p.Standby), pgconf.DefaultAgentPort, p.Cluster.MonitorUser, pgconf.MonitorSecret))
	return nil
}

// backupReportMount mounts the backup accessory's state directory (its
// report is agent-status.json there) read-only into the agent beside it.
// Kamal puts an accessory's directories under $PWD/<service>-<accessory>;
// the path climbs out of the agent's own.
func backupReportMount(svc, backupAccessory string) string {
	return "../" + svc + "-" + backupAccessory + "/" + BackupStateVolume + ":" + AgentBackupReportDir + ":ro"
}

// ensureItem makes a list hold a quoted item.
func ensureItem(ed *kamal.Editor, acc string, at []string, item string, same func(string) bool) error {
	return ed.EnsureListItem(acc, at, kamal.Quote(item), func(v *kamal.Val) bool {
		s, _ := ed.Config().Str(v)
		return same(s)
	})
}

// appRoles are the roles of the app's servers: (a plain list is "web").
func appRoles(cfg *kamal.Config) []string {
	s := cfg.Root.Get("servers")
	if s.IsMap() {
		roles := append([]string(nil), s.Keys()...)
		sort.Strings(roles)
		return roles
	}
	return []string{"web"}
}

// planRouter adds (or brings in line) the router accessory when chosen;
// it reports nil when there is none.
func planRouter(ed *kamal.Editor, o Options, p *Plan, fresh bool) (*RouterPlan, error) {
	cfg := ed.Config()
	name := RouterName(p.Primary)
	existing := cfg.Accessory(name)
	if existing != nil {
		if _, ours := existing.Env().Clear[RouterEnv]; !ours {
			return nil, refuse(existing.Val.Pos(), fmt.Sprintf("accessory %s exists and was not made by understudy", name),
				"rename or remove it; understudy adds its router under that name (or pass --no-router)")
		}
	}
	switch {
	case o.Router == RouterOff && existing != nil:
		return nil, refuse(existing.Val.Pos(), fmt.Sprintf("--no-router, but the router accessory %s is in %s", name, cfg.ConfigPath),
			"to remove it: point the app's DATABASE_URL back at the nodes (understudy connect), deploy, run `kamal accessory remove %s`, delete it from deploy.yml and %s/%s, then run init again", name, p.GenDir, RouterConfigFile)
	case o.Router == RouterOff, o.Router == RouterDefault && existing == nil && !fresh:
		return nil, nil
	}
	svc, _ := cfg.Str(cfg.Root.Get("service"))
	rp := &RouterPlan{Accessory: name, Host: svc + "-" + name, Roles: appRoles(cfg), Image: o.RouterImage}
	if rp.Image == "" {
		rp.Image = DefaultRouterImage
	}
	if existing != nil {
		if img, ok := existing.Str("image"); ok {
			rp.Image = img // the user's choice of tag stays
		}
		if err := ensureItem(ed, name, []string{"files"}, path.Join(p.GenDir, RouterConfigFile)+":"+RouterConfigPath, func(s string) bool {
			return strings.HasSuffix(s, ":"+RouterConfigPath)
		}); err != nil {
			return nil, err
		}
		rp.Roles = nil // the user's choice of servers stays too
		if v := existing.Field("roles"); v != nil {
			for _, it := range v.Items() {
				s, _ := cfg.Str(it)
				rp.Roles = append(rp.Roles, s)
			}
		}
		return rp, nil
	}
	var roles kamal.List
	for _, r := range rp.Roles {
		roles = append(roles, kamal.Quote(r))
	}
	body := kamal.Map{
		{Key: "image", Val: kamal.Quote(rp.Image)},
		{Key: "roles", Val: roles},
		{Key: "port", Val: kamal.Quote(fmt.Sprintf("127.0.0.1:%d:%d", router.DefaultStatsPort, router.DefaultStatsPort))},
		{Key: "env", Val: kamal.Map{{Key: "clear", Val: kamal.Map{{Key: RouterEnv, Val: kamal.Quote(p.Primary)}}}}},
		{Key: "files", Val: kamal.List{kamal.Quote(path.Join(p.GenDir, RouterConfigFile) + ":" + RouterConfigPath)}},
	}
	after := AgentName(p.Standby)
	if cfg.Accessory(after) == nil {
		after = p.Standby
	}
	if err := ed.AddAccessory(name, after, body); err != nil {
		return nil, err
	}
	return rp, nil
}

// RouterConfig renders the router's haproxy.cfg for a Kamal app: every
// address inside its container, Prometheus on the stats port.
func RouterConfig(c pgconf.Cluster) (string, error) {
	return router.Render(c, router.Config{})
}

// DeployedAccessory is an agent or router accessory as deploy.yml has it.
type DeployedAccessory struct {
	Name  string
	Node  string   // an agent's node
	Hosts []string // its servers (an agent has one)
	// Config is the file Kamal uploads for it, as init wrote it
	// (cluster.json for an agent, haproxy.cfg for the router).
	Config string
}

// loadRouting finds the agent and router accessories init wrote.
func (d *Deployed) loadRouting(src kamal.Source, gen string) error {
	for _, a := range d.Config.Accessories() {
		node, isAgent := a.Env().Clear[AgentEnv]
		_, isRouter := a.Env().Clear[RouterEnv]
		_, isWitness := a.Env().Clear[WitnessEnv]
		if !isAgent && !isRouter && !isWitness {
			continue
		}
		hosts, _, err := a.Hosts()
		if err != nil {
			return err
		}
		if len(hosts) == 0 {
			return fmt.Errorf("%s: accessory %s runs on no server: re-run `understudy init`", a.Val.Pos(), a.Name)
		}
		da := DeployedAccessory{Name: a.Name, Hosts: hosts}
		if isAgent {
			da.Node, _ = d.Config.Str(node)
			if _, ok := d.Cluster.Node(da.Node); !ok || len(hosts) != 1 {
				return fmt.Errorf("%s: accessory %s is the agent of %q, which is not a node on one server: re-run `understudy init`", a.Val.Pos(), a.Name, da.Node)
			}
			da.Config, _ = src.ReadFile(gen + "/" + ClusterFile) // "" for an older init's setup: apply says to re-run init
			d.Agents = append(d.Agents, da)
			continue
		}
		if isWitness {
			if len(hosts) != 1 {
				return fmt.Errorf("%s: accessory %s, failover's witness, must run on exactly one server: re-run `understudy init`", a.Val.Pos(), a.Name)
			}
			da.Config, _ = src.ReadFile(gen + "/" + ClusterFile)
			d.Witness = &da
			continue
		}
		if da.Config, err = src.ReadFile(gen + "/" + RouterConfigFile); err != nil {
			return fmt.Errorf("%s/%s is missing, and accessory %s mounts it: re-run `understudy init`", gen, RouterConfigFile, a.Name)
		}
		d.Router = &da
	}
	return nil
}
