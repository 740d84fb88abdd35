// Package setup turns a Kamal app's configuration into a replicated
// PostgreSQL setup: it decides (Build) and renders; writing is the caller's.
package setup

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/pgconf"
)

// Options are the inputs of init and plan.
type Options struct {
	ConfigPath  string           // default config/deploy.yml
	Destination string           // -d
	Accessory   string           // --accessory: the primary's accessory when several qualify
	ReplicaName string           // --replica-name, default "<primary>-replica"
	ReplicaHost string           // --replica-host: the server Kamal reaches over SSH
	ReplicaIP   string           // --replica-ip: the private IP PostgreSQL binds to there
	PrimaryIP   string           // --primary-ip: when the port's IP is ERB that cannot be read
	PGVersion   int              // --pg-version: when the image tag does not say
	WALCap      string           // --wal-cap: max_slot_wal_keep_size
	ReplUser    string           // --replication-user
	Backup      *BackupOptions   // --backup: add the backup accessory
	Router      RouterChoice     // --router / --no-router
	RouterImage string           // --router-image, default DefaultRouterImage
	Failover    *FailoverOptions // --failover: automatic failover (nil: keep what an earlier init wrote)
	Env         func(string) (string, bool)
}

// Container paths of the managed files.
const (
	MountDir       = pgconf.MountPoint
	BootPath       = MountDir + "/boot.sh"
	ConfPath       = MountDir + "/postgresql.conf"
	HBAPath        = MountDir + "/pg_hba.conf"
	RoleScriptPath = "/docker-entrypoint-initdb.d/understudy-replication-role.sh"
	PasswordSecret = "REPLICATION_PASSWORD"
	NodeEnv        = "UNDERSTUDY_NODE"
	DefaultWALCap  = "10GB"
	ClusterFile    = "cluster.json" // in GeneratedDir: the cluster model as data
	StopTimeout    = "120"
)

// Refusal is a configuration understudy will not build on, with the fix.
type Refusal struct {
	Where   string // file:line, or a file
	Problem string
	Fix     string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("%s: %s\n  fix: %s", r.Where, r.Problem, r.Fix)
}

func refuse(where, problem, fix string, args ...any) *Refusal {
	return &Refusal{Where: where, Problem: problem, Fix: fmt.Sprintf(fix, args...)}
}

// FileChange is one file init writes.
type FileChange struct {
	Path   string
	Old    string
	New    string
	Exists bool
	Mode   fs.FileMode
}

// Plan is the result of Build.
type Plan struct {
	Primary     string // accessory names
	Standby     string
	PrimaryHost string
	StandbyHost string
	Cluster     pgconf.Cluster
	Image       Image
	Changes     []FileChange // only files whose content changes
	Notes       []string     // what the change does, for the reader
	Warnings    []string
	SecretHowTo string        // where REPLICATION_PASSWORD must be stored
	AppURL      string        // with the router: the app's single-host DATABASE_URL
	Connect     ConnectInput  // what `understudy connect` renders for each stack
	GenDir      string        // where the generated files live, e.g. config/understudy
	Backup      *backup.Setup // with --backup: the backup setup (backup.json)
	Router      *RouterPlan   // the router, when the setup has one
	WitnessHost string        // with failover: the witness's server
}

// GeneratedDir is where generated files go, per destination.
func GeneratedDir(dest string) string {
	if dest == "" {
		return "config/understudy"
	}
	return "config/understudy/" + dest
}

