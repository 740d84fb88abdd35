// Package lab runs a replicated cluster as local PostgreSQL processes, from
// the same generated files (boot script, settings, pg_hba) the Kamal
// accessories use. A small entrypoint script stands in for the postgres
// image's: initdb when PGDATA is empty, then exec postgres.
//
// A lab lives in one directory (lab.json says what it is), so `lab up`,
// `apply --lab`, `status --lab` and `lab down` can be separate runs. With
// NetNS each node gets its own network namespace and address, so pg_hba by
// source address and network partitions are real.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/understudy-dev/understudy/backup"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// The capabilities the lab's Control has beyond live.Control.
var (
	_ live.Control       = (*Lab)(nil)
	_ live.ControlReader = (*Lab)(nil)
	_ live.Outsider      = (*Lab)(nil)
)

// EntrypointStandIn plays the postgres image's docker-entrypoint.sh.
const EntrypointStandIn = `#!/bin/sh
# Stands in for the postgres image's entrypoint in the lab.
set -eu
[ "${1:-}" = postgres ] && shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	pwopt=
	if [ -n "${POSTGRES_PASSWORD:-}" ]; then # as the image does: the superuser gets it
		pwfile="$(dirname "$PGDATA")/.initdb-pw.$$"
		( umask 077; printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile" )
		pwopt="--pwfile=$pwfile"
	fi
	initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C $pwopt ${POSTGRES_INITDB_ARGS:-} >/dev/null
	[ -z "$pwopt" ] || rm -f "$pwfile"
fi
unset POSTGRES_PASSWORD
exec postgres -D "$PGDATA" "$@"
`

// Config says what lab to create.
type Config struct {
	Names []string // node names; the first is the initial primary
	Ports []int    // one per node
	NetNS bool     // one network namespace per node (root, Linux)
	// ContainerPaths gives each node (in a netns lab) a mount namespace in
	// which its files are at /understudy, as in the accessory's container,
	// so the lab's settings name the same paths as a Kamal deployment's.
	ContainerPaths bool
	Password       string // the replication password
	WALCap         string // max_slot_wal_keep_size; default 1GB
	// Agents gives the nodes agents (a monitoring login with this
	// password, a port each); Router also a router (loopback labs only).
	Agents          bool
	MonitorPassword string
	Router          bool
}

// state is lab.json: enough to reopen the lab from another process.
// The cluster model is embedded as cluster.json has it (the same keys the
// lab wrote before it embedded it, so older labs reopen).
type state struct {
	pgconf.Cluster
	NetNS          string     `json:"netns_id,omitempty"`
	ContainerPaths bool       `json:"container_paths,omitempty"`
	MadeMountPoint bool       `json:"made_mount_point,omitempty"`
	Backup         *LabBackup `json:"backup,omitempty"`
	Router         *LabRouter `json:"router,omitempty"`
}

// Lab is a set of local nodes under one directory.
type Lab struct {
	Dir      string
	Bin      string
	Cluster  pgconf.Cluster
	BinMajor int    // the major of the programs in Bin (0: not known)
	NetNS    *NetNS // nil on loopback
	state    state
	password string
	cred     *syscall.Credential
	uid, gid int

	mu   sync.Mutex
	done map[string]chan struct{} // processes this process started, reaped by a goroutine
}

// BinDir finds PostgreSQL's server binaries: $UNDERSTUDY_PG_BINDIR, else
// the newest major in /usr/lib/postgresql/*/bin (Debian's layout).
func BinDir() (string, error) {
	if d := os.Getenv("UNDERSTUDY_PG_BINDIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", fmt.Errorf("UNDERSTUDY_PG_BINDIR=%s holds no postgres program: point it at the directory with postgres, initdb and pg_ctl (Debian: /usr/lib/postgresql/<major>/bin)", d)
		}
		return d, nil
	}
	return binDirIn("/usr/lib/postgresql")
}

