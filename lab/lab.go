// Package lab runs a replicated cluster as local PostgreSQL processes, from
// the same generated files (boot script, settings, pg_hba) the Kamal
// accessories use. A small entrypoint script stands in for the postgres
// image's: initdb when PGDATA is empty, then exec postgres.
package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// EntrypointStandIn plays the postgres image's docker-entrypoint.sh.
const EntrypointStandIn = `#!/bin/sh
# Stands in for the postgres image's entrypoint in the lab.
set -eu
[ "${1:-}" = postgres ] && shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C ${POSTGRES_INITDB_ARGS:-} >/dev/null
fi
exec postgres -D "$PGDATA" "$@"
`

// Lab is a set of local nodes under one directory.
type Lab struct {
	Dir      string
	Bin      string
	Cluster  pgconf.Cluster
	password string
	cred     *syscall.Credential
	uid, gid int
	procs    map[string]*exec.Cmd
	done     map[string]chan struct{}
}

// BinDir finds PostgreSQL's server binaries.
func BinDir() (string, error) {
	if d := os.Getenv("UNDERSTUDY_PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
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
	return "", errors.New("no PostgreSQL server found in /usr/lib/postgresql/*/bin: install it (sudo apt-get install postgresql-15) or set UNDERSTUDY_PG_BINDIR")
}

// New prepares a lab of nodes (the first is the initial primary) on
// 127.0.0.1 with the given ports. Nothing runs yet.
func New(dir string, names []string, ports []int, password string) (*Lab, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	major, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	l := &Lab{Dir: dir, Bin: bin, password: password, uid: os.Getuid(), gid: os.Getgid(),
		procs: map[string]*exec.Cmd{}, done: map[string]chan struct{}{}}
	if os.Geteuid() == 0 { // postgres refuses to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, errors.New("running as root, and there is no postgres user to run PostgreSQL as: install postgresql-15, or run as an ordinary user")
		}
		l.uid, _ = strconv.Atoi(u.Uid)
		l.gid, _ = strconv.Atoi(u.Gid)
		l.cred = &syscall.Credential{Uid: uint32(l.uid), Gid: uint32(l.gid)}
	}
	var nodes []pgconf.Node
	for i, n := range names {
		nodes = append(nodes, pgconf.Node{Name: n, Addr: "127.0.0.1", Port: ports[i]})
	}
	l.Cluster = pgconf.Cluster{Nodes: nodes, InitialPrimary: names[0], Major: major, ReplUser: "replicator",
		WALCap: "1GB", HBAFile: filepath.Join(dir, "conf", "pg_hba.conf")}
	if err := l.Cluster.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{"", "conf", "run", "sock"} {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("creating the lab directory: %w", err)
		}
		os.Chown(p, l.uid, l.gid)
	}
	os.Chmod(filepath.Join(dir, "run"), 0o700)
	files := map[string]string{"pg_hba.conf": pgconf.HBA(l.Cluster), "boot.sh": pgconf.Boot(l.Cluster), "entrypoint.sh": EntrypointStandIn}
	for _, n := range nodes {
		c := l.Cluster
		c.DataDir = l.DataDir(n.Name)
		files[n.Name+".conf"] = pgconf.Conf(c)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, "conf", name), []byte(content), 0o755); err != nil {
			return nil, fmt.Errorf("writing the lab's %s: %w", name, err)
		}
	}
	return l, nil
}

// DataDir is a node's PGDATA.
func (l *Lab) DataDir(node string) string { return filepath.Join(l.Dir, "data", node) }

func (l *Lab) sockDir() string { return filepath.Join(l.Dir, "sock") }