// Build computes the plan. It reads only; nothing is written.
func Build(src kamal.Source, o Options) (*Plan, error) {
	if o.ConfigPath == "" {
		o.ConfigPath = "config/deploy.yml"
	}
	if o.ReplUser == "" {
		o.ReplUser = pgconf.DefaultReplUser
	}
	if o.Env == nil {
		o.Env = func(string) (string, bool) { return "", false }
	}
	ed, err := kamal.NewEditor(src, o.ConfigPath, o.Destination, o.Env)
	if err != nil {
		return nil, err
	}
	cfg := ed.Config()
	p := &Plan{GenDir: GeneratedDir(o.Destination)}
	if err := refuseCmdNotString(cfg); err != nil {
		return nil, err
	}

	prim, err := pickPrimary(cfg, o)
	if err != nil {
		return nil, err
	}
	p.Primary = prim.Name
	if o.ReplicaName == "" {
		o.ReplicaName = prim.Name + "-replica"
	}
	p.Standby = o.ReplicaName

	node, err := checkPrimary(cfg, prim, o, p)
	if err != nil {
		return nil, err
	}
	if o.ReplicaHost == "" && o.ReplicaIP == "" {
		// A later init (to add --failover or --backup, say) need not be
		// given the standby again: it is where an earlier init put it.
		o.ReplicaHost, o.ReplicaIP = existingStandby(src, cfg, p.GenDir, p.Standby)
	}
	standby, err := checkReplicaFlags(cfg, o, p, node)
	if err != nil {
		return nil, err
	}
	if existing := cfg.Accessory(p.Standby); existing != nil {
		if err := sameMajor(existing, prim, p.Image); err != nil {
			return nil, err
		}
	}
	walCap := o.WALCap
	walNote := ""
	if walCap == "" {
		walCap = DefaultWALCap
		walNote = fmt.Sprintf("max_slot_wal_keep_size = %s (default): a standby that falls further behind than this is re-cloned instead of filling the primary's disk; keep it under a fifth of the data volume's free space (--wal-cap)", walCap)
	} else if !walCapRE.MatchString(walCap) {
		return nil, refuse("--wal-cap", fmt.Sprintf("%q is not a size", walCap), "give a size with a unit, e.g. --wal-cap 20GB or --wal-cap 512MB")
	}
	p.Cluster = pgconf.Cluster{
		Nodes:             []pgconf.Node{node, standby},
		InitialPrimary:    prim.Name,
		Major:             p.Image.Major,
		ReplUser:          o.ReplUser,
		MonitorUser:       pgconf.DefaultMonitorUser,
		WALCap:            walCap,
		DataDir:           dataDir(cfg, prim, p.Image.Major),
		ConfFile:          ConfPath,
		HBAFile:           HBAPath,
		ContainerDefaults: true,
	}
	if err := p.Cluster.Validate(); err != nil {
		return nil, refuse(o.ConfigPath, err.Error(), "rename the accessory or pass --replica-name / --replication-user")
	}
	if p.Cluster.Failover, p.WitnessHost, err = planFailover(ed, src, o, p); err != nil {
		return nil, err
	}
	if p.Cluster.Failover != nil {
		if err := p.Cluster.Validate(); err != nil {
			return nil, refuse("--failover", err.Error(), "pass --witness-host HOST and --witness-ip IP (the app host's private IP)")
		}
	}

	// deploy.yml: the primary, then the standby derived from it.
	cmd, dropped, err := newCmd(cfg, prim, p.Cluster)
	if err != nil {
		return nil, err
	}
	for _, d := range dropped {
		p.Notes = append(p.Notes, fmt.Sprintf("removed %q from %s's cmd: %s now sets it, the same on both nodes (a -c flag would override it)", d, prim.Name, ConfPath))
	}
	if err := ensureNode(ed, prim.Name, prim.Name, cmd, p); err != nil {
		return nil, err
	}
	fresh := ed.Config().Accessory(p.Standby) == nil // a new setup: the router is on by default
	if existing := ed.Config().Accessory(p.Standby); existing != nil {
		if _, ok := existing.Env().Clear[NodeEnv]; !ok {
			p.Warnings = append(p.Warnings, fmt.Sprintf("accessory %s already exists and was not made by understudy: it is brought in line (boot script, settings, host, port), and anything else in it is kept; review it", p.Standby))
		}
		if err := ed.EnsureScalar(p.Standby, []string{hostKey(existing)}, kamal.Quote(o.ReplicaHost)); err != nil {
			return nil, err
		}
		if err := ed.EnsureScalar(p.Standby, []string{"port"}, kamal.Quote(standbyPort(cfg, prim, o.ReplicaIP))); err != nil {
			return nil, err
		}
	} else {
		body := standbyBody(ed.Config().Accessory(prim.Name), o, standbyPort(cfg, prim, o.ReplicaIP))
		if err := ed.AddAccessory(p.Standby, prim.Name, body); err != nil {
			return nil, err
		}
	}
	if err := ensureNode(ed, p.Standby, p.Standby, cmd, p); err != nil {
		return nil, err
	}
	p.Notes = append(p.Notes,
		fmt.Sprintf("%s and %s run %s first: it clones an empty data directory from the current primary, then starts the image's entrypoint", prim.Name, p.Standby, BootPath),
		fmt.Sprintf("both nodes read %s/postgresql.conf and %s/pg_hba.conf, so a switchover needs no edit", p.GenDir, p.GenDir),
		fmt.Sprintf("replication uses the role %s with slot %s on the primary (WAL is kept for the standby while it is away, up to %s)", o.ReplUser, standby.Slot(), walCap),
	)

	if walNote != "" {
		p.Notes = append(p.Notes, walNote)
	}

	// Backups: an accessory of their own, next to the nodes.
	var backupNames []string
	if o.Backup != nil {
		bs, err := planBackup(ed, o, p)
		if err != nil {
			return nil, err
		}
		p.Backup = &bs
		backupNames = bs.Secrets.Names()[1:] // the replication password is the nodes' already
	}

	// The node agents and the router.
	if err := planAgents(ed, p); err != nil {
		return nil, err
	}
	if p.Cluster.Failover != nil {
		if err := planWitness(ed, p, p.WitnessHost); err != nil {
			return nil, err
		}
		failoverNotes(p, p.WitnessHost)
	}
	if p.Router, err = planRouter(ed, o, p, fresh); err != nil {
		return nil, err
	}
	backupNames = append([]string{pgconf.MonitorSecret}, backupNames...)
	if p.Cluster.Failover != nil {
		backupNames = append(backupNames, FailoverSecret)
	}

	// Secrets.
	secretChange, err := planSecret(src, cfg, prim, o, p, backupNames)
	if err != nil {
		return nil, err
	}

	// Collect changes: generated files, secrets, deploy files.
	gen := map[string]string{
		path.Join(p.GenDir, "boot.sh"):                    pgconf.Boot(p.Cluster),
		path.Join(p.GenDir, "postgresql.conf"):            pgconf.Conf(p.Cluster),
		path.Join(p.GenDir, "pg_hba.conf"):                pgconf.HBA(p.Cluster),
		path.Join(p.GenDir, "replication-role.initdb.sh"): pgconf.RoleScript(p.Cluster),
		// The model itself, as data: what the live commands read back.
		path.Join(p.GenDir, ClusterFile): pgconf.MarshalCluster(p.Cluster),
	}
	if p.Backup != nil {
		gen[path.Join(p.GenDir, BackupSetupFile)] = backup.MarshalSetup(*p.Backup)
	}
	if p.Router != nil {
		cfgText, err := RouterConfig(p.Cluster)
		if err != nil {
			return nil, err
		}
		gen[path.Join(p.GenDir, RouterConfigFile)] = cfgText
	}
	names := make([]string, 0, len(gen))
	for n := range gen {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mode := fs.FileMode(0o644)
		if strings.HasSuffix(n, ".sh") {
			mode = 0o755
		}
		if err := p.add(src, n, gen[n], mode); err != nil {
			return nil, err
		}
	}
	if secretChange != nil {
		if err := p.add(src, secretChange.Path, secretChange.New, 0o644); err != nil {
			return nil, err
		}
	}
	changed := ed.Changed()
	for _, f := range cfg.Files {
		if s, ok := changed[f.Path]; ok {
			if err := p.add(src, f.Path, s, 0o644); err != nil {
				return nil, err
			}
		}
	}
	if err := ValidateKamal(ed.Config()); err != nil {
		return nil, fmt.Errorf("internal error: the edited configuration would not pass Kamal's checks: %w", err)
	}
	p.appAdvice(src, cfg, prim)
	return p, nil
}

