package remote

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
)

// nodeData is where a node's PGDATA lives on its server: the directories:
// entry whose container path holds it, and PGDATA's path on the host.
func (c *Control) nodeData(node, pgdata string) (mount kamal.Directory, hostPGDATA string, err error) {
	n, err := c.containerOf(node)
	if err != nil {
		return mount, "", err
	}
	for _, d := range n.Commands.Directories {
		cp := strings.TrimRight(d.ContainerPath, "/")
		if pgdata == cp || strings.HasPrefix(pgdata, cp+"/") {
			return d, d.HostPath + strings.TrimPrefix(pgdata, cp), nil
		}
	}
	return mount, "", fmt.Errorf("accessory %s keeps %s in no directories: entry (a named volume?): restore into it is not supported; restore --into DIR, then copy the directory into the volume", node, pgdata)
}

// ListCmd prints what a directory holds (nothing when it is missing or
// empty). Pure.
func ListCmd(dir string) string { return "ls -A " + dir + " 2>/dev/null | head -5; true" }

// NodeDataState says whether a node's data directory on its server is
// missing or empty, and what it holds when it is not.
func (c *Control) NodeDataState(ctx context.Context, node, pgdata string) (bool, string, error) {
	_, host, err := c.nodeData(node, pgdata)
	if err != nil {
		return false, "", err
	}
	out, err := c.Shell.Exec(ctx, c.Nodes[node].Host, ListCmd(host), nil)
	if err != nil {
		return false, "", fmt.Errorf("reading %s's data directory: %w", c.Where(node), err)
	}
	what := strings.Join(strings.Fields(string(out)), ", ")
	return what == "", what, nil
}

// RestoreNodeCmd runs `understudy restore --here` in a fresh container of
// the node's image, with the node's data directory mounted where the node
// mounts it and the binary from binDir; the secrets come on stdin. Pure.
func RestoreNodeCmd(image string, mount kamal.Directory, binDir string, args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shq(a)
	}
	return fmt.Sprintf("%s && docker run --rm -i --network host --volume %s:%s --volume %s:/understudy/bin:ro --entrypoint /understudy/bin/understudy %s restore --here %s",
		kamal.MakeDirectory(mount.HostPath), mount.HostPath, mount.ContainerPath, binDir, shq(image), strings.Join(q, " "))
}

// RestoreNode copies understudy (the build for the server's machine) to
// the node's server and runs the restore there, its output copied to out
// as it comes.
func (c *Control) RestoreNode(ctx context.Context, node, pgdata string, args []string, secrets io.Reader, out io.Writer) error {
	mount, _, err := c.nodeData(node, pgdata)
	if err != nil {
		return err
	}
	n := c.Nodes[node]
	const binDir = "$PWD/.understudy/bin"
	if _, err := c.InstallUnderstudy(ctx, n.Host, binDir); err != nil {
		return err
	}
	cmd := RestoreNodeCmd(n.Commands.Image, mount, binDir, args)
	if _, err := c.Dialer.ExecTee(ctx, n.Host, cmd, secrets, out); err != nil {
		return fmt.Errorf("restoring into %s: %w", c.Where(node), err)
	}
	c.forget(node)
	return nil
}
