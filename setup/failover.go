package setup

import (
	"fmt"
	"net"
	"path"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/pgconf"
)

// Automatic failover in deploy.yml (docs/failover.md).
//
// The node agents run the two database servers' etcd members: their cmd
// gets --failover, the member's data on a named volume of its own, and the
// node's data volume mounted at the path the node has it (the fence note
// lives in PGDATA); FAILOVER_SECRET and the superuser's password come from
// the accessory's secrets. The third member is the witness, an accessory
// "<primary>-witness" on one app host: the nodes' image (nothing else to
// pull) running the understudy binary apply installs, on the host network,
// so its member listens on the host's private IP and nowhere else (etcd's
// 2379 and 2380 bound there by the member itself, which refuses a public
// address; Kamal's port: would publish one port only, and a container
// address is not the member's advertised one).
//
// A new named volume whose mount point is not in the image belongs to root
// (Docker copies a mount point's content and owner into a new volume only
// from a path the image has: Docker's docs, "Populate a volume using a
// container"; seen with Docker 20.10: uid 999 could not write to a new
// volume at a new path, could at a path the image gives it), so an agent
// with failover and the witness run as the image's default user, root. That gives the agent nothing over PostgreSQL
// that it does not hold already: it fences and promotes as the superuser.
const (
	WitnessEnv = "UNDERSTUDY_WITNESS" // env.clear marker of the witness: the primary's accessory
	// FailoverDataPath is where an agent's and the witness's etcd member
	// keeps its data, on the named volume FailoverVolume gives.
	FailoverDataPath = "/var/lib/understudy-etcd"
	// FailoverSecret is the secret every member derives its TLS from
	// (failover.SecretName; `understudy failover secret` makes one).
	FailoverSecret = "FAILOVER_SECRET"
)

// FailoverOptions are init's --failover flags.
type FailoverOptions struct {
	WitnessHost string // --witness-host: the app host that runs the witness, as Kamal reaches it
	WitnessIP   string // --witness-ip: its private IP (default --witness-host when that is a private IP)
	Synchronous bool   // --synchronous
}

// WitnessName is the witness accessory (and its etcd member) for a primary.
func WitnessName(primary string) string { return primary + "-witness" }

// FailoverVolume is the named volume of an accessory's etcd member: Docker
// volume names are the server's, so it carries Kamal's service name.
func FailoverVolume(service, accessory string) string {
	return service + "-" + accessory + "-etcd"
}

// FailoverToken is etcd's initial-cluster-token for an app's cluster: the
// same on every init, so a second one changes nothing.
func FailoverToken(service, dest, primary string) string {
	return strings.Join(nonEmpty(service, dest, primary), "-")
}