var walCapRE = regexp.MustCompile(`^\d+\s*(kB|MB|GB|TB)$`)

// portTailRE reads ":HOSTPORT:CONTAINERPORT" off a port whose address is ERB.
var portTailRE = regexp.MustCompile(`:(\d+):(\d+)$`)

func (p *Plan) add(src kamal.Source, rel, content string, mode fs.FileMode) error {
	old, err := src.ReadFile(rel)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", rel, err)
	}
	if exists && old == content {
		return nil
	}
	p.Changes = append(p.Changes, FileChange{Path: rel, Old: old, New: content, Exists: exists, Mode: mode})
	return nil
}

// isManagedStandby reports whether an accessory is a standby that
// understudy made for another accessory.
func isManagedStandby(a *kamal.Accessory, all []*kamal.Accessory, o Options) bool {
	if o.ReplicaName != "" && a.Name == o.ReplicaName {
		return true
	}
	for _, b := range all {
		if b != a && a.Name == b.Name+"-replica" {
			return true
		}
	}
	return false
}

func pickPrimary(cfg *kamal.Config, o Options) (*kamal.Accessory, error) {
	var pg, other []*kamal.Accessory
	var names []string
	var foreign []*kamal.Accessory
	for _, a := range cfg.Accessories() {
		img, _ := a.Str("image")
		names = append(names, a.Name)
		if ParseImage(img).Foreign != "" {
			foreign = append(foreign, a)
		}
		if ParseImage(img).Postgres {
			pg = append(pg, a)
		} else {
			other = append(other, a)
		}
	}
	if o.Accessory != "" {
		a := cfg.Accessory(o.Accessory)
		if a == nil {
			return nil, refuse(cfg.ConfigPath, fmt.Sprintf("there is no accessory named %q", o.Accessory), "pass one of: %s", strings.Join(names, ", "))
		}
		if err := refuseForeign(a); err != nil {
			return nil, err
		}
		return a, nil
	}
	if len(pg) == 0 && len(foreign) > 0 {
		return nil, refuseForeign(foreign[0])
	}
	var cands []*kamal.Accessory
	for _, a := range pg {
		_, isBackup := a.Env().Clear[BackupEnv]
		_, isAgent := a.Env().Clear[AgentEnv]
		_, isWitness := a.Env().Clear[WitnessEnv]
		if !isManagedStandby(a, pg, o) && !isBackup && !isAgent && !isWitness {
			cands = append(cands, a)
		}
	}
	switch len(cands) {
	case 0:
		found := "none"
		if len(names) > 0 {
			found = strings.Join(names, ", ")
		}
		return nil, refuse(cfg.ConfigPath, fmt.Sprintf("no PostgreSQL accessory (accessories found: %s)", found),
			"understudy adds a standby to a PostgreSQL accessory running the official postgres image (or one built on it, like postgis). Add one, e.g.\n    accessories:\n      db:\n        image: postgres:17\n        host: <server>\n        port: <private-ip>:5432:5432\n        directories:\n          - data:/var/lib/postgresql/data\n  or, if your image is built on postgres under another name, pass --accessory NAME")
	case 1:
		return cands[0], nil
	}
	var cn []string
	for _, a := range cands {
		cn = append(cn, a.Name)
	}
	return nil, refuse(cfg.ConfigPath, fmt.Sprintf("several PostgreSQL accessories could be the primary: %s", strings.Join(cn, ", ")), "pass --accessory NAME to choose one")
}

