// Package pgconf renders the files that make a set of PostgreSQL nodes a
// replicated cluster: the managed pg_hba file, the shared settings file, the
// node boot script and the first-boot role script. Every function here is
// pure: it returns text and touches nothing, so the same output serves Kamal
// accessories and the local lab.
package pgconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// Node is one PostgreSQL server of the cluster.
type Node struct {
	Name string `json:"name"` // accessory (or lab node) name; also its application_name
	Addr string `json:"addr"` // IP address peers use to reach it
	Port int    `json:"port"` // port peers use to reach it
	// AgentPort is the node agent's HTTP port on Addr (0: DefaultAgentPort).
	AgentPort int `json:"agent_port,omitempty"`
}

// DefaultAgentPort is the node agent's port: Patroni's REST port, which
// HAProxy users know.
const DefaultAgentPort = 8008

// Agent is where the node's agent listens (host:port).
func (n Node) Agent() string {
	p := n.AgentPort
	if p == 0 {
		p = DefaultAgentPort
	}
	return net.JoinHostPort(n.Addr, strconv.Itoa(p))
}

// Slot is the physical replication slot that holds WAL for this node while
// it is a standby. Every node has one name, on whichever node is primary.
func (n Node) Slot() string { return SlotName(n.Name) }

var slotUnsafe = regexp.MustCompile(`[^a-z0-9_]`)

// SlotName maps a node name to a valid slot name (lower case, digits, _).
func SlotName(node string) string {
	return "understudy_" + slotUnsafe.ReplaceAllString(strings.ToLower(node), "_")
}

// Cluster is everything the rendered files depend on.
// It is written once, as data (cluster.json, MarshalCluster), and read
// back from there: never re-read from the rendered files.
type Cluster struct {
	Nodes          []Node `json:"nodes"`
	InitialPrimary string `json:"initial_primary"` // the node that may initialise a brand-new cluster
	Major          int    `json:"major"`           // PostgreSQL major version, 13..18
	ReplUser       string `json:"replication_user"`
	// MonitorUser is the node agents' login (a member of pg_monitor); ""
	// for a setup made before the agents existed.
	MonitorUser string `json:"monitor_user,omitempty"`
	WALCap      string `json:"wal_cap"` // max_slot_wal_keep_size, e.g. "10GB"

	// Paths as the server sees them.
	DataDir  string `json:"data_dir,omitempty"`  // PGDATA ("" for the image's)
	ConfFile string `json:"conf_file,omitempty"` // this package's settings file
	HBAFile  string `json:"hba_file,omitempty"`  // this package's pg_hba file

	// ContainerDefaults keeps the official image's in-container trust rules
	// (local socket and loopback inside the container). The lab, where
	// loopback is shared by every node, leaves them out.
	ContainerDefaults bool `json:"container_defaults,omitempty"`

	// Failover is automatic failover on etcd (nil: off, promote by hand).
	Failover *Failover `json:"failover,omitempty"`
}

// Failover is automatic failover's part of the model: the three etcd
// members (the database nodes' agents and a witness on an app host) and
// the cluster's token. With it, every node boots read-only and only the
// agent that holds the leader lease makes its node writable.
type Failover struct {
	Token       string           `json:"token"`   // etcd's initial-cluster-token, the keys' prefix
	Witness     string           `json:"witness"` // the member that is no database node
	Members     []FailoverMember `json:"members"` // all three, the witness included
	Synchronous bool             `json:"synchronous,omitempty"`
}

// FailoverMember is one etcd member by its private address; ports 0 are
// etcd's defaults (2379 client, 2380 peer).
type FailoverMember struct {
	Name       string `json:"name"`
	Addr       string `json:"addr"`
	ClientPort int    `json:"client_port,omitempty"`
	PeerPort   int    `json:"peer_port,omitempty"`
}

// Defaults shared by init and the lab.
const (
	DefaultReplUser = "replicator" // the replication role
	// DefaultMonitorUser is the node agents' login (pg_monitor).
	DefaultMonitorUser = "understudy_monitor"
	// MonitorSecret is the monitoring login's password, a secret like
	// REPLICATION_PASSWORD.
	MonitorSecret    = "MONITOR_PASSWORD"
	DefaultLabWALCap = "1GB" // a lab's slot cap (init's default is setup.DefaultWALCap)
	// MountPoint is where an accessory's container has understudy's files
	// (and where a container-paths lab mounts them).
	MountPoint = "/understudy"
	// PassfileName is the replication passfile, in the node's run directory
	// (the image's /var/run/postgresql, or the lab's run/).
	PassfileName = "understudy.pgpass"
	// DefaultPassfile is its path in the official image.
	DefaultPassfile = "/var/run/postgresql/" + PassfileName
)

