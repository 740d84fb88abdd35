package failover

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/understudy-dev/understudy/pgconf"
)

// DatabaseMemberElectionMs is the election timeout of the two database
// servers' members (the witness keeps EmbedConfig's 2.5 s). The holder
// keeps etcd's leader on the witness, so the witness's death always costs
// an election, and etcd waits one to two election timeouts before it
// starts one: with 2.5 s on every member, renewals failed for up to 6 s
// and the primary fenced itself in 2 of 15 witness kills (the fence comes
// 5 s after the last successful renewal). With 1.25 s on the database
// members, 0 of 15, with at most one renewal failing. Their pre-votes do
// not depose a leader the other members still hear from, so a starved
// database member does not start elections that succeed. (5 minutes of
// pgbench at load 11-15: no renewal failed; the 30-minute soak with CPU
// burners has not been run with it.)
const DatabaseMemberElectionMs = 1250

// SpecFor is the etcd member spec of one member of a cluster's failover
// model, its data under dataDir.
func SpecFor(f *pgconf.Failover, name, dataDir string) MemberSpec {
	s := MemberSpec{Name: name, DataDir: dataDir, Token: f.Token}
	if name != f.Witness {
		s.ElectionMs = DatabaseMemberElectionMs
	}
	for _, m := range f.Members {
		s.Members = append(s.Members, MemberAddr{Name: m.Name, IP: m.Addr, ClientPort: m.ClientPort, PeerPort: m.PeerPort})
	}
	return s
}

// SettingsFor are the defaults with the model's choices.
func SettingsFor(f *pgconf.Failover) Settings {
	s := Defaults()
	s.Synchronous = f.Synchronous
	return s
}

// TLSFilesIn are the files StartMember writes under a member's data
// directory, which its node's client uses too.
func TLSFilesIn(dataDir string) TLSFiles {
	d := filepath.Join(dataDir, "tls")
	return TLSFiles{CA: filepath.Join(d, "ca.crt"), Cert: filepath.Join(d, "member.crt"), Key: filepath.Join(d, "member.key")}
}

// NodeConfig is what a node agent (or the witness) runs for failover.
type NodeConfig struct {
	Spec   MemberSpec
	Secret []byte
	// Node is the database node; "" for the witness (its member only).
	Node     string
	Standbys []string
	Settings Settings
	PG       NodePG
	Fencer   Fencer
	// WatchdogArgv starts the watchdog process (`understudy failover
	// watchdog --pgdata DIR`), the deadlines on its stdin.
	WatchdogArgv []string
	WatchdogEnv  []string
	Log          io.Writer
}

// Node is a running member with, on a database server, its failover loop.
type Node struct {
	Member *Member
	Runner *Runner // nil for the witness
	client *clientv3.Client
	wd     *WatchdogProc
}

// StartNode starts the etcd member (joining the other two, up to a
// minute) and, on a database server, an etcd client to its own member
// only, the watchdog process (disarmed) and the runner, which Run runs.
func StartNode(ctx context.Context, c NodeConfig) (*Node, error) {
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	m, err := StartMember(sctx, c.Spec, c.Secret, nil)
	cancel()
	if err != nil {
		return nil, err
	}
	n := &Node{Member: m}
	if c.Node == "" {
		return n, nil
	}
	tlsf := TLSFilesIn(c.Spec.DataDir)
	cli, err := NewClient(c.Spec.ClientURLs()[:1], tlsf, nil)
	if err != nil {
		m.Close()
		return nil, err
	}
	n.client = cli
	n.wd = &WatchdogProc{Argv: c.WatchdogArgv, Env: c.WatchdogEnv, Log: c.Log}
	if _, err := n.wd.Write([]byte(WatchdogLine(time.Time{}, time.Now(), 0))); err != nil {
		n.Close()
		return nil, err
	}
	store := NewStore(cli, c.Spec.Token, c.Settings)
	store.Dial = func(eps []string) (*clientv3.Client, error) { return NewClient(eps, tlsf, nil) }
	n.Runner = &Runner{Node: c.Node, Standbys: c.Standbys, Settings: c.Settings, Spec: c.Spec, Store: store,
		Fencer: c.Fencer, PG: c.PG, Watchdog: n.wd, Log: c.Log, StateDir: c.Spec.DataDir}
	return n, nil
}

// Run runs the failover loop until ctx ends (the witness: waits), then
// closes everything: the watchdog's pipe first (a disarmed watchdog exits;
// one still armed fences at its deadline), then the client and the member.
func (n *Node) Run(ctx context.Context) error {
	if n.Runner == nil {
		<-ctx.Done()
	} else {
		n.Runner.Run(ctx)
	}
	n.Close()
	return nil
}

// Close stops what StartNode started.
func (n *Node) Close() {
	if n.wd != nil {
		n.wd.Close()
	}
	if n.client != nil {
		n.client.Close()
	}
	n.Member.Close()
}

// WatchdogPid is the watchdog process's PID (0: none).
func (n *Node) WatchdogPid() int {
	if n.wd == nil {
		return 0
	}
	return n.wd.Pid()
}

// Describe says what runs, for the agent's first log line.
func (n *Node) Describe(c NodeConfig) string {
	what := fmt.Sprintf("etcd member %s (%s, %s)", c.Spec.Name, n.Member.Joined, c.Spec.InitialCluster())
	if n.Runner != nil {
		what += fmt.Sprintf("; failover loop for %s (ttl %s), watchdog pid %d", c.Node, c.Settings.TTL, n.WatchdogPid())
	}
	return what
}