// refuseForeign refuses a PostgreSQL image whose entrypoint is not the
// official one: the boot script would run, then hand over to an entrypoint
// that is not there, or one that sets up replication its own way.
func refuseForeign(a *kamal.Accessory) error {
	img, _ := a.Str("image")
	im := ParseImage(img)
	if im.Foreign == "" {
		return nil
	}
	return refuse(fieldPos(a, "image"), fmt.Sprintf("accessory %s runs %s (%s), which is PostgreSQL with an entrypoint and data layout of its own, not the official postgres image that understudy's boot script hands over to", a.Name, im.Foreign, img),
		"use the official image (postgres:%s, moving the data with pg_dump and pg_restore), or set up replication with that image's own mechanism; understudy would write a setup that cannot start", majorOr(im.Major))
}

func majorOr(m int) string {
	if m == 0 {
		return "17"
	}
	return strconv.Itoa(m)
}

func fieldPos(a *kamal.Accessory, key string) string {
	if v := a.Field(key); v != nil {
		return v.Pos()
	}
	return a.Val.Pos()
}

// checkPrimary validates the primary accessory and returns its node.
func checkPrimary(cfg *kamal.Config, a *kamal.Accessory, o Options, p *Plan) (pgconf.Node, error) {
	var n pgconf.Node
	n.Name = a.Name
	imgRef, ok := a.Str("image")
	if !ok {
		if v := a.Field("image"); v != nil && v.HasERB() {
			imgRef = v.Source()
		}
	}
	img := ParseImage(imgRef)
	if o.PGVersion != 0 {
		img.Major = o.PGVersion
	}
	if img.Major == 0 {
		return n, refuse(fieldPos(a, "image"), fmt.Sprintf("cannot tell the PostgreSQL major version from the image %q", imgRef),
			"pin a major version in the tag (e.g. postgres:17), or pass --pg-version N (13 to 18)")
	}
	if img.Major < 13 || img.Major > 18 {
		return n, refuse(fieldPos(a, "image"), fmt.Sprintf("PostgreSQL %d is not supported", img.Major),
			"understudy needs PostgreSQL 13 to 18 (13 brought max_slot_wal_keep_size, which keeps a slot from filling the disk); upgrade first")
	}
	p.Image = img

	hosts, key, err := a.Hosts()
	if err != nil {
		return n, err
	}
	switch {
	case len(hosts) == 0 && key == "":
		return n, refuse(a.Val.Pos(), fmt.Sprintf("accessory %s has no host", a.Name), "add host: <server> to it (kamal needs one too)")
	case len(hosts) == 0:
		return n, refuse(fieldPos(a, key), fmt.Sprintf("accessory %s's %s: selects no server", a.Name, key), "use host: <server>")
	case len(hosts) > 1:
		return n, refuse(fieldPos(a, key), fmt.Sprintf("accessory %s runs on %d servers (%s): Kamal starts the same container, with the same data directory and settings, on each of them, which is several independent primaries, not replication", a.Name, len(hosts), strings.Join(hosts, ", ")),
			"keep one server in %s (host: %s) and let understudy add the standby as its own accessory with --replica-host", a.Name, hosts[0])
	}
	p.PrimaryHost = hosts[0]

	pv := a.Field("port")
	if pv == nil {
		return n, refuse(a.Val.Pos(), fmt.Sprintf("accessory %s publishes no port, so a standby on another server cannot reach it", a.Name),
			"add port: \"<private-ip>:5432:5432\" with the primary server's private IP, then kamal accessory reboot %s", a.Name)
	}
	if !pv.IsScalar() && !pv.HasERB() {
		return n, refuse(pv.Pos(), fmt.Sprintf("accessory %s's port: is a list or mapping; Kamal's accessory port: takes one mapping", a.Name),
			"write it as one value, port: \"<private-ip>:5432:5432\"")
	}
	portText, resolved := cfg.Str(pv)
	port, perr := kamal.ParsePort(portText)
	if !resolved || (perr != nil && pv.HasERB()) {
		if o.PrimaryIP == "" {
			return n, refuse(pv.Pos(), fmt.Sprintf("the port (%s) comes from ERB that gives no value here", pv.Source()),
				"%s, or pass --primary-ip with the primary's private IP", pv.ERBHint())
		}
		port, perr = kamal.ParsePort(o.PrimaryIP + ":5432:5432")
		if g := portTailRE.FindStringSubmatch(pv.Source()); g != nil {
			port, perr = kamal.ParsePort(o.PrimaryIP + ":" + g[1] + ":" + g[2])
		}
	}
	if perr != nil {
		return n, refuse(pv.Pos(), fmt.Sprintf("cannot read the port %q: %v", portText, perr), "write it as \"<private-ip>:5432:5432\"")
	}
	if o.PrimaryIP != "" && resolved && port.BindIP != "" && port.BindIP != o.PrimaryIP {
		return n, refuse(pv.Pos(), fmt.Sprintf("--primary-ip %s disagrees with the port's address %s", o.PrimaryIP, port.BindIP), "drop --primary-ip or fix the port")
	}
	ip := net.ParseIP(port.BindIP)
	switch {
	case port.BindIP == "" || ip.IsUnspecified():
		return n, refuse(pv.Pos(), fmt.Sprintf("port %q publishes PostgreSQL on every interface of %s, public ones included (Docker's rules bypass ufw)", portText, p.PrimaryHost),
			"bind it to the server's private IP: port: \"<private-ip>:%d:%d\", then kamal accessory reboot %s and point DATABASE_URL at that IP; understudy then lets only the standby's IP replicate", port.HostPort, port.ContainerPort, a.Name)
	case ip.IsLoopback():
		return n, refuse(pv.Pos(), fmt.Sprintf("port %q binds PostgreSQL to loopback on %s, so a standby on another server can't reach it", portText, p.PrimaryHost),
			"bind it to the server's private IP (the address on the network both servers share): port: \"<private-ip>:%d:%d\", run kamal accessory reboot %s, update DATABASE_URL to that IP, then run understudy again", port.HostPort, port.ContainerPort, a.Name)
	}
	n.Addr, n.Port = port.BindIP, port.HostPort

	// The data directory must be on a mount, and on postgres:18 the mount
	// must cover the new PGDATA (the postgres image's docs: PGDATA for 18).
	dd := dataDir(cfg, a, img.Major)
	mounts := a.Mounts()
	covering := coveringMount(mounts, dd)
	var old *kamal.Mount // a mount of exactly the old PGDATA
	for i, m := range mounts {
		if m.Kind != "files" && strings.TrimRight(m.Remote, "/") == "/var/lib/postgresql/data" {
			old = &mounts[i]
		}
	}
	if covering == nil && img.Major >= 18 && old != nil {
		return n, refuse(old.Val.Pos(), fmt.Sprintf("postgres:%d keeps its data in %s and its volume is /var/lib/postgresql, but this mount is /var/lib/postgresql/data: the image refuses to initialise with it, and nothing would be on your volume", img.Major, dd),
			"change the mount to %s:/var/lib/postgresql (the whole directory), or set PGDATA: /var/lib/postgresql/data in the accessory's env clear if your existing cluster lives there; then run understudy again", old.Local)
	}
	if covering == nil {
		return n, refuse(a.Val.Pos(), fmt.Sprintf("accessory %s keeps its data directory %s inside the container, which is lost when the container is replaced", a.Name, dd),
			"mount a volume there first, e.g. directories: [\"data:%s\"]", dd)
	}

	if cv := a.Field("cmd"); cv != nil && cv.HasERB() {
		return n, refuse(cv.Pos(), fmt.Sprintf("accessory %s's cmd comes from ERB (%s), and understudy must rewrite it", a.Name, cv.Source()),
			"write the cmd as plain text (postgres -c name=value ...), then run understudy again")
	}
	return n, nil
}

