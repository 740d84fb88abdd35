package lab_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/pgconf"
)

// Every address a lab's namespaces get lies in the project's one /24, and
// every namespace Up creates, Down deletes.
func TestNetNSCommandsStayInSubnet(t *testing.T) {
	ns := &lab.NetNS{ID: "ab12", Nodes: 3}
	subnet := netip.MustParsePrefix(lab.Subnet + ".0/24")
	var created []string
	for _, c := range ns.UpCommands() {
		for i, w := range c {
			if w == "add" && i+1 < len(c) && strings.Contains(c[i+1], "/") {
				p := netip.MustParsePrefix(c[i+1])
				if !subnet.Contains(p.Addr()) || p.Bits() != 24 {
					t.Errorf("address outside %s: %v", subnet, c)
				}
			}
			if (w == "name" || w == "add") && i+1 < len(c) && c[1] != "netns" && len(c[i+1]) > 15 {
				t.Errorf("interface name longer than 15 bytes: %v", c)
			}
		}
		if c[1] == "netns" && c[2] == "add" {
			created = append(created, c[3])
		}
	}
	var deleted []string
	for _, c := range ns.DownCommands() {
		deleted = append(deleted, c[3])
	}
	slices.Sort(created)
	slices.Sort(deleted)
	if !slices.Equal(created, deleted) || len(created) != 5 {
		t.Errorf("created %v, deleted %v", created, deleted)
	}
	if got := ns.CutCommand(1, false); strings.Join(got, " ") != "ip -n understudy-ab12-sw link set usab12p1 down" {
		t.Errorf("cut: %v", got)
	}
}

func TestBootArgv(t *testing.T) {
	n := pgconf.Node{Name: "db-replica", Addr: "10.211.7.11", Port: 5433}
	got := strings.Join(lab.BootArgv("/l", n, "", 0, 0, false), " ")
	want := "/bin/sh /l/conf/boot.sh postgres -c config_file=/l/conf/db-replica.conf -c port=5433 -c listen_addresses=10.211.7.11 -c unix_socket_directories=/l/sock/db-replica"
	if got != want {
		t.Errorf("loopback:\n got %s\nwant %s", got, want)
	}
	got = strings.Join(lab.BootArgv("/l", n, "/run/netns/x", 105, 110, false), " ")
	if !strings.HasPrefix(got, "nsenter --net=/run/netns/x --setuid 105 --setgid 110 -- /bin/sh /l/conf/boot.sh postgres") {
		t.Errorf("netns: %s", got)
	}
	got = strings.Join(lab.BootArgv("/l", n, "/run/netns/x", 105, 110, true), " ")
	want = "unshare --mount --propagation private -- nsenter --net=/run/netns/x -- /bin/sh -c mount --bind /l/nodes/db-replica /understudy && exec setpriv --reuid=105 --regid=110 --init-groups /bin/sh /understudy/boot.sh postgres -c config_file=/understudy/postgresql.conf -c port=5433 -c listen_addresses=10.211.7.11 -c unix_socket_directories=/l/sock/db-replica"
	if got != want {
		t.Errorf("container paths:\n got %s\nwant %s", got, want)
	}
}

// A lab reopens from its directory alone; Create refuses a directory that
// holds anything; Down removes only what the lab made.
func TestCreateOpenDown(t *testing.T) {
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	dir := filepath.Join(root, "lab")
	ctx := context.Background()
	l, err := lab.Create(ctx, dir, lab.Config{Names: []string{"a", "b"}, Ports: []int{15001, 15002}, Password: "pw-for-the-lab-test"})
	if err != nil {
		t.Fatal(err)
	}
	o, err := lab.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if o.Password() != l.Password() || len(o.Cluster.Nodes) != 2 || o.Cluster.Nodes[1].Port != 15002 || o.Cluster.HBAFile != l.Cluster.HBAFile {
		t.Errorf("reopened lab differs: %+v", o.Cluster)
	}
	if st, err := os.Stat(filepath.Join(dir, "run", "replication-password")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("password file: %v %v", st, err)
	}
	if _, err := lab.Create(ctx, dir, lab.Config{Names: []string{"a", "b"}, Ports: []int{1, 2}}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Create on a used directory: %v", err)
	}
	if err := o.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab directory still there: %v", err)
	}
	other := filepath.Join(root, "keep")
	os.MkdirAll(other, 0o755)
	if _, err := lab.Open(other); err == nil {
		t.Error("Open accepted a directory without lab.json")
	}
}

// Issue 10: `lab up --dir` inside a directory the postgres user cannot
// enter (a fresh mktemp -d, mode 0700, as root) names the directory and
// the user instead of failing with "fork/exec /bin/sh: permission denied".
func TestLabDirThePostgresUserCannotEnter(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs the servers as another user")
	}
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	parent := t.TempDir()
	os.Chmod(parent, 0o700)
	l, err := lab.Create(context.Background(), filepath.Join(parent, "lab"), lab.Config{Names: []string{"db", "db-replica"}, Ports: []int{55431, 55432}, Password: "x"})
	if err != nil {
		t.Fatal(err)
	}
	err = l.Start(context.Background(), "db")
	if err == nil || !strings.Contains(err.Error(), parent) || !strings.Contains(err.Error(), "postgres user") {
		t.Fatalf("got %v", err)
	}
}
