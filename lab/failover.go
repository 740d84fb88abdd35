package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgconf"
)

// A lab's automatic failover: three etcd members on this machine, the two
// nodes' agents (`understudy agent --lab DIR --node NAME --failover`) and a
// witness (`understudy witness --lab DIR`), a background service standing
// in for the app host. On loopback each member has ports of its own on
// 127.0.0.1; in a netns lab they run on the nodes' addresses and the
// outsider's, on etcd's default ports.

// WitnessName is the lab's third etcd member.
const WitnessName = "witness"

const (
	failoverSecretFile = "run/failover-secret"
	witnessService     = "witness"
)

// HasFailover reports whether the lab runs automatic failover.
func (l *Lab) HasFailover() bool { return l.Cluster.Failover != nil }

// EnableFailover gives the lab automatic failover: the members in the
// model (so the boot script starts every node read-only from now on), a
// new secret. The nodes keep running; the agents and the witness start
// with StartWitness and StartNodeAgents.
func (l *Lab) EnableFailover(synchronous bool) error {
	if l.HasFailover() {
		return nil
	}
	if !l.HasAgents() {
		return fmt.Errorf("the lab in %s has no node agents, which run failover: make a new one with `understudy lab up --failover`", l.Dir)
	}
	if len(l.Cluster.Nodes) != 2 {
		return fmt.Errorf("failover takes two database nodes and a witness; this lab has %d nodes", len(l.Cluster.Nodes))
	}
	b := make([]byte, 4)
	rand.Read(b)
	f := &pgconf.Failover{Token: "lab-" + hex.EncodeToString(b), Witness: WitnessName, Synchronous: synchronous}
	if l.NetNS != nil {
		for i, n := range l.Cluster.Nodes {
			f.Members = append(f.Members, pgconf.FailoverMember{Name: n.Name, Addr: l.NetNS.Addr(i)})
		}
		f.Members = append(f.Members, pgconf.FailoverMember{Name: WitnessName, Addr: l.NetNS.OutsiderAddr()})
	} else {
		ports, err := netutil.FreePorts(6)
		if err != nil {
			return err
		}
		for i, name := range []string{l.Cluster.Nodes[0].Name, l.Cluster.Nodes[1].Name, WitnessName} {
			f.Members = append(f.Members, pgconf.FailoverMember{Name: name, Addr: "127.0.0.1", ClientPort: ports[2*i], PeerPort: ports[2*i+1]})
		}
	}
	if err := atomicfile.Write(filepath.Join(l.Dir, failoverSecretFile), []byte(failover.NewSecret()+"\n"), 0o600); err != nil {
		return fmt.Errorf("storing the lab's failover secret: %w", err)
	}
	l.state.Cluster.Failover = f
	l.Cluster.Failover = f
	if err := l.Cluster.Validate(); err != nil {
		return err
	}
	if err := l.writeFiles(); err != nil {
		return err
	}
	return l.saveState()
}

func (l *Lab) failoverSecret() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(l.Dir, failoverSecretFile))
	if err != nil {
		return nil, fmt.Errorf("reading the lab's failover secret: %w", err)
	}
	return failover.ParseSecret(strings.TrimSpace(string(b)))
}

// memberDir is where a member keeps its data.
func (l *Lab) memberDir(name string) string { return filepath.Join(l.Dir, "etcd", name) }

func (l *Lab) memberSpec(name string) failover.MemberSpec {
	s := failover.SpecFor(l.Cluster.Failover, name, l.memberDir(name))
	s.LogFile = filepath.Join(l.Dir, "etcd-"+name+".log")
	return s
}