// passfileLine is the shell line the role scripts use to find the passfile.
const passfileLine = `PASSFILE="${UNDERSTUDY_RUN_DIR:-/var/run/postgresql}/` + PassfileName + `"`

// ClusterFileVersion is the version of cluster.json this code writes.
const ClusterFileVersion = 1

type clusterFile struct {
	Version int `json:"version"`
	Cluster
}

// MarshalCluster renders cluster.json: the model, with a version. Pure.
func MarshalCluster(c Cluster) string {
	b, _ := json.MarshalIndent(clusterFile{Version: ClusterFileVersion, Cluster: c}, "", "  ")
	return string(b) + "\n"
}

// UnmarshalCluster reads cluster.json and validates it.
func UnmarshalCluster(b []byte) (Cluster, error) {
	var f clusterFile
	if err := json.Unmarshal(b, &f); err != nil {
		return Cluster{}, fmt.Errorf("not a cluster file: %w", err)
	}
	switch {
	case f.Version == 0:
		return Cluster{}, errors.New("no version: not a cluster file written by understudy")
	case f.Version > ClusterFileVersion:
		return Cluster{}, fmt.Errorf("version %d was written by a newer understudy (this one reads %d): upgrade understudy", f.Version, ClusterFileVersion)
	}
	return f.Cluster, f.Cluster.Validate()
}

// Node returns the named node.
func (c Cluster) Node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Validate checks the inputs the renderers rely on.
func (c Cluster) Validate() error {
	if c.Major < 13 || c.Major > 18 {
		return fmt.Errorf("PostgreSQL %d is not supported: understudy needs 13 to 18 (max_slot_wal_keep_size arrived in 13)", c.Major)
	}
	if len(c.Nodes) < 2 {
		return fmt.Errorf("a cluster needs at least two nodes")
	}
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		if !nameRE.MatchString(n.Name) {
			return fmt.Errorf("node name %q: use letters, digits, - and _ only", n.Name)
		}
		if seen[n.Name] {
			return fmt.Errorf("node name %q is used twice", n.Name)
		}
		seen[n.Name] = true
	}
	if _, ok := c.Node(c.InitialPrimary); !ok {
		return fmt.Errorf("initial primary %q is not a node", c.InitialPrimary)
	}
	if !nameRE.MatchString(c.ReplUser) {
		return fmt.Errorf("replication user %q: use letters, digits, - and _ only", c.ReplUser)
	}
	if c.MonitorUser != "" && (!nameRE.MatchString(c.MonitorUser) || c.MonitorUser == c.ReplUser) {
		return fmt.Errorf("monitoring user %q: use letters, digits, - and _ only, and a name other than the replication user's", c.MonitorUser)
	}
	if f := c.Failover; f != nil {
		if len(c.Nodes) != 2 {
			return fmt.Errorf("failover takes two database nodes and a witness; this cluster has %d nodes", len(c.Nodes))
		}
		if c.MonitorUser == "" {
			return errors.New("failover runs in the node agents, and this cluster has none (no monitoring login): re-run `understudy init`")
		}
		if f.Token == "" || !nameRE.MatchString(f.Witness) {
			return fmt.Errorf("failover: a token and a witness name are needed (witness %q)", f.Witness)
		}
		names := map[string]bool{}
		for _, m := range f.Members {
			names[m.Name] = true
			if net.ParseIP(m.Addr) == nil {
				return fmt.Errorf("failover member %s: %q is not an IP address (give the server's private IP)", m.Name, m.Addr)
			}
		}
		want := []string{c.Nodes[0].Name, c.Nodes[1].Name, f.Witness}
		for _, n := range want {
			if !names[n] {
				return fmt.Errorf("failover members %v: %s is missing (the members are the two nodes and the witness)", f.MemberNames(), n)
			}
		}
		if len(f.Members) != 3 {
			return fmt.Errorf("failover members %v: exactly three are needed (the two nodes and the witness)", f.MemberNames())
		}
	}
	return nil
}

// MemberNames lists the members' names.
func (f *Failover) MemberNames() []string {
	var n []string
	for _, m := range f.Members {
		n = append(n, m.Name)
	}
	return n
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*$`)

// hostCIDR is the single-address CIDR for an IP.
func hostCIDR(addr string) string {
	if strings.Contains(addr, ":") {
		return addr + "/128"
	}
	return addr + "/32"
}
