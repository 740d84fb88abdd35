package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/router"
)

// A lab's node agents and router: one agent per node (a background
// `understudy agent --lab DIR --node NAME`, in the node's namespace in a
// netns lab) and, on a loopback lab, HAProxy on 127.0.0.1 in front of the
// nodes, configured by router.Render from the same cluster model as a
// Kamal app's router.

// LabRouter is the lab's router in lab.json: its listeners on 127.0.0.1.
type LabRouter struct {
	Port      int `json:"port"`       // read-write
	ROPort    int `json:"ro_port"`    // read-only
	StatsPort int `json:"stats_port"` // HAProxy's Prometheus endpoint (/metrics) and stats page (/stats)
}

const monitorPasswordFile = "run/monitor-password"

// agentService is the lab service name of a node's agent.
func agentService(node string) string { return "agent-" + node }

// enableAgents gives a new lab's model the agents: the monitoring login
// and a port per node (free loopback ports, or 8008 on each node's own
// address in a netns lab), and stores the login's password.
func (l *Lab) enableAgents(password string) error {
	if password == "" {
		return errors.New("a lab with node agents needs a monitoring password")
	}
	l.state.Cluster.MonitorUser = pgconf.DefaultMonitorUser
	var ports []int
	if l.NetNS == nil {
		var err error
		if ports, err = netutil.FreePorts(len(l.state.Nodes)); err != nil {
			return err
		}
	}
	for i := range l.state.Nodes {
		l.state.Nodes[i].AgentPort = pgconf.DefaultAgentPort
		if ports != nil {
			l.state.Nodes[i].AgentPort = ports[i]
		}
	}
	l.Cluster.MonitorUser, l.Cluster.Nodes = l.state.Cluster.MonitorUser, l.state.Nodes
	if err := atomicfile.Write(filepath.Join(l.Dir, monitorPasswordFile), []byte(password), 0o600); err != nil {
		return fmt.Errorf("storing the lab's monitoring password: %w", err)
	}
	return nil
}

// enableRouter picks the router's ports (a loopback lab only).
func (l *Lab) enableRouter() error {
	if l.NetNS != nil {
		return errors.New("a netns lab has no router: its nodes' addresses are inside the lab's own network, which HAProxy on this machine cannot reach; run the router in a loopback lab")
	}
	ports, err := netutil.FreePorts(3)
	if err != nil {
		return err
	}
	l.state.Router = &LabRouter{Port: ports[0], ROPort: ports[1], StatsPort: ports[2]}
	return nil
}

// HasAgents reports whether the lab was made with node agents.
func (l *Lab) HasAgents() bool { return l.Cluster.MonitorUser != "" }

// Router is the lab's router, or nil.
func (l *Lab) Router() *LabRouter { return l.state.Router }

func (l *Lab) monitorPassword() string {
	b, err := os.ReadFile(filepath.Join(l.Dir, monitorPasswordFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// AgentURL is the base URL of a node's agent.
func (l *Lab) AgentURL(node string) string {
	_, n, err := l.index(node)
	if err != nil {
		return ""
	}
	return "http://" + n.Agent()
}

// NodeAgentConfig is a node agent's configuration in this lab: its server
// over the node's Unix socket (local logins are trusted in the lab, so no
// password travels), its peers' agents.
func (l *Lab) NodeAgentConfig(node string, log io.Writer) (agent.Config, error) {
	if !l.HasAgents() {
		return agent.Config{}, fmt.Errorf("the lab in %s has no node agents (it was made before they existed): make a new one with `understudy lab up`", l.Dir)
	}
	_, n, err := l.index(node)
	if err != nil {
		return agent.Config{}, err
	}
	cfg := agent.Config{Node: node, Log: log,
		PG: agent.PGSource{Host: l.sockDir(node), Port: n.Port, User: l.Cluster.MonitorUser}}
	if l.state.Backup != nil {
		// One machine: the backup agent's report is beside every node.
		cfg.BackupReport = filepath.Join(l.AgentConfig(io.Discard).Spool, "..", "agent-status.json")
	}
	for _, p := range l.Cluster.Nodes {
		if p.Name != node {
			cfg.Peers = append(cfg.Peers, agent.Peer{Name: p.Name, Addr: p.Agent()})
		}
	}
	return cfg, nil
}

// StartNodeAgents runs `exe agent --lab DIR --node NAME` for every node in
// the background (in its namespace in a netns lab) and waits until each
// answers /health or /status.
func (l *Lab) StartNodeAgents(ctx context.Context, exe string) error {
	if !l.HasAgents() {
		return fmt.Errorf("the lab in %s has no node agents: make a new one with `understudy lab up`", l.Dir)
	}
	if strings.HasSuffix(exe, ".test") {
		return fmt.Errorf("%s is a test binary, not understudy: run the agents in the test's own process (labtest.Agents)", exe)
	}
	for i, n := range l.Cluster.Nodes {
		if l.servicePID(agentService(n.Name)) > 0 {
			continue
		}
		argv := []string{exe, "agent", "--lab", l.Dir, "--node", n.Name}
		if l.HasFailover() {
			argv = append(argv, "--failover")
		}
		if l.NetNS != nil {
			// As this user (it reads the lab's files), in the node's namespace.
			argv = append([]string{"nsenter", "--net=" + l.NetNS.Path(i), "--"}, argv...)
		}
		if err := l.startService(agentService(n.Name), argv, nil); err != nil {
			return err
		}
	}
	wait := 20 * time.Second
	if l.HasFailover() {
		wait = 90 * time.Second // the agent listens once its etcd member has joined
	}
	for _, n := range l.Cluster.Nodes {
		if err := l.waitListening(ctx, agentService(n.Name), n.Agent(), wait); err != nil {
			return err
		}
	}
	return nil
}

// StopNodeAgents stops the agents StartNodeAgents started.
func (l *Lab) StopNodeAgents() error {
	var errs []error
	for _, n := range l.Cluster.Nodes {
		errs = append(errs, l.stopService(agentService(n.Name)))
	}
	return errors.Join(errs...)
}

// RouterConfig renders the lab router's haproxy.cfg.
func (l *Lab) RouterConfig() (string, error) {
	r := l.state.Router
	if r == nil {
		return "", fmt.Errorf("the lab in %s has no router", l.Dir)
	}
	return router.Render(l.Cluster, router.Config{Bind: "127.0.0.1", Port: r.Port, ROPort: r.ROPort,
		StatsBind: "127.0.0.1", StatsPort: r.StatsPort, Log: "stderr"})
}

// RouterConfigFile is where the lab keeps haproxy.cfg.
func (l *Lab) RouterConfigFile() string { return filepath.Join(l.Dir, "conf", "haproxy.cfg") }

// FindHAProxy finds the haproxy executable.
func FindHAProxy() (string, error) {
	if p := os.Getenv("UNDERSTUDY_HAPROXY"); p != "" {
		return p, nil
	}
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if q, err := exec.LookPath(p); err == nil {
			return q, nil
		}
	}
	return "", errors.New("haproxy is not installed: run ./scripts/setup-debian (or sudo apt-get install haproxy), or use `lab up --no-router`")
}

// StartRouter writes haproxy.cfg, checks it with haproxy -c, and runs
// HAProxy in the foreground as a lab service, until its listeners answer.
func (l *Lab) StartRouter(ctx context.Context) error {
	r := l.state.Router
	if r == nil {
		return fmt.Errorf("the lab in %s has no router", l.Dir)
	}
	if l.servicePID("router") > 0 {
		return nil
	}
	hap, err := FindHAProxy()
	if err != nil {
		return err
	}
	cfg, err := l.RouterConfig()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(l.RouterConfigFile(), []byte(cfg), 0o644); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, hap, "-c", "-q", "-f", l.RouterConfigFile()).CombinedOutput(); err != nil {
		return fmt.Errorf("haproxy -c rejects %s: %v: %s", l.RouterConfigFile(), err, strings.TrimSpace(string(out)))
	}
	if err := l.startService("router", []string{hap, "-db", "-f", l.RouterConfigFile()}, nil); err != nil {
		return err
	}
	return l.waitListening(ctx, "router", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.StatsPort)), 20*time.Second)
}