// FailoverNodeConfig is what a node's agent runs for failover in this lab:
// its member, the runner over a superuser session on the node's socket
// (promote, synchronous_standby_names), the fence by PID (the lab's
// servers are this machine's processes), a read-only restart and a rejoin
// as `understudy rejoin` does them, and the watchdog as exe's `failover
// watchdog`. node "" is the witness.
func (l *Lab) FailoverNodeConfig(node, exe string, log io.Writer) (failover.NodeConfig, error) {
	if !l.HasFailover() {
		return failover.NodeConfig{}, fmt.Errorf("the lab in %s has no failover: make one with `understudy lab up --failover`", l.Dir)
	}
	secret, err := l.failoverSecret()
	if err != nil {
		return failover.NodeConfig{}, err
	}
	name := node
	if node == "" {
		name = WitnessName
	}
	c := failover.NodeConfig{Spec: l.memberSpec(name), Secret: secret, Node: node, Settings: failover.SettingsFor(l.Cluster.Failover), Log: log}
	if node == "" {
		return c, nil
	}
	if _, _, err := l.index(node); err != nil {
		return failover.NodeConfig{}, err
	}
	var slots []string
	for _, n := range l.Cluster.Nodes {
		if n.Name != node {
			c.Standbys = append(c.Standbys, n.Name)
			slots = append(slots, n.Slot())
		}
	}
	c.Fencer = failover.ProcessFencer{DataDir: l.DataDir(node)}
	c.PG = &failover.SQLPG{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return l.Conn(ctx, node) },
		DataDir: l.DataDir(node),
		Slots:   slots,
		Restart: func(ctx context.Context) error { return l.Start(ctx, node) },
		DoRejoin: func(ctx context.Context, holder string) error {
			_, err := live.Rejoin(ctx, l.Target(), node, live.RoleOptions{Out: log})
			return err
		},
	}
	c.WatchdogArgv = []string{exe, "failover", "watchdog", "--pgdata", l.DataDir(node)}
	return c, nil
}

// StartWitness runs the witness (`exe witness --lab DIR`) in the
// background (in the outsider namespace in a netns lab) and waits until
// its member listens.
func (l *Lab) StartWitness(ctx context.Context, exe string) error {
	if !l.HasFailover() {
		return fmt.Errorf("the lab in %s has no failover", l.Dir)
	}
	if strings.HasSuffix(exe, ".test") {
		return fmt.Errorf("%s is a test binary, not understudy", exe)
	}
	if l.servicePID(witnessService) > 0 {
		return nil
	}
	argv := []string{exe, "witness", "--lab", l.Dir}
	if l.NetNS != nil {
		argv = append([]string{"nsenter", "--net=" + l.NetNS.outsiderPath(), "--"}, argv...)
	}
	if err := l.startService(witnessService, argv, nil); err != nil {
		return err
	}
	s := l.memberSpec(WitnessName)
	for _, m := range s.Members {
		if m.Name == WitnessName {
			return l.waitListening(ctx, witnessService, strings.TrimPrefix(s.ClientURL(m), "https://"), 30*time.Second)
		}
	}
	return errors.New("the witness is not among the failover members")
}

// StopWitness stops the witness.
func (l *Lab) StopWitness() error { return l.stopService(witnessService) }

// WitnessPID is the witness's PID while it runs (0 otherwise).
func (l *Lab) WitnessPID() int { return l.servicePID(witnessService) }

// AgentPID is a node agent's PID while it runs as the lab's service.
func (l *Lab) AgentPID(node string) int { return l.servicePID(agentService(node)) }

// PostmasterPID is a node's running postmaster (0: none).
func (l *Lab) PostmasterPID(node string) int {
	if pid := l.postmasterPID(node); pid > 0 && alive(pid) {
		return pid
	}
	return 0
}

// FailoverStore opens the failover keys in etcd from this machine (a
// client with a certificate from the lab's secret, through every member),
// for switchover, promote, `failover pause|resume|status`. close ends it.
func (l *Lab) FailoverStore(ctx context.Context) (*failover.Store, func(), error) {
	if !l.HasFailover() {
		return nil, nil, fmt.Errorf("the lab in %s has no failover", l.Dir)
	}
	secret, err := l.failoverSecret()
	if err != nil {
		return nil, nil, err
	}
	var dial failover.Dialer
	if l.NetNS != nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return l.DialOutsider(ctx, "tcp", addr) }
	}
	return failover.OperatorStore(l.Cluster.Failover, secret, dial)
}

// Lease is the lab's lease control: each call opens a client of its own
// through every member.
func (l *Lab) Lease() live.StoreLease { return live.StoreLease{Open: l.FailoverStore} }