// Boot starts a node the way its accessory starts: the boot script, then
// the entrypoint stand-in, then postgres.
func (l *Lab) Boot(node string) error {
	n, ok := l.Cluster.Node(node)
	if !ok {
		return fmt.Errorf("no lab node %q", node)
	}
	os.MkdirAll(filepath.Join(l.Dir, "data"), 0o755)
	os.Chown(filepath.Join(l.Dir, "data"), l.uid, l.gid)
	conf := filepath.Join(l.Dir, "conf")
	cmd := exec.Command("/bin/sh", filepath.Join(conf, "boot.sh"), "postgres",
		"-c", "config_file="+filepath.Join(conf, node+".conf"), "-c", fmt.Sprintf("port=%d", n.Port),
		"-c", "listen_addresses="+n.Addr, "-c", "unix_socket_directories="+l.sockDir())
	cmd.Dir = l.Dir
	cmd.Env = append(os.Environ(), "PATH="+l.Bin+":"+os.Getenv("PATH"), "PGDATA="+l.DataDir(node),
		"UNDERSTUDY_NODE="+node, "REPLICATION_PASSWORD="+l.password,
		"UNDERSTUDY_ENTRYPOINT="+filepath.Join(conf, "entrypoint.sh"), "UNDERSTUDY_RUN_DIR="+filepath.Join(l.Dir, "run"),
		"UNDERSTUDY_RETRY_SECONDS=1", fmt.Sprintf("PG_MAJOR=%d", l.Cluster.Major))
	logf, err := os.OpenFile(filepath.Join(l.Dir, node+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: l.cred}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting node %s: %w", node, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	l.procs[node], l.done[node] = cmd, done
	return nil
}

// Conn connects to a node as the superuser over its local socket.
func (l *Lab) Conn(ctx context.Context, node string) (*pgx.Conn, error) {
	n, ok := l.Cluster.Node(node)
	if !ok {
		return nil, fmt.Errorf("no lab node %q", node)
	}
	return pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres connect_timeout=5", l.sockDir(), n.Port))
}

// WaitReady waits until a node accepts connections; ready reports its recovery state.
func (l *Lab) WaitReady(ctx context.Context, node string, timeout time.Duration) (inRecovery bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := l.Conn(ctx, node)
		if err == nil {
			err = c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
			c.Close(ctx)
			if err == nil {
				return inRecovery, nil
			}
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("node %s did not accept connections within %s (see %s): %w", node, timeout, filepath.Join(l.Dir, node+".log"), err)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-l.done[node]:
			return false, fmt.Errorf("node %s exited during start-up; its log: %s", node, filepath.Join(l.Dir, node+".log"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Up boots the initial primary, creates the replication role from a
// SCRAM verifier computed here, then boots the standbys and waits until
// each streams over its slot.
func (l *Lab) Up(ctx context.Context, timeout time.Duration) error {
	prim := l.Cluster.InitialPrimary
	if err := l.Boot(prim); err != nil {
		return err
	}
	if _, err := l.WaitReady(ctx, prim, timeout); err != nil {
		return err
	}
	c, err := l.Conn(ctx, prim)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if err := pgops.EnsureReplicationRole(ctx, c, l.Cluster.ReplUser, l.password); err != nil {
		return err
	}
	for _, n := range l.Cluster.Nodes {
		if n.Name == prim {
			continue
		}
		if err := l.Boot(n.Name); err != nil {
			return err
		}
	}
	for _, n := range l.Cluster.Nodes {
		if n.Name == prim {
			continue
		}
		if err := pgops.WaitStreaming(ctx, c, n.Name, n.Slot(), timeout); err != nil {
			return fmt.Errorf("%w (node log: %s)", err, filepath.Join(l.Dir, n.Name+".log"))
		}
	}
	return nil
}

// Down stops every node this lab started (pg_ctl, then the process group of
// a boot script still waiting) and removes the lab directory.
func (l *Lab) Down() error {
	for node, cmd := range l.procs {
		dd := l.DataDir(node)
		if _, err := os.Stat(filepath.Join(dd, "postmaster.pid")); err == nil {
			stop := exec.Command(filepath.Join(l.Bin, "pg_ctl"), "-D", dd, "-m", "fast", "-w", "-t", "60", "stop")
			stop.SysProcAttr = &syscall.SysProcAttr{Credential: l.cred}
			stop.Run()
		}
		select {
		case <-l.done[node]:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group we created
			<-l.done[node]
		}
	}
	if !strings.HasPrefix(filepath.Base(l.Dir), "understudy-lab") {
		return nil // only remove directories the lab named itself
	}
	return os.RemoveAll(l.Dir)
}