// StopRouter stops the lab's HAProxy.
func (l *Lab) StopRouter() error { return l.stopService("router") }

// RouterConnString is how an app reaches the lab through its router: one
// host, with target_session_attrs=read-write kept (it refuses a session
// that lands on a node between two checks).
func (l *Lab) RouterConnString(user, db string) string {
	r := l.state.Router
	if r == nil {
		return ""
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s target_session_attrs=read-write connect_timeout=2", r.Port, user, db)
}

// waitListening waits until addr accepts a TCP connection, or the
// service's process has exited.
func (l *Lab) waitListening(ctx context.Context, svc, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		var c net.Conn
		var err error
		if l.NetNS != nil && svc != "router" {
			c, err = l.DialOutsider(dctx, "tcp", addr) // the nodes' addresses are inside the lab's network
		} else {
			c, err = (&net.Dialer{}).DialContext(dctx, "tcp", addr)
		}
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		if l.servicePID(svc) == 0 {
			log, _ := os.ReadFile(l.serviceLog(svc))
			return fmt.Errorf("the lab's %s exited: %s", svc, lastLines(string(log), 5))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("the lab's %s did not listen on %s within %s (log: %s)", svc, addr, limit, l.serviceLog(svc))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The lab's routing reader (live.RoutingReader): agents and the router
// over loopback (a netns lab's agents from its outsider namespace).
var _ live.RoutingReader = (*Lab)(nil)

func (l *Lab) httpGet(ctx context.Context, url string, inLab bool) ([]byte, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	if inLab && l.NetNS != nil {
		tr.DialContext = l.DialOutsider
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return b, err
}

// AgentStatus reads a node agent's /status.
func (l *Lab) AgentStatus(ctx context.Context, node string) (agent.Status, error) {
	var st agent.Status
	b, err := l.httpGet(ctx, l.AgentURL(node)+"/status", true)
	if err != nil {
		return st, fmt.Errorf("%s's agent at %s: %w", node, l.AgentURL(node), err)
	}
	return st, json.Unmarshal(b, &st)
}

// RouterHosts is the lab's one router, when it has one.
func (l *Lab) RouterHosts() []string {
	if l.state.Router == nil {
		return nil
	}
	return []string{"127.0.0.1"}
}

// RouterMetrics reads the lab router's Prometheus endpoint.
func (l *Lab) RouterMetrics(ctx context.Context, host string) (string, error) {
	r := l.state.Router
	if r == nil {
		return "", fmt.Errorf("the lab has no router")
	}
	b, err := l.httpGet(ctx, fmt.Sprintf("http://127.0.0.1:%d/metrics", r.StatsPort), false)
	return string(b), err
}

var _ live.AgentPrimaryReader = (*Lab)(nil)

// AgentPrimary asks a node's agent for a fresh /primary answer.
func (l *Lab) AgentPrimary(ctx context.Context, node string) (bool, string, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	if l.NetNS != nil {
		tr.DialContext = l.DialOutsider
	}
	return agent.FreshPrimary(ctx, &http.Client{Transport: tr}, l.AgentURL(node))
}