func nonEmpty(s ...string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

// WitnessCmd is the witness accessory's cmd.
var WitnessCmd = BackupBinary + " witness --cluster " + AgentClusterPath + " --data " + FailoverDataPath

// existingFailover reads the failover part of the cluster.json an earlier
// init wrote, if any.
func existingFailover(src kamal.Source, gen string) *pgconf.Failover {
	text, err := src.ReadFile(path.Join(gen, ClusterFile))
	if err != nil {
		return nil
	}
	c, err := pgconf.UnmarshalCluster([]byte(text))
	if err != nil {
		return nil
	}
	return c.Failover
}

// planFailover decides the failover model: from the flags with --failover,
// else what an earlier init wrote (init without --failover keeps it). It
// runs before the agents are planned; nil is off.
func planFailover(ed *kamal.Editor, src kamal.Source, o Options, p *Plan) (*pgconf.Failover, string, error) {
	cfg := ed.Config()
	prev := existingFailover(src, p.GenDir)
	name := WitnessName(p.Primary)
	if w := cfg.Accessory(name); w != nil {
		if _, ours := w.Env().Clear[WitnessEnv]; !ours {
			return nil, "", refuse(w.Val.Pos(), fmt.Sprintf("accessory %s exists and was not made by understudy", name),
				"rename or remove it; understudy adds automatic failover's witness under that name")
		}
		if o.Failover == nil && prev == nil {
			return nil, "", refuse(w.Val.Pos(), fmt.Sprintf("accessory %s is failover's witness, but %s/%s has no failover section", name, p.GenDir, ClusterFile),
				"run init again with --failover --witness-host HOST [--witness-ip IP] to write it")
		}
	}
	if o.Failover == nil {
		if prev == nil {
			return nil, "", nil
		}
		fo := &FailoverOptions{Synchronous: prev.Synchronous}
		for _, m := range prev.Members {
			if m.Name == prev.Witness {
				fo.WitnessIP = m.Addr
			}
		}
		if w := cfg.Accessory(name); w != nil {
			if hosts, _, err := w.Hosts(); err == nil && len(hosts) == 1 {
				fo.WitnessHost = hosts[0]
			}
		}
		if fo.WitnessHost == "" {
			return nil, "", refuse(cfg.ConfigPath, fmt.Sprintf("%s/%s turns automatic failover on, but the witness accessory %s is not in %s on one server", p.GenDir, ClusterFile, name, cfg.ConfigPath),
				"run init again with --failover --witness-host HOST [--witness-ip IP]")
		}
		o.Failover = fo
	}
	fo := *o.Failover
	if fo.WitnessHost == "" {
		return nil, "", refuse("--witness-host", "--failover needs the witness's server",
			"pass --witness-host HOST: one of the app's servers (not %s or %s), as Kamal reaches it over SSH; it runs failover's third vote", p.PrimaryHost, p.StandbyHost)
	}
	if !validHost(fo.WitnessHost) || leadingZeroIPv4(fo.WitnessHost) {
		return nil, "", refuse("--witness-host", fmt.Sprintf("%q is not a server name or address", fo.WitnessHost),
			"pass the app host as Kamal reaches it over SSH: a host name or an IP address (without leading zeros)")
	}
	if sameHost(fo.WitnessHost, p.PrimaryHost) || sameHost(fo.WitnessHost, p.StandbyHost) {
		return nil, "", refuse("--witness-host", fmt.Sprintf("the witness would run on a database server (%s)", fo.WitnessHost),
			"pass another server, e.g. an app host: two database servers cannot tell a dead peer from a cut link, and a third vote on one of them dies with it")
	}
	if fo.WitnessIP == "" {
		if ip := net.ParseIP(strings.Trim(fo.WitnessHost, "[]")); ip != nil && ip.IsPrivate() {
			fo.WitnessIP = ip.String()
		} else {
			return nil, "", refuse("--witness-ip", fmt.Sprintf("the witness server %s is not a private IP, and no --witness-ip gives one", fo.WitnessHost),
				"pass --witness-ip with its address on the private network the database servers share (e.g. 10.0.1.4): etcd's traffic stays there")
		}
	}
	ip := net.ParseIP(fo.WitnessIP)
	if ip == nil || !ip.IsPrivate() || leadingZeroIPv4(fo.WitnessIP) {
		return nil, "", refuse("--witness-ip", fmt.Sprintf("%q is not a private IP", fo.WitnessIP),
			"give the witness server's address on the private network the database servers share (10.x, 172.16-31.x, 192.168.x or fc00::/7): etcd's peer and client traffic stays there")
	}
	members := []pgconf.FailoverMember{}
	for _, n := range p.Cluster.Nodes {
		if sameHost(n.Addr, fo.WitnessIP) {
			return nil, "", refuse("--witness-ip", fmt.Sprintf("%s is %s's address; the witness needs a server of its own", fo.WitnessIP, n.Name),
				"pass the witness server's own private IP")
		}
		if a := net.ParseIP(n.Addr); a == nil || !a.IsPrivate() {
			acc := cfg.Accessory(n.Name)
			where := "--replica-ip"
			if acc != nil {
				where = fieldPos(acc, "port")
			}
			return nil, "", refuse(where, fmt.Sprintf("%s listens on %s, which is not a private IP: its etcd member would listen there too", n.Name, n.Addr),
				"bind the node to its server's private IP first (port: \"<private-ip>:5432:5432\", --replica-ip), then add --failover")
		}
		members = append(members, pgconf.FailoverMember{Name: n.Name, Addr: n.Addr})
	}
	members = append(members, pgconf.FailoverMember{Name: name, Addr: ip.String()})
	svc, _ := cfg.Str(cfg.Root.Get("service"))
	token := FailoverToken(svc, o.Destination, p.Primary)
	if prev != nil && prev.Token != "" {
		token = prev.Token // etcd's cluster keeps its id
	}
	return &pgconf.Failover{Token: token, Witness: name, Members: members, Synchronous: fo.Synchronous}, fo.WitnessHost, nil
}

// agentFailoverFlags is what --failover adds to a node agent's cmd.
func agentFailoverFlags(pgdata string) string {
	return " --failover --failover-data " + FailoverDataPath + " --pgdata " + pgdata
}

// nodeDataMount is the node's data volume as the agent mounts it: the same
// container path; a named volume or an absolute host path as the node has
// it; a directory relative to the node's service directory reached from
// the agent's (Kamal puts each accessory's under $PWD/<service>-<name>).
func nodeDataMount(cfg *kamal.Config, node *kamal.Accessory, pgdata string) (kind, item string, err error) {
	svc, _ := cfg.Str(cfg.Root.Get("service"))
	covering := coveringMount(node.Mounts(), pgdata)
	if covering == nil {
		return "", "", refuse(node.Val.Pos(), fmt.Sprintf("accessory %s mounts no volume at its data directory %s", node.Name, pgdata),
			"mount one there (directories: [\"data:%s\"]), then run init again", pgdata)
	}
	if covering.Local == "" || covering.Val.HasERB() || strings.ContainsAny(covering.Local, " \t") {
		return "", "", refuse(covering.Val.Pos(), fmt.Sprintf("accessory %s's data mount cannot be read here (%s), and its agent must mount the same volume", node.Name, covering.Val.Source()),
			"write it as plain text, local:remote, then run init again")
	}
	remote := strings.TrimRight(covering.Remote, "/")
	local := covering.Local
	if covering.Kind == "directories" && !strings.HasPrefix(local, "/") {
		local = "../" + svc + "-" + node.Name + "/" + local
	}
	return covering.Kind, local + ":" + remote, nil
}

// ensureAgentFailover brings a node agent's failover part in line: its
// secrets, its member's named volume, the node's data volume, root as its
// user (see above). The cmd is the caller's.
func ensureAgentFailover(ed *kamal.Editor, name, node string, p *Plan) error {
	cfg := ed.Config()
	svc, _ := cfg.Str(cfg.Root.Get("service"))
	if err := ensureItem(ed, name, []string{"env", "secret"}, FailoverSecret, func(s string) bool {
		k, _, _ := strings.Cut(s, ":")
		return k == FailoverSecret
	}); err != nil {
		return err
	}
	pw, err := passwordRef(cfg, p.Primary)
	if err != nil {
		return err
	}
	if err := ed.EnsureListItem(name, []string{"env", "secret"}, kamal.Raw(pw.Val.Source()), func(v *kamal.Val) bool {
		s, _ := ed.Config().Str(v)
		k, _, _ := strings.Cut(s, ":")
		return k == "POSTGRES_PASSWORD"
	}); err != nil {
		return err
	}
	// The superuser's name as the node has it (the agent's default is the
	// image's, postgres).
	prim := cfg.Accessory(p.Primary)
	if v, ok := prim.Env().Clear["POSTGRES_USER"]; ok {
		if err := ed.EnsureScalar(name, []string{"env", "clear", "POSTGRES_USER"}, kamal.Raw(v.Source())); err != nil {
			return err
		}
	}
	for _, ref := range prim.Env().Secret {
		if ref.Name == "POSTGRES_USER" {
			if err := ed.EnsureListItem(name, []string{"env", "secret"}, kamal.Raw(ref.Val.Source()), func(v *kamal.Val) bool {
				s, _ := ed.Config().Str(v)
				k, _, _ := strings.Cut(s, ":")
				return k == "POSTGRES_USER"
			}); err != nil {
				return err
			}
		}
	}
	kind, mount, err := nodeDataMount(cfg, cfg.Accessory(node), p.Cluster.DataDir)
	if err != nil {
		return err
	}
	_, remote, _ := strings.Cut(mount, ":")
	if err := ensureItem(ed, name, []string{kind}, mount, func(s string) bool {
		parts := strings.SplitN(s, ":", 3)
		return len(parts) > 1 && strings.TrimRight(parts[1], "/") == remote
	}); err != nil {
		return err
	}
	if err := ensureItem(ed, name, []string{"volumes"}, FailoverVolume(svc, name)+":"+FailoverDataPath, func(s string) bool {
		parts := strings.SplitN(s, ":", 3)
		return len(parts) > 1 && parts[1] == FailoverDataPath
	}); err != nil {
		return err
	}
	return ed.EnsureScalar(name, []string{"options", "user"}, kamal.Quote("root"))
}

// passwordRef is the primary's POSTGRES_PASSWORD secret, which the agents
// with failover get the same way (NAME or NAME:SECRET).
func passwordRef(cfg *kamal.Config, primary string) (kamal.SecretRef, error) {
	a := cfg.Accessory(primary)
	for _, s := range a.Env().Secret {
		if s.Name == "POSTGRES_PASSWORD" {
			return s, nil
		}
	}
	return kamal.SecretRef{}, refuse(a.Val.Pos(), fmt.Sprintf("accessory %s has no POSTGRES_PASSWORD in env.secret, and failover's agents log in with it as the superuser", primary),
		"add POSTGRES_PASSWORD to its env.secret (as the postgres image expects), then run init again")
}

// planWitness adds (or brings in line) the witness accessory.
func planWitness(ed *kamal.Editor, p *Plan, host string) error {
	cfg := ed.Config()
	svc, _ := cfg.Str(cfg.Root.Get("service"))
	name := p.Cluster.Failover.Witness
	if a := cfg.Accessory(name); a != nil {
		for _, kv := range [][2]string{{hostKey(a), host}, {"network", "host"}, {"cmd", WitnessCmd}} {
			if err := ed.EnsureScalar(name, []string{kv[0]}, kamal.Quote(kv[1])); err != nil {
				return err
			}
		}
		if err := ensureItem(ed, name, []string{"env", "secret"}, FailoverSecret, func(s string) bool {
			k, _, _ := strings.Cut(s, ":")
			return k == FailoverSecret
		}); err != nil {
			return err
		}
		return ensureItem(ed, name, []string{"volumes"}, FailoverVolume(svc, name)+":"+FailoverDataPath, func(s string) bool {
			parts := strings.SplitN(s, ":", 3)
			return len(parts) > 1 && parts[1] == FailoverDataPath
		})
	}
	img := kamal.AccessoryBody(cfg.Accessory(p.Primary)).Get("image")
	if img == nil {
		return refuse(cfg.Accessory(p.Primary).Val.Pos(), fmt.Sprintf("accessory %s has no image: of its own, and the witness runs the nodes' image", p.Primary), "give it image: postgres:%d", p.Image.Major)
	}
	body := kamal.Map{
		{Key: "image", Val: img},
		{Key: "host", Val: kamal.Quote(host)},
		{Key: "network", Val: kamal.Quote("host")},
		{Key: "cmd", Val: kamal.Quote(WitnessCmd)},
		{Key: "env", Val: kamal.Map{
			{Key: "clear", Val: kamal.Map{{Key: WitnessEnv, Val: kamal.Quote(p.Primary)}}},
			{Key: "secret", Val: kamal.List{kamal.Quote(FailoverSecret)}},
		}},
		{Key: "files", Val: kamal.List{kamal.Quote(path.Join(p.GenDir, ClusterFile) + ":" + AgentClusterPath)}},
		{Key: "directories", Val: kamal.List{kamal.Quote(BackupBinHostDir + ":" + BackupBinDir + ":ro")}},
		{Key: "volumes", Val: kamal.List{kamal.Quote(FailoverVolume(svc, name) + ":" + FailoverDataPath)}},
		{Key: "options", Val: kamal.Map{{Key: "stop-timeout", Val: kamal.Raw("5")}}},
	}
	return ed.AddAccessory(name, AgentName(p.Standby), body)
}

// failoverNotes says what failover adds, for the reader of plan and init.
func failoverNotes(p *Plan, host string) {
	f := p.Cluster.Failover
	var addrs []string
	for _, m := range f.Members {
		addrs = append(addrs, m.Name+" "+m.Addr)
	}
	p.Notes = append(p.Notes,
		fmt.Sprintf("automatic failover: three etcd members (%s; ports 2379 and 2380 on those private IPs only), in %s and %s and in the witness %s on %s; the primary's agent holds a leader lease, and when it is gone for 6 s the standby's agent promotes its node (docs/failover.md)",
			strings.Join(addrs, ", "), AgentName(p.Primary), AgentName(p.Standby), f.Witness, host),
		fmt.Sprintf("with failover on, the nodes boot read-only and only the lease holder's agent makes its node writable; the agents log in as the superuser (POSTGRES_PASSWORD) to promote and fence, keep their member's data on the volumes %s, and run as root (a new volume belongs to root)",
			FailoverDataPath))
	if f.Synchronous {
		p.Notes = append(p.Notes, "--synchronous: a commit waits until the standby has it (synchronous_standby_names = 'ANY 1 (...)', one round trip to the standby's server added to every commit), and falls back to asynchronous, under the lease, while the standby is away")
	}
}

// checkFailover holds deploy.yml and cluster.json's failover section
// together: the witness accessory is there exactly when failover is on,
// and the members are where the nodes are.
func (d *Deployed) checkFailover(configPath, gen string) error {
	f := d.Cluster.Failover
	switch {
	case f == nil && d.Witness == nil:
		return nil
	case f == nil:
		return fmt.Errorf("%s has failover's witness %s, but %s/%s has no failover section: re-run `understudy init --failover --witness-host HOST`", configPath, d.Witness.Name, gen, ClusterFile)
	case d.Witness == nil || d.Witness.Name != f.Witness:
		return fmt.Errorf("%s/%s turns automatic failover on with the witness %s, which is not in %s: re-run `understudy init`", gen, ClusterFile, f.Witness, configPath)
	}
	for _, m := range f.Members {
		if n, ok := d.Cluster.Node(m.Name); ok && n.Addr != m.Addr {
			return fmt.Errorf("%s/%s: failover member %s is at %s, but the node listens on %s: re-run `understudy init`", gen, ClusterFile, m.Name, m.Addr, n.Addr)
		}
	}
	for _, a := range d.Agents {
		acc := d.Config.Accessory(a.Name)
		if cmd, _ := acc.Str("cmd"); !strings.Contains(cmd, " --failover ") {
			return fmt.Errorf("%s: the node agent %s runs without --failover, but %s/%s turns failover on: re-run `understudy init`", acc.Val.Pos(), a.Name, gen, ClusterFile)
		}
	}
	return nil
}
