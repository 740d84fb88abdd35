package remote

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/live"
)

// A node's boot script is a files: entry of its accessory, which Kamal
// uploads only on accessory boot and reboot; the container runs it at
// every start. When init changes it (failover turned on: the node starts
// read-only), the server keeps the old one until the next reboot, and a
// restart by Docker's restart policy would still run the old one. apply
// puts the new one in place without touching the running container.

var _ live.BootScriptRefresher = (*Control)(nil)

// bootFile is the node's files: entry mounted at BootPath.
func (c *Control) bootFile(node string) (Node, kamal.UploadedFile, bool) {
	n, ok := c.Nodes[node]
	if !ok || n.Commands == nil || c.BootPath == "" {
		return n, kamal.UploadedFile{}, false
	}
	for _, f := range n.Commands.Files {
		if f.ContainerPath == c.BootPath {
			return n, f, true
		}
	}
	return n, kamal.UploadedFile{}, false
}

func (c *Control) localFile(f kamal.UploadedFile) string {
	if filepath.IsAbs(f.Local) || c.AppDir == "" {
		return f.Local
	}
	return filepath.Join(c.AppDir, f.Local)
}

// BootScriptCurrent reports whether the node's server holds the boot
// script the app has (true when the node has none as a files: entry, or
// the server has no copy yet: Kamal's boot uploads it).
func (c *Control) BootScriptCurrent(ctx context.Context, node string) (bool, error) {
	n, f, ok := c.bootFile(node)
	if !ok {
		return true, nil
	}
	want, err := fileSum(c.localFile(f))
	if err != nil {
		return false, fmt.Errorf("reading %s's boot script: %w (re-run `understudy init`)", node, err)
	}
	out, err := c.Shell.Exec(ctx, n.Host, SumCmd(f.HostPath), nil)
	if err != nil {
		return false, fmt.Errorf("reading %s's boot script on %s: %w", node, n.Host, err)
	}
	got, ok := ParseSums(string(out))[f.HostPath]
	// No copy yet: the node's first boot uploads it.
	return !ok || got == want, nil
}

// RefreshBootScript writes the app's boot script over the server's copy,
// atomically (a new file renamed into place, with the entry's mode): the
// running container keeps the file it mounted, and its next start, by
// apply or by Docker's restart policy, runs the new one.
func (c *Control) RefreshBootScript(ctx context.Context, node string) error {
	n, f, ok := c.bootFile(node)
	if !ok {
		return fmt.Errorf("%s has no boot script among its files", node)
	}
	body, err := os.ReadFile(c.localFile(f))
	if err != nil {
		return fmt.Errorf("reading %s's boot script: %w (re-run `understudy init`)", node, err)
	}
	if _, err := c.Shell.Exec(ctx, n.Host, ReplaceFileCmd(f.HostPath, f.Mode), strings.NewReader(string(body))); err != nil {
		return fmt.Errorf("putting %s's boot script on %s: %w", node, n.Host, err)
	}
	return nil
}

// ReplaceFileCmd writes stdin to p through a temporary file renamed over
// it, with mode (Kamal's default for files: is 755). Pure.
func ReplaceFileCmd(p, mode string) string {
	if mode == "" {
		mode = "755"
	}
	tmp := path.Join(path.Dir(p), "."+path.Base(p)+".new")
	return fmt.Sprintf("mkdir -p %s && cat > %s && chmod %s %s && mv -f %s %s", shq(path.Dir(p)), shq(tmp), shq(mode), shq(tmp), shq(tmp), shq(p))
}
