// Package pgconf renders the files that make a set of PostgreSQL nodes a
// replicated cluster: the managed pg_hba file, the shared settings file, the
// node boot script and the first-boot role script. Every function here is
// pure: it returns text and touches nothing, so the same output serves Kamal
// accessories and the local lab.
package pgconf

import (
	"fmt"
	"regexp"
	"strings"
)

// Node is one PostgreSQL server of the cluster.
type Node struct {
	Name string // accessory (or lab node) name; also its application_name
	Addr string // IP address peers use to reach it
	Port int    // port peers use to reach it
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
type Cluster struct {
	Nodes          []Node
	InitialPrimary string // the node that may initialise a brand-new cluster
	Major          int    // PostgreSQL major version, 13..18
	ReplUser       string // the replication role
	WALCap         string // max_slot_wal_keep_size, e.g. "10GB"

	// Paths as the server sees them.
	DataDir  string // PGDATA
	ConfFile string // this package's settings file
	HBAFile  string // this package's pg_hba file

	// ContainerDefaults keeps the official image's in-container trust rules
	// (local socket and loopback inside the container). The lab, where
	// loopback is shared by every node, leaves them out.
	ContainerDefaults bool
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
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*$`)

// hostCIDR is the single-address CIDR for an IP.
func hostCIDR(addr string) string {
	if strings.Contains(addr, ":") {
		return addr + "/128"
	}
	return addr + "/32"
}