func dataDir(cfg *kamal.Config, a *kamal.Accessory, major int) string {
	if v, ok := a.Env().Clear["PGDATA"]; ok {
		if s, ok := cfg.Str(v); ok && s != "" {
			return s
		}
	}
	return DefaultPGDATA(major)
}

func checkReplicaFlags(cfg *kamal.Config, o Options, p *Plan, prim pgconf.Node) (pgconf.Node, error) {
	n := pgconf.Node{Name: o.ReplicaName, Port: prim.Port}
	if o.ReplicaHost == "" || o.ReplicaIP == "" {
		return n, refuse("flags", "--replica-host and --replica-ip are required",
			"pass the standby server as Kamal reaches it (--replica-host, like host: in deploy.yml) and the private IP PostgreSQL should listen on there (--replica-ip, on the network it shares with %s at %s)", p.PrimaryHost, prim.Addr)
	}
	ip := net.ParseIP(o.ReplicaIP)
	if ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
		return n, refuse("--replica-ip", fmt.Sprintf("%q is not a usable private IP", o.ReplicaIP),
			"give the address on the private network the two servers share (e.g. 10.0.1.3); loopback and 0.0.0.0 cannot be reached from the primary's server")
	}
	if !validHost(o.ReplicaHost) {
		return n, refuse("--replica-host", fmt.Sprintf("%q is not a server name or address", o.ReplicaHost),
			"pass the standby server as Kamal reaches it over SSH: a host name (letters, digits, dots, dashes) or an IP address")
	}
	for _, h := range []string{o.ReplicaHost, p.PrimaryHost, o.ReplicaIP, prim.Addr} {
		if leadingZeroIPv4(h) {
			return n, refuse("--replica-host", fmt.Sprintf("%s has a leading zero in a part, which some programs read as octal (so 020 is 16) and others as decimal", h),
				"write the address without leading zeros, here and in deploy.yml")
		}
	}
	if sameHost(o.ReplicaHost, p.PrimaryHost) || sameHost(o.ReplicaIP, prim.Addr) {
		return n, refuse("--replica-host", fmt.Sprintf("the standby would run on the same server as the primary (%s)", p.PrimaryHost),
			"a standby protects you from losing that server only if it runs on another one: pass another server's --replica-host and --replica-ip")
	}
	p.StandbyHost = o.ReplicaHost
	n.Addr = o.ReplicaIP
	return n, nil
}

