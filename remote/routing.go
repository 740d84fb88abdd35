package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/live"
)

// RoutingAccessory is a node agent's, the witness's or the router's
// accessory (live.RoutingDeployer): for an agent and the witness, the
// understudy binary put into the
// directory its deploy.yml entry mounts at BinDir; for both, the file
// Kamal uploads (cluster.json, haproxy.cfg) compared with what init wrote,
// and the containers, booted and rebooted through kamal.
type RoutingAccessory struct {
	Control  *Control
	Acc      string   // the accessory
	Hosts    []string // its servers
	Commands *kamal.AccessoryCommands
	What     live.RoutingKind
	Node     string // an agent's node ("" for the router and the witness)
	BinDir   string // agents and the witness: where the container sees the binary's directory
	File     string // the container path of the file init wrote
	Text     string // its bytes as init wrote them
}

var _ live.RoutingDeployer = (*RoutingAccessory)(nil)

// Name is the accessory's name.
func (r *RoutingAccessory) Name() string { return r.Acc }

// AgentNode is the node an agent's accessory serves.
func (r *RoutingAccessory) AgentNode() string { return r.Node }

// Kind is what the accessory runs.
func (r *RoutingAccessory) Kind() live.RoutingKind { return r.What }

func (r *RoutingAccessory) acc() accessory {
	return accessory{c: r.Control, name: r.Acc, hosts: r.Hosts, cmds: r.Commands, binDir: r.BinDir, reinit: "understudy init"}
}

func (r *RoutingAccessory) fileHostPath() string {
	for _, f := range r.Commands.Files {
		if f.ContainerPath == r.File {
			return f.HostPath
		}
	}
	return ""
}

// ReadAgent reads the containers' states and what the servers hold; the
// container is "absent" when it is missing on any server, else the first
// state that is not "running".
func (r *RoutingAccessory) ReadAgent(ctx context.Context) (live.AgentFacts, error) {
	f := live.AgentFacts{Name: r.Acc, BinaryCurrent: true, ConfigCurrent: true, Container: "running"}
	if r.Text == "" {
		return f, fmt.Errorf("the file %s mounts (%s) is missing from config/understudy: re-run `understudy init`", r.Acc, r.File)
	}
	want, _ := sumOf(strings.NewReader(r.Text))
	var binPath string
	if r.What != live.RoutingRouter {
		dir, err := r.acc().binHostDir()
		if err != nil {
			return f, err
		}
		binPath = UnderstudyPath(dir)
	}
	cfgPath := r.fileHostPath()
	for _, h := range r.Hosts {
		paths := []string{cfgPath}
		var local string
		if r.What != live.RoutingRouter {
			bin, err := r.Control.UnderstudyFor(ctx, h)
			if err != nil {
				return f, err
			}
			if local, err = fileSum(bin); err != nil {
				return f, err
			}
			f.Binary = bin
			paths = append(paths, binPath)
		}
		out, err := r.Control.Shell.Exec(ctx, h, SumCmd(paths...), nil)
		if err != nil {
			return f, fmt.Errorf("reading %s's files on %s: %w", r.Acc, h, err)
		}
		sums := ParseSums(string(out))
		f.ConfigCurrent = f.ConfigCurrent && sums[cfgPath] == want
		if r.What != live.RoutingRouter {
			f.BinaryCurrent = f.BinaryCurrent && sums[binPath] == local
		}
		ci, err := r.Control.inspectContainer(ctx, h, r.Commands.ServiceName)
		switch {
		case errors.Is(err, errNoContainer):
			f.Container = "absent"
		case err != nil:
			return f, err
		case f.Container != "absent" && ci.State != "running":
			f.Container = ci.State
		}
	}
	return f, nil
}

// InstallAgentBinary copies the understudy build for each server's
// machine to it.
func (r *RoutingAccessory) InstallAgentBinary(ctx context.Context) error {
	return r.acc().installBinary(ctx)
}

// BootAgent is `kamal accessory boot` (it boots where no container is).
func (r *RoutingAccessory) BootAgent(ctx context.Context) error { return r.acc().boot(ctx) }

// RebootAgent is `kamal accessory reboot`.
func (r *RoutingAccessory) RebootAgent(ctx context.Context) error { return r.acc().reboot(ctx) }

// StartAgent is Kamal's accessory start on every server.
func (r *RoutingAccessory) StartAgent(ctx context.Context) error { return r.acc().start(ctx) }

// Routing reads the node agents and the routers through the SSH
// connections (live.RoutingReader): an agent on its node's private
// address, from the node's server; a router's metrics on 127.0.0.1 of its
// server, where its accessory publishes them.
type Routing struct {
	Control     *Control
	Routers     []string // the router's servers
	StatsPort   int
	AgentsPorts map[string]int // node → agent port
}

var _ live.RoutingReader = (*Routing)(nil)

func (r *Routing) get(ctx context.Context, host, service, addr, path string) ([]byte, error) {
	dial := r.Control.Dialer.DialFuncTo(host, service)
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, addr)
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("from %s: %w", host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("http://%s%s answered %s", addr, path, resp.Status)
	}
	return b, err
}

// AgentStatus reads a node agent's /status from the node's server.
func (r *Routing) AgentStatus(ctx context.Context, node string) (agent.Status, error) {
	var st agent.Status
	n, ok := r.Control.Nodes[node]
	if !ok {
		return st, fmt.Errorf("no node %q", node)
	}
	port := r.AgentsPorts[node]
	b, err := r.get(ctx, n.Host, "the node agent", net.JoinHostPort(n.Addr, strconv.Itoa(port)), "/status")
	if err != nil {
		return st, fmt.Errorf("%s's agent: %w", node, err)
	}
	return st, json.Unmarshal(b, &st)
}

// RouterHosts are the router's servers.
func (r *Routing) RouterHosts() []string { return r.Routers }

// RouterMetrics reads HAProxy's /metrics on a router server.
func (r *Routing) RouterMetrics(ctx context.Context, host string) (string, error) {
	b, err := r.get(ctx, host, "the router's metrics", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.StatsPort)), "/metrics")
	return string(b), err
}

var _ live.AgentPrimaryReader = (*Routing)(nil)

// AgentPrimary asks a node's agent for a fresh /primary answer, from the
// node's server.
func (r *Routing) AgentPrimary(ctx context.Context, node string) (bool, string, error) {
	n, ok := r.Control.Nodes[node]
	if !ok {
		return false, "", fmt.Errorf("no node %q", node)
	}
	addr := net.JoinHostPort(n.Addr, strconv.Itoa(r.AgentsPorts[node]))
	dial := r.Control.Dialer.DialFuncTo(n.Host, "the node agent")
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, addr)
	}}
	return agent.FreshPrimary(ctx, &http.Client{Transport: tr}, "http://"+addr)
}
