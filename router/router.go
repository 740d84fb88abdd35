// Package router renders the router's configuration: HAProxy in TCP mode
// in front of the nodes, sending writes only to the node whose agent
// answers GET /primary with 200, reads to streaming standbys within a lag
// limit (falling back to the primary), and cutting the sessions of a node
// as soon as it is marked down. Pure: text from the cluster model.
package router

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/pgconf"
)

// Backend names in haproxy.cfg; `status` and `check` read HAProxy's
// metrics by them.
const (
	WriteBackend = "understudy_rw"
	ReadBackend  = "understudy_ro"
)

// Defaults of Config.
const (
	DefaultPort      = 5432
	DefaultROPort    = 5433
	DefaultStatsPort = 8405
	DefaultLag       = "16MB"
)

// Timing is how HAProxy checks the agents. The defaults are chosen for a
// write pause of a few hundred milliseconds around a switchover with no
// false alarm under load (docs/router.md): an UP server is checked every
// Inter; after one failed check, again after FastInter, and it is marked
// down after Fall failures in a row (so one slow answer cuts nothing); a
// DOWN server is checked every DownInter and is UP after Rise successes.
type Timing struct {
	Inter, FastInter, DownInter, CheckTimeout time.Duration
	Fall, Rise                                int
}

// DefaultTiming is the checks' default timing.
var DefaultTiming = Timing{Inter: 100 * time.Millisecond, FastInter: 20 * time.Millisecond, DownInter: 50 * time.Millisecond,
	CheckTimeout: 500 * time.Millisecond, Fall: 2, Rise: 1}

// Config is what the rendering depends on besides the cluster.
type Config struct {
	Bind      string // address the listeners bind: "" for every address (in a container), "127.0.0.1" on the lab
	Port      int    // read-write listener
	ROPort    int    // read-only listener
	StatsBind string // where HAProxy's Prometheus endpoint (and stats page) listens
	StatsPort int
	Lag       string // /replica?lag= for the read-only listener
	Timing    Timing
	// Log is HAProxy's log target: "stdout" in a container (docker logs),
	// "stderr" on the lab.
	Log string
}

func (c *Config) defaults() {
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.ROPort == 0 {
		c.ROPort = DefaultROPort
	}
	if c.StatsPort == 0 {
		c.StatsPort = DefaultStatsPort
	}
	if c.Lag == "" {
		c.Lag = DefaultLag
	}
	if c.Timing == (Timing{}) {
		c.Timing = DefaultTiming
	}
	if c.Log == "" {
		c.Log = "stdout"
	}
}

var serverNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// ms renders a duration as HAProxy's milliseconds.
func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

func listen(bind string, port int) string {
	if bind == "" {
		return ":" + strconv.Itoa(port)
	}
	return net.JoinHostPort(bind, strconv.Itoa(port))
}

// Render renders haproxy.cfg. Pure.
func Render(c pgconf.Cluster, cfg Config) (string, error) {
	cfg.defaults()
	if _, err := agent.ParseLagLimit(cfg.Lag); err != nil {
		return "", fmt.Errorf("the router's read-only lag limit: %w", err)
	}
	t := cfg.Timing
	if t.Fall < 1 || t.Rise < 1 || t.Inter <= 0 || t.FastInter <= 0 || t.DownInter <= 0 || t.CheckTimeout <= 0 {
		return "", fmt.Errorf("the router's check timing %+v: every interval and the timeout must be positive, fall and rise at least 1", t)
	}
	named := []struct {
		name string
		port int
	}{{"read-write", cfg.Port}, {"read-only", cfg.ROPort}, {"stats", cfg.StatsPort}}
	for i, p := range named {
		if p.port < 1 || p.port > 65535 {
			return "", fmt.Errorf("the router's %s port %d is not a port", p.name, p.port)
		}
		for _, q := range named[:i] {
			if q.port == p.port {
				return "", fmt.Errorf("the router's %s and %s listeners both use port %d: give each its own", q.name, p.name, p.port)
			}
		}
	}
	for _, n := range c.Nodes {
		if !serverNameRE.MatchString(n.Name) {
			return "", fmt.Errorf("node name %q cannot name a HAProxy server", n.Name)
		}
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# haproxy.cfg managed by understudy: re-run `understudy init` to change it.")
	w("# Writes go only to the node whose agent answers GET /primary with 200;")
	w("# reads to streaming standbys within %s of lag, else to the primary.", cfg.Lag)
	w("global")
	w("    log %s format raw local0 info", cfg.Log)
	w("    maxconn 4096")
	w("    hard-stop-after 10s")
	w("")
	w("defaults")
	w("    mode tcp")
	w("    log global")
	w("    option log-health-checks")
	w("    # A refused connection fails at once (the app retries) instead of waiting")
	w("    # HAProxy's one-second turn-around for a retry; with no server up, a new")
	w("    # connection waits in the queue until one is (timeout queue).")
	w("    retries 0")
	w("    option clitcpka")
	w("    option srvtcpka")
	w("    timeout connect 2s")
	w("    timeout queue 5s")
	w("    # Database sessions idle for long in app pools; keepalives find dead peers.")
	w("    timeout client 1h")
	w("    timeout server 1h")
	w("    timeout check %s", ms(t.CheckTimeout))
	w("    default-server inter %s fastinter %s downinter %s fall %d rise %d on-marked-down shutdown-sessions",
		ms(t.Inter), ms(t.FastInter), ms(t.DownInter), t.Fall, t.Rise)
	w("")
	w("frontend understudy_write")
	w("    bind %s", listen(cfg.Bind, cfg.Port))
	w("    no log # one line per connection is noise; health changes are logged")
	w("    default_backend %s", WriteBackend)
	w("")
	w("backend %s", WriteBackend)
	w("    balance first")
	w("    option httpchk GET /primary")
	w("    http-check expect status 200")
	for _, n := range c.Nodes {
		w("    server %s %s check port %d", n.Name, net.JoinHostPort(n.Addr, strconv.Itoa(n.Port)), agentPort(n))
	}
	w("")
	w("frontend understudy_read")
	w("    bind %s", listen(cfg.Bind, cfg.ROPort))
	w("    no log")
	w("    use_backend %s if { nbsrv(%s) gt 0 }", ReadBackend, ReadBackend)
	w("    default_backend %s", WriteBackend)
	w("")
	w("backend %s", ReadBackend)
	w("    balance leastconn")
	w("    option httpchk GET /replica?lag=%s", cfg.Lag)
	w("    http-check expect status 200")
	for _, n := range c.Nodes {
		w("    server %s %s check port %d", n.Name, net.JoinHostPort(n.Addr, strconv.Itoa(n.Port)), agentPort(n))
	}
	w("")
	w("frontend understudy_stats")
	w("    mode http")
	w("    bind %s", listen(cfg.StatsBind, cfg.StatsPort))
	w("    no log")
	w("    http-request use-service prometheus-exporter if { path /metrics }")
	w("    stats enable")
	w("    stats uri /stats")
	w("    stats refresh 5s")
	return b.String(), nil
}

func agentPort(n pgconf.Node) int {
	if n.AgentPort == 0 {
		return pgconf.DefaultAgentPort
	}
	return n.AgentPort
}
