package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgconf"
)

// Kamal builds the kamal invocations for one app. Every method is pure: it
// returns argv, and the tests hold it against Kamal's behaviour
// (Kamal: lib/kamal/cli/accessory.rb).
type Kamal struct {
	Bin         string // default "kamal"
	ConfigFile  string // -c, when not config/deploy.yml
	Destination string // -d
}

func (k Kamal) base(words ...string) []string {
	bin := k.Bin
	if bin == "" {
		bin = "kamal"
	}
	argv := append([]string{bin}, words...)
	if k.ConfigFile != "" && k.ConfigFile != "config/deploy.yml" {
		argv = append(argv, "-c", k.ConfigFile)
	}
	if k.Destination != "" {
		argv = append(argv, "-d", k.Destination)
	}
	return argv
}

// Boot runs the accessory's container (uploads its files and env file
// first). Kamal skips it where a container, running or stopped, already
// exists (lib/kamal/cli/accessory.rb, boot).
func (k Kamal) Boot(name string) []string { return k.base("accessory", "boot", name) }

// Reboot pulls, stops and removes the container, then boots it: the way to
// apply changed files, env or cmd.
func (k Kamal) Reboot(name string) []string { return k.base("accessory", "reboot", name) }

// LockStatus shows the deploy lock.
func (k Kamal) LockStatus() []string { return k.base("lock", "status") }

// Runner runs argv in the app directory and returns its output.
type Runner interface {
	Run(ctx context.Context, argv []string) (string, error)
}

// ExecRunner runs commands as local processes in Dir.
type ExecRunner struct{ Dir string }

// Run runs argv and returns stdout and stderr together.
func (r ExecRunner) Run(ctx context.Context, argv []string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = r.Dir
	cmd.WaitDelay = 2 * time.Second // an interrupted kamal must not hold understudy on its pipes
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("`%s` failed: %w: %s", strings.Join(argv[:min(len(argv), 4)], " "), err, strings.TrimSpace(lastLines(string(out), 5)))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Node is one accessory as the Kamal control sees it.
type Node struct {
	Host     string // the server Kamal reaches over SSH
	Addr     string // the private address PostgreSQL listens on there
	Port     int
	Commands *kamal.AccessoryCommands // what Kamal runs for it (container name, env file)
}

// Control is live.Control for Kamal accessories: SQL through an SSH tunnel
// to each node's private address; container steps with docker over the
// same SSH connection (docker.go), and the kamal executable only where it
// adds something: boot and reboot upload the files, env file and cmd.
type Control struct {
	Kamal      Kamal
	Runner     Runner
	Dialer     *Dialer
	Shell      Shell // runs docker on a server; usually the Dialer
	Nodes      map[string]Node
	DBUser     string
	DBUserFrom string // where DBUser came from, for messages
	DBPassword string
	// AppDir is the app's directory (files: entries are relative to it);
	// BootPath is where a node's container mounts its boot script.
	AppDir, BootPath string
	// Builds: the understudy to copy to a server, by its machine
	// (InstallUnderstudy: the backup accessory, restore --into NODE).
	Builds Builds

	mu       sync.Mutex
	known    map[string]ContainerInfo // the last inspect of each node's container
	machines map[string]string        // host → uname -m
}

// Reach logs in to the node's server over SSH (live.Reacher).
func (c *Control) Reach(ctx context.Context, node string) error {
	n, ok := c.Nodes[node]
	if !ok {
		return fmt.Errorf("no accessory %q in the plan", node)
	}
	_, err := c.Dialer.Client(ctx, n.Host)
	return err
}

// Where names a node for messages.
func (c *Control) Where(node string) string {
	n := c.Nodes[node]
	return fmt.Sprintf("accessory %s on %s (PostgreSQL at %s; logs: kamal accessory logs %s)", node, n.Host, net.JoinHostPort(n.Addr, strconv.Itoa(n.Port)), node)
}

// ConnConfig is how Conn reaches a node: the address resolved on the far
// side (no local lookup), dialed through the SSH connection to its host.
func (c *Control) ConnConfig(node string) (*pgx.ConnConfig, error) {
	n, ok := c.Nodes[node]
	if !ok {
		return nil, fmt.Errorf("no accessory %q in the plan", node)
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=postgres sslmode=prefer connect_timeout=10", n.Addr, n.Port))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = c.DBUser, c.DBPassword
	cfg.LookupFunc = func(_ context.Context, h string) ([]string, error) { return []string{h}, nil }
	cfg.DialFunc = c.Dialer.DialFunc(n.Host)
	// pgx's default reaction to a cancelled context is a deadline on the
	// connection; an SSH channel has no deadlines, so ask the server to
	// cancel the query too (through the tunnel: see tunnelConn).
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 2 * time.Second}
	}
	return cfg, nil
}

// Conn opens a connection to a node as the accessory's database user.
func (c *Control) Conn(ctx context.Context, node string) (*pgx.Conn, error) {
	cfg, err := c.ConnConfig(node)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000") { // invalid_password, invalid_authorization_specification
			// PostgreSQL answers a missing role and a wrong password alike.
			from := c.DBUserFrom
			if from == "" {
				from = "POSTGRES_USER"
			}
			return nil, fmt.Errorf("%s refused the login of user %q (from %s): check that POSTGRES_USER and POSTGRES_PASSWORD resolve to the user and password the accessory was first booted with; its log says which one is wrong (%w)", c.Where(node), c.DBUser, from, err)
		}
		return nil, fmt.Errorf("connecting to %s: %w", c.Where(node), err)
	}
	return conn, nil
}

// Reboot re-creates the container with the current files, env and cmd.
func (c *Control) Reboot(ctx context.Context, node string) error {
	c.forget(node)
	_, err := c.Runner.Run(ctx, c.Kamal.Reboot(node))
	return err
}

// CheckLock refuses to go on while someone holds Kamal's deploy lock.
func (c *Control) CheckLock(ctx context.Context) error {
	out, err := c.Runner.Run(ctx, c.Kamal.LockStatus())
	if err != nil {
		return fmt.Errorf("reading Kamal's deploy lock: %w", err)
	}
	if strings.Contains(out, "Locked by") {
		return fmt.Errorf("a Kamal deploy lock is held, so understudy changes nothing now:\n%s\nWait for that deploy to finish (or `kamal lock release` if it is stale), then run again", strings.TrimSpace(out))
	}
	return nil
}

// NodesFromCluster pairs the plan's nodes with their servers and their
// Kamal commands.
func NodesFromCluster(c pgconf.Cluster, hosts map[string]string, cmds map[string]*kamal.AccessoryCommands) map[string]Node {
	out := map[string]Node{}
	for _, n := range c.Nodes {
		out[n.Name] = Node{Host: hosts[n.Name], Addr: n.Addr, Port: n.Port, Commands: cmds[n.Name]}
	}
	return out
}

// The capabilities the Kamal Control has beyond live.Control; live finds
// them by type assertion, so these keep a drifting method from silently
// dropping one (the "nothing was changed" guards depend on Reach).
var (
	_ live.Control            = (*Control)(nil)
	_ live.Rebooter           = (*Control)(nil)
	_ live.Reacher            = (*Control)(nil)
	_ live.ControlReader      = (*Control)(nil)
	_ live.RoleChangePreparer = (*Control)(nil)
)