// validHost accepts a DNS name or an IP address, nothing with blanks,
// control characters or shell syntax (the value is written into deploy.yml
// and used by ssh).
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return true
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
				return false
			}
		}
	}
	return true
}

// leadingZeroIPv4 spots dotted quads like 192.0.2.020.
func leadingZeroIPv4(h string) bool {
	parts := strings.Split(h, ".")
	if len(parts) != 4 {
		return false
	}
	zero := false
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
		if len(p) > 1 && p[0] == '0' {
			zero = true
		}
	}
	return zero
}

// sameHost compares two hosts as addresses when both are, else as names
// (case-insensitively).
func sameHost(a, b string) bool {
	x, err1 := netip.ParseAddr(strings.Trim(a, "[]"))
	y, err2 := netip.ParseAddr(strings.Trim(b, "[]"))
	if err1 == nil && err2 == nil {
		return x.Unmap() == y.Unmap()
	}
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

// sameMajor refuses a standby accessory whose image is of another
// PostgreSQL major than the primary's: it could neither clone nor follow
// (a standby replays its primary's WAL; PostgreSQL docs, warm-standby.html).
func sameMajor(standby, prim *kamal.Accessory, primImg Image) error {
	ref, ok := standby.Str("image")
	if !ok || ref == "" {
		return nil // the app's image, as the primary's may be
	}
	img := ParseImage(ref)
	if img.Major == 0 || img.Major == primImg.Major {
		return nil
	}
	return refuse(fieldPos(standby, "image"), fmt.Sprintf("accessory %s's image %s is PostgreSQL %d, but the primary %s's image %s is PostgreSQL %d: a standby replays its primary's WAL and must run the same major", standby.Name, ref, img.Major, prim.Name, primImg.Ref, primImg.Major),
		"give %s the image %s (as %s), then run init again; to move to PostgreSQL %d, upgrade the primary's cluster first (pg_upgrade, or pg_dump and restore), then change both images", standby.Name, primImg.Ref, prim.Name, img.Major)
}

// standbyPort is the primary's port with the standby's IP.
func standbyPort(cfg *kamal.Config, prim *kamal.Accessory, ip string) string {
	s, _ := cfg.Str(prim.Field("port"))
	port, err := kamal.ParsePort(s)
	if err != nil {
		if g := portTailRE.FindStringSubmatch(prim.Field("port").Source()); g != nil {
			return ip + ":" + g[1] + ":" + g[2]
		}
		return ip + ":5432:5432"
	}
	port.BindIP = ip
	return port.String()
}

func hostKey(a *kamal.Accessory) string {
	for _, k := range []string{"hosts", "role", "roles", "tag", "tags"} {
		if a.Field(k) != nil {
			return k
		}
	}
	return "host"
}

// standbyBody derives the standby accessory from the (already edited) primary.
func standbyBody(prim *kamal.Accessory, o Options, port string) kamal.Map {
	src := kamal.AccessoryBody(prim)
	var body kamal.Map
	// image, host, port first, as people write them; then the rest in order.
	if img := src.Get("image"); img != nil {
		body = append(body, kamal.KV{Key: "image", Val: img})
	}
	body = append(body, kamal.KV{Key: "host", Val: kamal.Quote(o.ReplicaHost)}, kamal.KV{Key: "port", Val: kamal.Quote(port)})
	for _, kv := range src {
		switch kv.Key {
		case "image", "port", "host", "hosts", "role", "roles", "tag", "tags":
		case "service", "proxy": // the container name must differ; no proxy for a DB
		default:
			body = append(body, kv)
		}
	}
	return body
}

// cmdPrefix is how the managed cmd starts.
var cmdPrefix = BootPath + " postgres -c config_file=" + ConfPath

// newCmd builds the accessory cmd: the boot script, then postgres with the
// settings file, then the user's own flags minus those the file now sets.
func newCmd(cfg *kamal.Config, a *kamal.Accessory, c pgconf.Cluster) (string, []string, error) {
	cur := "postgres"
	if v := a.Field("cmd"); v != nil {
		s, _ := cfg.Str(v)
		cur = strings.TrimSpace(s)
	}
	words := shellWords(cur)
	if len(words) > 0 && words[0] == BootPath {
		words = words[1:]
	}
	if len(words) == 0 || path.Base(words[0]) != "postgres" {
		return "", nil, refuse(fieldPos(a, "cmd"), fmt.Sprintf("accessory %s's cmd %q does not start postgres, so understudy cannot put its boot script in front of it", a.Name, cur),
			"make the cmd `postgres -c name=value ...` (put settings in -c flags), or remove it")
	}
	var kept, dropped []string
	for i := 1; i < len(words); i++ {
		w := words[i]
		var setting, text string
		switch {
		case w == "-c" && i+1 < len(words):
			setting, text = words[i+1], w+" "+words[i+1]
			i++
		case strings.HasPrefix(w, "-c") && len(w) > 2:
			setting, text = w[2:], w
		case strings.HasPrefix(w, "--") && strings.Contains(w, "="):
			setting, text = w[2:], w
		default:
			kept = append(kept, w)
			continue
		}
		name, value, _ := strings.Cut(strings.Trim(setting, `"'`), "=")
		name = strings.ReplaceAll(strings.ToLower(name), "-", "_")
		value = strings.Trim(value, `"'`)
		if name == "config_file" && strings.Contains(setting, ConfPath) {
			continue // ours
		}
		if name == "config_file" {
			return "", nil, refuse(fieldPos(a, "cmd"), fmt.Sprintf("accessory %s's cmd reads its settings from its own file (%s); understudy must start postgres with config_file=%s, so yours would silently stop being read", a.Name, text, ConfPath),
				"move the settings you need from that file into -c flags in cmd (understudy keeps them), then run init again")
		}
		if pgconf.ManagedSetting(c, name) {
			if pgconf.StrongerThanManaged(c, name, value) {
				kept = append(kept, text) // the user's needs more than replication does: keep it
				continue
			}
			dropped = append(dropped, text)
			continue
		}
		kept = append(kept, text)
	}
	out := cmdPrefix
	if len(kept) > 0 {
		out += " " + strings.Join(kept, " ")
	}
	return out, dropped, nil
}

// shellWords splits a command line on blanks, keeping quoted parts whole
// (quotes are kept in the words: the cmd is handed to a shell again).
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	var q rune
	for _, r := range s {
		switch {
		case q != 0:
			cur.WriteRune(r)
			if r == q {
				q = 0
			}
		case r == '"' || r == '\'':
			q = r
			cur.WriteRune(r)
		case r == ' ' || r == '\t' || r == '\n':
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// ensureNode brings one accessory in line: node name, password secret, the
// managed files, the cmd and a stop timeout long enough for a clean shutdown.
func ensureNode(ed *kamal.Editor, acc, node, cmd string, p *Plan) error {
	if err := ed.EnsureComplexEnv(acc); err != nil {
		return err
	}
	if err := ed.EnsureScalar(acc, []string{"env", "clear", NodeEnv}, kamal.Quote(node)); err != nil {
		return err
	}
	if err := ed.EnsureListItem(acc, []string{"env", "secret"}, kamal.Quote(PasswordSecret), func(v *kamal.Val) bool {
		s, _ := ed.Config().Str(v)
		name, _, _ := strings.Cut(s, ":")
		return name == PasswordSecret
	}); err != nil {
		return err
	}
	mounts := []struct{ local, remote string }{
		{path.Join(p.GenDir, "boot.sh"), BootPath},
		{path.Join(p.GenDir, "postgresql.conf"), ConfPath},
		{path.Join(p.GenDir, "pg_hba.conf"), HBAPath},
		{path.Join(p.GenDir, "replication-role.initdb.sh"), RoleScriptPath},
	}
	for _, m := range mounts {
		item := kamal.Quote(m.local + ":" + m.remote)
		if err := ed.EnsureListItem(acc, []string{"files"}, item, func(v *kamal.Val) bool {
			if v.IsMap() {
				r, _ := ed.Config().Str(v.Get("remote"))
				return r == m.remote
			}
			s, _ := ed.Config().Str(v)
			parts := strings.SplitN(s, ":", 3)
			return len(parts) > 1 && parts[1] == m.remote
		}); err != nil {
			return err
		}
	}
	if err := ed.EnsureScalar(acc, []string{"cmd"}, kamal.Quote(cmd)); err != nil {
		return err
	}
	a := ed.Config().Accessory(acc)
	if v := a.Field("options", "stop-timeout"); v == nil {
		if err := ed.EnsureScalar(acc, []string{"options", "stop-timeout"}, kamal.Raw(StopTimeout)); err != nil {
			return err
		}
	}
	return nil
}

// coveringMount is the last volume or directory mount (not a file) whose
// container path holds path, as the container sees it; nil when none does.
func coveringMount(mounts []kamal.Mount, path string) *kamal.Mount {
	var covering *kamal.Mount
	for i, m := range mounts {
		if m.Kind == "files" || m.Remote == "" {
			continue
		}
		r := strings.TrimRight(m.Remote, "/")
		if path == r || strings.HasPrefix(path, r+"/") {
			covering = &mounts[i]
		}
	}
	return covering
}

// existingStandby is the standby an earlier init wrote: its accessory's
// one host in deploy.yml and its private IP in cluster.json; "" when
// either is missing or the two disagree with a single standby.
func existingStandby(src kamal.Source, cfg *kamal.Config, gen, name string) (host, ip string) {
	a := cfg.Accessory(name)
	if a == nil {
		return "", ""
	}
	hosts, _, err := a.Hosts()
	if err != nil || len(hosts) != 1 {
		return "", ""
	}
	text, err := src.ReadFile(path.Join(gen, ClusterFile))
	if err != nil {
		return "", ""
	}
	c, err := pgconf.UnmarshalCluster([]byte(text))
	if err != nil {
		return "", ""
	}
	n, ok := c.Node(name)
	if !ok || n.Addr == "" {
		return "", ""
	}
	return hosts[0], n.Addr
}
