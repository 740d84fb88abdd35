package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Subnet is the one private /24 understudy's labs and tests use. Each lab
// builds its own switch (a bridge inside a namespace of its own), so labs
// never see each other or the host's network, even with the same addresses.
const Subnet = "10.211.7"

// NetNS is a lab's set of network namespaces: one switch, one per node and
// one outsider (an address that is not a node, for proving pg_hba refuses it).
type NetNS struct {
	ID    string // 4 hex digits, unique per lab
	Nodes int
}

// Addr is node i's address.
func (n *NetNS) Addr(i int) string { return fmt.Sprintf("%s.%d", Subnet, 10+i) }

// OutsiderAddr is the outsider namespace's address.
func (n *NetNS) OutsiderAddr() string { return Subnet + ".250" }

func (n *NetNS) name(part string) string { return "understudy-" + n.ID + "-" + part }

// Path is node i's namespace file.
func (n *NetNS) Path(i int) string { return "/run/netns/" + n.name(fmt.Sprint(i)) }

func (n *NetNS) outsiderPath() string { return "/run/netns/" + n.name("out") }

// port is the switch-side end of node i's (or the outsider's) cable.
func (n *NetNS) port(i int) string { return fmt.Sprintf("us%sp%d", n.ID, i) }

// UpCommands builds the ip(8) commands that create the namespaces, the
// switch and one cable per member. Pure, so the tests read it.
func (n *NetNS) UpCommands() [][]string {
	sw := n.name("sw")
	cmds := [][]string{
		{"ip", "netns", "add", sw},
		{"ip", "-n", sw, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", sw, "link", "set", "br0", "up"},
	}
	members := n.Nodes + 1
	for i := 0; i < members; i++ {
		ns, addr := n.name(fmt.Sprint(i)), n.Addr(i)
		if i == n.Nodes {
			ns, addr = n.name("out"), n.OutsiderAddr()
		}
		inner := fmt.Sprintf("us%sn%d", n.ID, i)
		cmds = append(cmds,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "add", inner, "type", "veth", "peer", "name", n.port(i), "netns", sw},
			[]string{"ip", "-n", ns, "link", "set", inner, "name", "eth0"},
			[]string{"ip", "-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", sw, "link", "set", n.port(i), "master", "br0", "up"},
		)
	}
	return cmds
}

// DownCommands deletes every namespace; their links go with them.
func (n *NetNS) DownCommands() [][]string {
	cmds := [][]string{}
	for i := 0; i < n.Nodes; i++ {
		cmds = append(cmds, []string{"ip", "netns", "delete", n.name(fmt.Sprint(i))})
	}
	return append(cmds, []string{"ip", "netns", "delete", n.name("out")}, []string{"ip", "netns", "delete", n.name("sw")})
}

// CutCommand unplugs node i's cable at the switch (up=false) or plugs it back.
func (n *NetNS) CutCommand(i int, up bool) []string {
	state := "down"
	if up {
		state = "up"
	}
	return []string{"ip", "-n", n.name("sw"), "link", "set", n.port(i), state}
}

// Up creates the namespaces. It needs root.
func (n *NetNS) Up(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("--netns needs root (it creates network namespaces); run as root or leave --netns out for a loopback lab")
	}
	for _, c := range n.UpCommands() {
		if err := runIP(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// Down deletes the namespaces that exist.
func (n *NetNS) Down(ctx context.Context) error {
	var errs []error
	for _, c := range n.DownCommands() {
		if _, err := os.Stat("/run/netns/" + c[3]); err != nil {
			continue
		}
		if err := runIP(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func runIP(ctx context.Context, argv []string) error {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Cut unplugs a node from the lab's switch: a network partition.
func (l *Lab) Cut(ctx context.Context, node string, cut bool) error {
	if l.NetNS == nil {
		return errors.New("partitions need a --netns lab")
	}
	i, _, err := l.index(node)
	if err != nil {
		return err
	}
	return runIP(ctx, l.NetNS.CutCommand(i, !cut))
}

// OutsiderAddr is the address verify tries replication from
// (live.Outsider); "" on a loopback lab, where every node shares 127.0.0.1.
func (l *Lab) OutsiderAddr() string {
	if l.NetNS == nil {
		return ""
	}
	return l.NetNS.OutsiderAddr()
}

// DialOutsider opens a TCP connection from the outsider namespace.
func (l *Lab) DialOutsider(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialIn(ctx, l.NetNS.outsiderPath(), network, addr)
}

// DialIn opens a connection from inside a network namespace. The dial runs
// on an OS thread moved into the namespace and never moved back: the
// goroutine ends locked, so Go retires that thread instead of reusing it.
func DialIn(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			ch <- result{nil, fmt.Errorf("opening network namespace %s: %w", nsPath, err)}
			return
		}
		defer f.Close()
		if err := enterNetNS(f); err != nil {
			ch <- result{nil, fmt.Errorf("entering network namespace %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// HostAddr is the address the host itself gets on a lab's switch when
// attached (tests that play the operator's laptop reaching the servers).
func (n *NetNS) HostAddr() string { return Subnet + ".1" }

// HostCommands plug the host's own network namespace into the lab's
// switch. Deleting the switch namespace unplugs it again.
func (n *NetNS) HostCommands() [][]string {
	sw, h, q := n.name("sw"), "us"+n.ID+"h", "us"+n.ID+"q"
	return [][]string{
		{"ip", "link", "add", h, "type", "veth", "peer", "name", q, "netns", sw},
		{"ip", "addr", "add", n.HostAddr() + "/24", "dev", h},
		{"ip", "link", "set", h, "up"},
		{"ip", "-n", sw, "link", "set", q, "master", "br0", "up"},
	}
}

// AttachHost plugs this host into the lab's switch and returns its address.
func (l *Lab) AttachHost(ctx context.Context) (string, error) {
	if l.NetNS == nil {
		return "", errors.New("attaching the host needs a --netns lab")
	}
	for _, c := range l.NetNS.HostCommands() {
		if err := runIP(ctx, c); err != nil {
			return "", err
		}
	}
	return l.NetNS.HostAddr(), nil
}

// NodeNetNS is the namespace file of a node, or of the outsider ("").
func (l *Lab) NodeNetNS(node string) string {
	if node == "" {
		return l.NetNS.outsiderPath()
	}
	i, _, _ := l.index(node)
	return l.NetNS.Path(i)
}
