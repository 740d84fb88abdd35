package remote

import (
	"context"
	"encoding/base64"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/understudy-dev/understudy/pgconf"
)

// Kamal builds the kamal invocations for one app. Every method is pure: it
// returns argv, and the tests hold it against Kamal's behaviour
// (research/kamal.md §2).
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

// Boot runs the accessory's container (uploads its files first). Kamal
// skips it where a container, running or stopped, already exists.
func (k Kamal) Boot(name string) []string { return k.base("accessory", "boot", name) }

// Reboot pulls, stops and removes the container, then boots it: the way to
// apply changed files, env or cmd.
func (k Kamal) Reboot(name string) []string { return k.base("accessory", "reboot", name) }

// Start starts the existing container (docker container start).
func (k Kamal) Start(name string) []string { return k.base("accessory", "start", name) }

// Stop stops the container (docker container stop, with the accessory's
// stop-timeout): never postgres inside it, which Docker would restart.
func (k Kamal) Stop(name string) []string { return k.base("accessory", "stop", name) }

// Details lists the accessory's container (docker ps --filter label=service=...).
func (k Kamal) Details(name string) []string { return k.base("accessory", "details", name) }

// Logs prints the container's last lines.
func (k Kamal) Logs(name string, lines int) []string {
	return k.base("accessory", "logs", name, "--lines", fmt.Sprint(lines))
}

// LockStatus shows the deploy lock.
func (k Kamal) LockStatus() []string { return k.base("lock", "status") }

// Exec runs a script in a fresh container with the accessory's image, env
// and volumes (kamal accessory exec without --reuse), so it works while the
// accessory is stopped. Kamal joins the command's words and hands them to
// the remote shell unescaped, so the script travels base64-encoded (an
// alphabet with no shell meaning) and runs as the postgres user.
func (k Kamal) Exec(name, script string) []string {
	b64 := base64.StdEncoding.EncodeToString([]byte(script))
	cmd := "sh -c 'echo " + b64 + " | base64 -d >/tmp/understudy.sh && if command -v gosu >/dev/null; then exec gosu postgres sh /tmp/understudy.sh; else exec su-exec postgres sh /tmp/understudy.sh; fi'"
	return k.base("accessory", "exec", name, cmd)
}

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
	Host string // the server Kamal reaches over SSH
	Addr string // the private address PostgreSQL listens on there
	Port int
}

// Control is live.Control for Kamal accessories: SQL through an SSH tunnel
// to each node's private address, container work through kamal.
type Control struct {
	Kamal      Kamal
	Runner     Runner
	Dialer     *Dialer
	Nodes      map[string]Node
	DBUser     string
	DBUserFrom string // where DBUser came from, for messages
	DBPassword string
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
	return fmt.Sprintf("accessory %s on %s (PostgreSQL at %s:%d; logs: kamal accessory logs %s)", node, n.Host, n.Addr, n.Port, node)
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
		if strings.Contains(err.Error(), "password authentication failed") {
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

// container reads `kamal accessory details`: whether a container exists and runs.
func (c *Control) container(ctx context.Context, node string) (exists, running bool, err error) {
	out, err := c.Runner.Run(ctx, c.Kamal.Details(node))
	if err != nil {
		return false, false, err
	}
	return ParseDetails(out)
}

// ParseDetails reads docker ps output as kamal accessory details prints it.
func ParseDetails(out string) (exists, running bool, err error) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "CONTAINER" || strings.HasSuffix(line, ":") || !isHex(f[0]) {
			continue
		}
		exists = true
		if strings.Contains(line, " Up ") {
			running = true
		}
	}
	return exists, running, nil
}

func isHex(s string) bool {
	if len(s) < 6 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// Running reports whether the accessory's container runs.
func (c *Control) Running(ctx context.Context, node string) (bool, error) {
	_, running, err := c.container(ctx, node)
	return running, err
}

// Start starts the container if one exists, else boots the accessory.
func (c *Control) Start(ctx context.Context, node string) error {
	exists, running, err := c.container(ctx, node)
	if err != nil || running {
		return err
	}
	argv := c.Kamal.Boot(node)
	if exists {
		argv = c.Kamal.Start(node)
	}
	_, err = c.Runner.Run(ctx, argv)
	return err
}

// Stop stops the container.
func (c *Control) Stop(ctx context.Context, node string) error {
	_, err := c.Runner.Run(ctx, c.Kamal.Stop(node))
	return err
}

// Reboot re-creates the container with the current files, env and cmd.
func (c *Control) Reboot(ctx context.Context, node string) error {
	_, err := c.Runner.Run(ctx, c.Kamal.Reboot(node))
	return err
}

// Run runs a role script in a fresh container with the accessory's volumes.
func (c *Control) Run(ctx context.Context, node, script string) (string, error) {
	return c.Runner.Run(ctx, c.Kamal.Exec(node, script))
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

// NodesFromCluster pairs the plan's nodes with their servers.
func NodesFromCluster(c pgconf.Cluster, hosts map[string]string) map[string]Node {
	out := map[string]Node{}
	for _, n := range c.Nodes {
		out[n.Name] = Node{Host: hosts[n.Name], Addr: n.Addr, Port: n.Port}
	}
	return out
}