// binDirIn is the newest <root>/<major>/bin that holds postgres.
func binDirIn(root string) (string, error) {
	dirs, _ := filepath.Glob(filepath.Join(root, "*", "bin"))
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a > b
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server found in %s/*/bin: install your distribution's (sudo apt-get install postgresql), or set UNDERSTUDY_PG_BINDIR to a directory holding postgres, initdb and pg_ctl", root)
}

// BinMajor asks the postgres program in dir for its version: the
// directory's name need not say it (/opt/pg18/bin).
func BinMajor(ctx context.Context, dir string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	prog := filepath.Join(dir, "postgres")
	out, err := exec.CommandContext(ctx, prog, "--version").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("asking %s its version: %v %s", prog, err, strings.TrimSpace(string(out)))
	}
	m, err := pgops.ParseProgramVersion(string(out))
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", prog, err)
	}
	return m, nil
}

const stateFile = "lab.json"
const secretFile = "run/replication-password"

// Create makes a lab in dir (which must be empty or missing): the rendered
// files, and the network namespaces when asked. No server runs yet: `apply`
// starts them.
func Create(ctx context.Context, dir string, cfg Config) (*Lab, error) {
	if len(cfg.Names) < 2 || len(cfg.Ports) != len(cfg.Names) {
		return nil, errors.New("a lab needs at least two nodes, each with a port")
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s is not empty: pick a new directory for the lab, or run `understudy lab down --dir %s` first", dir, dir)
	}
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	major, err := BinMajor(ctx, bin)
	if err != nil {
		return nil, err
	}
	st := state{Cluster: pgconf.Cluster{InitialPrimary: cfg.Names[0], Major: major, ReplUser: pgconf.DefaultReplUser, WALCap: cfg.WALCap}, ContainerPaths: cfg.ContainerPaths}
	if cfg.ContainerPaths {
		if !cfg.NetNS {
			return nil, errors.New("container paths need a --netns lab (root)")
		}
		if _, err := os.Stat(MountPoint); os.IsNotExist(err) {
			if err := os.Mkdir(MountPoint, 0o755); err != nil {
				return nil, fmt.Errorf("making the mount point %s: %w", MountPoint, err)
			}
			st.MadeMountPoint = true
		}
	}
	if st.WALCap == "" {
		st.WALCap = pgconf.DefaultLabWALCap
	}
	var ns *NetNS
	if cfg.NetNS {
		b := make([]byte, 2)
		rand.Read(b)
		ns = &NetNS{ID: hex.EncodeToString(b), Nodes: len(cfg.Names)}
		st.NetNS = ns.ID
	}
	for i, n := range cfg.Names {
		addr := "127.0.0.1"
		if ns != nil {
			addr = ns.Addr(i)
		}
		st.Nodes = append(st.Nodes, pgconf.Node{Name: n, Addr: addr, Port: cfg.Ports[i]})
	}
	l, err := load(dir, bin, st, cfg.Password)
	if err != nil {
		return nil, err
	}
	if err := l.Cluster.Validate(); err != nil {
		return nil, err
	}
	if cfg.Router && !cfg.Agents {
		return nil, errors.New("a lab's router needs the node agents")
	}
	if cfg.Router {
		if err := l.enableRouter(); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"", "conf", "run", "sock", "data"} {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("creating the lab directory: %w", err)
		}
		os.Chown(p, l.uid, l.gid)
	}
	os.Chmod(filepath.Join(dir, "run"), 0o700)
	if err := atomicfile.Write(filepath.Join(dir, secretFile), []byte(cfg.Password), 0o600); err != nil {
		return nil, fmt.Errorf("storing the lab's replication password: %w", err)
	}
	if cfg.Agents {
		if err := l.enableAgents(cfg.MonitorPassword); err != nil {
			return nil, err
		}
	}
	if err := l.writeFiles(); err != nil {
		return nil, err
	}
	if err := l.saveState(); err != nil {
		return nil, err
	}
	if ns != nil {
		if err := ns.Up(ctx); err != nil {
			ns.Down(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return l, nil
}

func (l *Lab) saveState() error {
	js, _ := json.MarshalIndent(l.state, "", "  ")
	if err := atomicfile.Write(filepath.Join(l.Dir, stateFile), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", stateFile, err)
	}
	return nil
}

// Open reopens a lab that Create made.
func Open(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("%s is not a lab (no %s): create one with `understudy lab up --dir %s`", dir, stateFile, dir)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, stateFile), err)
	}
	pw, err := os.ReadFile(filepath.Join(dir, secretFile))
	if err != nil {
		return nil, fmt.Errorf("reading the lab's replication password: %w", err)
	}
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	return load(dir, bin, st, string(pw))
}

func load(dir, bin string, st state, password string) (*Lab, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	l := &Lab{Dir: abs, Bin: bin, password: password, uid: os.Getuid(), gid: os.Getgid(), done: map[string]chan struct{}{}}
	l.BinMajor, _ = BinMajor(context.Background(), bin) // unknown (0) is left to the servers' own errors
	cred, err := backup.PostgresCred()
	if err != nil {
		return nil, err
	}
	if cred != nil {
		l.cred, l.uid, l.gid = cred, int(cred.Uid), int(cred.Gid)
	}
	if st.NetNS != "" {
		l.NetNS = &NetNS{ID: st.NetNS, Nodes: len(st.Nodes)}
	}
	l.state = st
	l.Cluster = st.Cluster
	// Paths follow the lab's directory, wherever it is reopened from.
	l.Cluster.HBAFile, l.Cluster.ConfFile, l.Cluster.DataDir, l.Cluster.ContainerDefaults = filepath.Join(abs, "conf", "pg_hba.conf"), "", "", false
	if st.ContainerPaths {
		l.Cluster.HBAFile, l.Cluster.ConfFile = MountPoint+"/pg_hba.conf", MountPoint+"/postgresql.conf"
	}
	return l, nil
}

// MountPoint is where a container-paths lab mounts each node's files, the
// path the accessory's container has them at.
const MountPoint = pgconf.MountPoint

// writeFiles renders the cluster's files: what `init` writes for Kamal,
// with the lab's paths (conf/), or per node under nodes/<name>/ for a
// container-paths lab.
func (l *Lab) writeFiles() error {
	shared := map[string]string{"pg_hba.conf": pgconf.HBA(l.Cluster), "boot.sh": pgconf.Boot(l.Cluster), "entrypoint.sh": EntrypointStandIn}
	files := map[string]string{}
	for _, n := range l.Cluster.Nodes {
		c := l.Cluster
		c.DataDir = l.DataDir(n.Name)
		// The lab passes its address with -c; the file says the same, or a
		// reload would flag listen_addresses as waiting for a restart.
		conf := pgconf.Conf(c) + fmt.Sprintf("# lab: this node's own address\nlisten_addresses = '%s'\n", n.Addr)
		if l.state.ContainerPaths {
			for name, content := range shared {
				files[filepath.Join("nodes", n.Name, name)] = content
			}
			files[filepath.Join("nodes", n.Name, "postgresql.conf")] = conf
		} else {
			files[filepath.Join("conf", n.Name+".conf")] = conf
		}
	}
	for name, content := range shared {
		files[filepath.Join("conf", name)] = content
	}
	for name, content := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(l.Dir, name)), 0o755)
		if err := atomicfile.Write(filepath.Join(l.Dir, name), []byte(content), 0o755); err != nil {
			return fmt.Errorf("writing the lab's %s: %w", name, err)
		}
	}
	return nil
}

// Password is the lab's replication password.
func (l *Lab) Password() string { return l.password }

// Target is the lab as apply, status, check and verify use it.
func (l *Lab) Target() live.Target {
	t := live.Target{Cluster: l.Cluster, Control: l, Password: l.password, MonitorPassword: l.monitorPassword(), Images: map[string]live.NodeImage{}}
	for _, n := range l.Cluster.Nodes {
		t.Images[n.Name] = live.NodeImage{Ref: l.Bin, Major: l.BinMajor, Programs: true}
	}
	if l.HasAgents() {
		t.Routing = l
	}
	if l.HasFailover() {
		t.Lease = l.Lease()
	}
	if l.state.Backup != nil {
		t.Backups = l.BackupSite()
		if s, err := l.BackupStore(); err == nil {
			k, kerr := l.BackupKey()
			t.Backup = &live.BackupAccess{Store: s, Where: s.Where(), Key: k, KeyErr: kerr}
		}
	}
	return t
}

// DataDir is a node's PGDATA.
func (l *Lab) DataDir(node string) string { return filepath.Join(l.Dir, "data", node) }

// LogFile is a node's log (boot script and server).
func (l *Lab) LogFile(node string) string { return filepath.Join(l.Dir, node+".log") }

func (l *Lab) sockDir(node string) string { return filepath.Join(l.Dir, "sock", node) }

func (l *Lab) bootPIDFile(node string) string { return filepath.Join(l.Dir, "run", node+".boot.pid") }

func (l *Lab) index(node string) (int, pgconf.Node, error) {
	for i, n := range l.Cluster.Nodes {
		if n.Name == node {
			return i, n, nil
		}
	}
	return 0, pgconf.Node{}, fmt.Errorf("the lab in %s has no node %q", l.Dir, node)
}

// Where names a node for messages.
func (l *Lab) Where(node string) string {
	_, n, err := l.index(node)
	if err != nil {
		return node
	}
	return fmt.Sprintf("lab node %s (%s, log %s)", node, net.JoinHostPort(n.Addr, strconv.Itoa(n.Port)), l.LogFile(node))
}

// BootArgv is how a node is started: the boot script with the accessory's
// command, as Kamal's docker run passes it, plus the lab's address, port and
// socket. In a network namespace nsenter enters it and drops to the
// postgres user; with container paths the node's files are first mounted
// at /understudy in a mount namespace of its own. Pure, so the tests check it.
func BootArgv(dir string, n pgconf.Node, netnsPath string, uid, gid int, containerPaths bool) []string {
	conf := filepath.Join(dir, "conf")
	boot, confFile := filepath.Join(conf, "boot.sh"), filepath.Join(conf, n.Name+".conf")
	if containerPaths {
		boot, confFile = MountPoint+"/boot.sh", MountPoint+"/postgresql.conf"
	}
	argv := []string{"/bin/sh", boot, "postgres",
		"-c", "config_file=" + confFile, "-c", fmt.Sprintf("port=%d", n.Port),
		"-c", "listen_addresses=" + n.Addr, "-c", "unix_socket_directories=" + filepath.Join(dir, "sock", n.Name)}
	switch {
	case containerPaths:
		script := fmt.Sprintf("mount --bind %s %s && exec setpriv --reuid=%d --regid=%d --init-groups %s",
			filepath.Join(dir, "nodes", n.Name), MountPoint, uid, gid, strings.Join(argv, " "))
		argv = []string{"unshare", "--mount", "--propagation", "private", "--", "nsenter", "--net=" + netnsPath, "--", "/bin/sh", "-c", script}
	case netnsPath != "":
		argv = inNetNS(netnsPath, uid, gid, argv)
	}
	return argv
}

// inNetNS runs argv inside a network namespace as uid:gid (nsenter).
func inNetNS(nsPath string, uid, gid int, argv []string) []string {
	return append([]string{"nsenter", "--net=" + nsPath, "--setuid", strconv.Itoa(uid), "--setgid", strconv.Itoa(gid), "--"}, argv...)
}

// Start runs a node the way its accessory starts: the boot script, then the
// entrypoint stand-in, then postgres. It returns once the process runs.
func (l *Lab) Start(ctx context.Context, node string) error {
	return l.start(ctx, node, false)
}

// StartPlain runs a node the way a PostgreSQL accessory runs before
// understudy: the image's entrypoint and postgres with its own settings,
// and the image's default rules (password logins from anywhere). The tests
// use it for a deployment that apply has to reboot into the plan.
func (l *Lab) StartPlain(ctx context.Context, node string) error {
	return l.start(ctx, node, true)
}

// plainHBA is what the postgres image leaves in pg_hba.conf.
const plainHBA = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all all scram-sha-256\n"

func (l *Lab) start(ctx context.Context, node string, plain bool) error {
	if err := l.reachable(); err != nil {
		return err
	}
	i, n, err := l.index(node)
	if err != nil {
		return err
	}
	if run, _ := l.Running(ctx, node); run {
		return nil
	}
	for _, d := range []string{filepath.Join(l.Dir, "data"), l.sockDir(node)} {
		os.MkdirAll(d, 0o755)
		os.Chown(d, l.uid, l.gid)
	}
	nsPath := ""
	if l.NetNS != nil {
		nsPath = l.NetNS.Path(i)
	}
	argv := BootArgv(l.Dir, n, nsPath, l.uid, l.gid, l.state.ContainerPaths)
	if plain {
		hba := filepath.Join(l.Dir, "conf", "plain_hba.conf")
		if err := atomicfile.Write(hba, []byte(plainHBA), 0o644); err != nil {
			return err
		}
		argv = []string{"/bin/sh", filepath.Join(l.Dir, "conf", "entrypoint.sh"), "postgres", "-c", fmt.Sprintf("port=%d", n.Port),
			"-c", "listen_addresses=" + n.Addr, "-c", "unix_socket_directories=" + l.sockDir(node), "-c", "hba_file=" + hba}
		if nsPath != "" {
			argv = inNetNS(nsPath, l.uid, l.gid, argv)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	conf := filepath.Join(l.Dir, "conf")
	cmd.Dir = l.Dir
	cmd.Env = append(os.Environ(), "PATH="+l.Bin+":"+os.Getenv("PATH"), "PGDATA="+l.DataDir(node),
		"UNDERSTUDY_NODE="+node, "REPLICATION_PASSWORD="+l.password,
		"UNDERSTUDY_ENTRYPOINT="+filepath.Join(conf, "entrypoint.sh"), "UNDERSTUDY_RUN_DIR="+filepath.Join(l.Dir, "run"),
		"UNDERSTUDY_RETRY_SECONDS=1", fmt.Sprintf("PG_MAJOR=%d", l.Cluster.Major))
	if l.state.ContainerPaths {
		cmd.Env = append(cmd.Env, "UNDERSTUDY_ENTRYPOINT="+MountPoint+"/entrypoint.sh")
	}
	if rate := os.Getenv("UNDERSTUDY_CLONE_MAX_RATE"); rate != "" {
		cmd.Env = append(cmd.Env, "UNDERSTUDY_CLONE_MAX_RATE="+rate)
	}
	logf, err := os.OpenFile(l.LogFile(node), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("opening %s's log: %w", node, err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if nsPath == "" {
		cmd.SysProcAttr.Credential = l.cred
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", l.Where(node), err)
	}
	os.WriteFile(l.bootPIDFile(node), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	l.mu.Lock()
	l.done[node] = done
	l.mu.Unlock()
	return nil
}

// postmasterPID reads the running server's PID from postmaster.pid.
func (l *Lab) postmasterPID(node string) int {
	b, err := os.ReadFile(filepath.Join(l.DataDir(node), "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pid
}

// bootPID is the process the lab started for a node, while it still runs
// as ours: the boot script, or postgres that it became by exec.
func (l *Lab) bootPID(node string) int {
	b, err := os.ReadFile(l.bootPIDFile(node))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || !alive(pid) {
		return 0
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	// An empty cmdline is a process in the middle of an exec (the start
	// chain execs several times): still ours.
	if len(cmdline) > 0 && !strings.Contains(string(cmdline), l.Dir) {
		return 0 // the PID was reused by something that is not ours
	}
	return pid
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; its parent has not reaped it yet.
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

// Running reports whether the node's server or boot script runs.
func (l *Lab) Running(ctx context.Context, node string) (bool, error) {
	if _, _, err := l.index(node); err != nil {
		return false, err
	}
	if pid := l.postmasterPID(node); pid > 0 && alive(pid) {
		return true, nil
	}
	l.mu.Lock()
	done := l.done[node]
	l.mu.Unlock()
	if done != nil { // started by this process: its exit is known exactly, even before exec
		select {
		case <-done:
			return false, nil
		default:
			return true, nil
		}
	}
	return l.bootPID(node) > 0, nil
}

// Stop shuts a node down cleanly (pg_ctl stop -m fast), or ends its boot
// script if the server has not started yet.
func (l *Lab) Stop(ctx context.Context, node string) error {
	if _, _, err := l.index(node); err != nil {
		return err
	}
	if pid := l.postmasterPID(node); pid > 0 && alive(pid) {
		// pg_ctl sends the fast-shutdown signal; the wait is ours, at a finer
		// grain than pg_ctl's 100 ms, since it is part of a switchover's pause.
		stop := exec.CommandContext(ctx, filepath.Join(l.Bin, "pg_ctl"), "-D", l.DataDir(node), "-m", "fast", "-W", "stop")
		stop.SysProcAttr = &syscall.SysProcAttr{Credential: l.cred}
		if out, err := stop.CombinedOutput(); err != nil && alive(pid) {
			return fmt.Errorf("stopping %s with pg_ctl: %v: %s", l.Where(node), err, strings.TrimSpace(string(out)))
		} // else it is gone (it may have died on its own meanwhile)
		deadline := time.Now().Add(120 * time.Second)
		for alive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s did not shut down within 120 s", l.Where(node))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	if pid := l.bootPID(node); pid > 0 {
		syscall.Kill(-pid, syscall.SIGTERM) // the process group the lab created for it
		deadline := time.Now().Add(10 * time.Second)
		for l.bootPID(node) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if l.bootPID(node) > 0 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	l.waitDone(node)
	return nil
}

// waitDone waits (up to 10 s) for a node's process that this process
// started to be reaped.
func (l *Lab) waitDone(node string) {
	l.mu.Lock()
	done := l.done[node]
	l.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}
}

// Kill ends a node's server with SIGKILL, as a crash would (tests and
// fault drills). Only the postmaster the lab's node runs is signalled.
func (l *Lab) Kill(node string) error {
	pid := l.postmasterPID(node)
	if pid <= 0 || !alive(pid) {
		return fmt.Errorf("%s is not running", l.Where(node))
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); alive(pid) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	l.waitDone(node)
	return nil
}

// KillServer ends every process of a node's "server" at once, as a power
// loss would (the demo and tests of failover): its agent (with its etcd
// member and its watchdog) and the postmaster with its backends, by PID and
// only what the lab started. It returns the PIDs it signalled.
func (l *Lab) KillServer(node string) ([]int, error) {
	agentPID, pm := l.AgentPID(node), l.PostmasterPID(node)
	if agentPID == 0 || pm == 0 {
		return nil, fmt.Errorf("%s's agent (pid %d) or PostgreSQL (pid %d) is not running", node, agentPID, pm)
	}
	// The children too: a backend outlives a SIGKILLed postmaster and
	// keeps answering its session for a while.
	pids := append(append([]int{agentPID, pm}, failover.ChildrenOf(agentPID)...), failover.ChildrenOf(pm)...)
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	return pids, nil
}

// Conn connects to a node as the superuser over its local socket.
func (l *Lab) Conn(ctx context.Context, node string) (*pgx.Conn, error) {
	_, n, err := l.index(node)
	if err != nil {
		return nil, err
	}
	return pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres connect_timeout=5", l.sockDir(node), n.Port))
}

// Down stops every node of the lab, removes its network namespaces and
// then its directory, if the lab made that directory's contents.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	svcs := []string{"router"}
	for _, n := range l.Cluster.Nodes {
		svcs = append(svcs, agentService(n.Name))
	}
	// The witness after the agents: with two members gone etcd has no
	// quorum, and an agent still running would fence its primary.
	for _, svc := range append(svcs, witnessService, "agent", "storage") {
		if err := l.stopService(svc); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range l.Cluster.Nodes {
		if err := l.Stop(ctx, n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if l.NetNS != nil {
		if err := l.NetNS.Down(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("the lab in %s is not fully down, so its directory is kept: %w", l.Dir, errors.Join(errs...))
	}
	if l.state.MadeMountPoint {
		os.Remove(MountPoint) // only if empty, as Create made it
	}
	// Only what Create made: never a directory that is not a lab.
	if _, err := os.Stat(filepath.Join(l.Dir, stateFile)); err != nil {
		return nil
	}
	return os.RemoveAll(l.Dir)
}

// Run runs a role script for a node (live.Control): /bin/sh with PGDATA
// set, as the servers' user, inside the node's namespace in a netns lab.
func (l *Lab) Run(ctx context.Context, node, script string) (string, error) {
	i, _, err := l.index(node)
	if err != nil {
		return "", err
	}
	argv := []string{"/bin/sh", "-c", script}
	if l.NetNS != nil {
		argv = inNetNS(l.NetNS.Path(i), l.uid, l.gid, argv)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "PATH="+l.Bin+":"+os.Getenv("PATH"), "PGDATA="+l.DataDir(node),
		"UNDERSTUDY_RUN_DIR="+filepath.Join(l.Dir, "run"), "UNDERSTUDY_NODE="+node)
	cmd.Dir = l.Dir
	if l.NetNS == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: l.cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("on %s: %w: %s", l.Where(node), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// reachable checks, when the servers run as another user (root runs them
// as postgres), that this user can enter every directory above the lab:
// otherwise the first start fails with a bare "permission denied".
func (l *Lab) reachable() error {
	if l.cred == nil {
		return nil
	}
	for d := filepath.Dir(l.Dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return nil // made by Create; nothing to check yet
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		m := st.Mode().Perm()
		if ok && !(m&0o001 != 0 || (int(sys.Uid) == l.uid && m&0o100 != 0) || (int(sys.Gid) == l.gid && m&0o010 != 0)) {
			return fmt.Errorf("the lab directory %s is inside %s (mode %#o), which the postgres user the servers run as (uid %d) cannot enter: pick a directory under one it can reach, such as /tmp, or run `chmod o+x %s`", l.Dir, d, m, l.uid, d)
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// ReadControl reads a node's global/pg_control (live.ControlReader).
func (l *Lab) ReadControl(ctx context.Context, node string) (pgops.ControlData, error) {
	if _, _, err := l.index(node); err != nil {
		return pgops.ControlData{}, err
	}
	b, err := os.ReadFile(filepath.Join(l.DataDir(node), "global", "pg_control"))
	if err != nil {
		return pgops.ControlData{}, err
	}
	return pgops.ParseControlFile(b)
}

// Tool builds a command for a PostgreSQL client program (pgbench, psql)
// aimed at a node over its local socket, run as the servers' user.
func (l *Lab) Tool(ctx context.Context, node, program string, args ...string) (*exec.Cmd, error) {
	_, n, err := l.index(node)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(l.Bin, program), args...)
	cmd.Env = append(os.Environ(), "PGHOST="+l.sockDir(node), fmt.Sprintf("PGPORT=%d", n.Port), "PGUSER=postgres", "PGDATABASE=postgres")
	cmd.Dir = l.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: l.cred}
	return cmd, nil
}

// AppConnString is how an app reaches the lab: every node, and
// target_session_attrs=read-write, as the DATABASE_URL understudy advises.
func (l *Lab) AppConnString() string {
	var hosts, ports []string
	for _, n := range l.Cluster.Nodes {
		hosts = append(hosts, l.sockDir(n.Name))
		ports = append(ports, strconv.Itoa(n.Port))
	}
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2",
		strings.Join(hosts, ","), strings.Join(ports, ","))
}
