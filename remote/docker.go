package remote

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/pgops"
)

// Container steps run with docker over the SSH connection understudy
// already holds, never through the kamal executable: each kamal call costs
// a Ruby start-up and a login of its own, and Kamal's exec and boot log in
// to the registry first, which a role change must never depend on. The
// commands Kamal itself has for a verb (start, stop) are Kamal's own
// (kamal.AccessoryCommands); the rest are built here. All pure.

// inspectFormat prints what the steps below need from `docker container
// inspect`, one item per line: state, image id, network, PGDATA. Only the
// PGDATA entry of the container's env is printed (the env holds secrets).
const inspectFormat = `{{.State.Status}}
{{.Image}}
{{.HostConfig.NetworkMode}}
{{range .Config.Env}}{{if eq (index (split . "=") 0) "PGDATA"}}{{.}}{{end}}{{end}}`

// InspectCmd reads a container's state, image, network and PGDATA.
func InspectCmd(container string) string {
	return "docker container inspect --format " + shq(inspectFormat) + " " + shq(container)
}

// ContainerInfo is what InspectCmd printed.
type ContainerInfo struct {
	State   string // created, running, paused, restarting, exited, dead
	Image   string // the image id: what runs again without a registry
	Network string
	PGDATA  string
}

// errNoContainer is what inspect says when there is none.
var errNoContainer = errors.New("no such container")

// ParseInspect reads InspectCmd's output.
func ParseInspect(out string) (ContainerInfo, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 3 {
		return ContainerInfo{}, fmt.Errorf("docker inspect output not understood: %.200q", out)
	}
	ci := ContainerInfo{State: strings.TrimSpace(lines[0]), Image: strings.TrimSpace(lines[1]), Network: strings.TrimSpace(lines[2])}
	if len(lines) > 3 {
		ci.PGDATA = strings.TrimPrefix(strings.TrimSpace(lines[3]), "PGDATA=")
	}
	if ci.State == "" || ci.Image == "" {
		return ContainerInfo{}, fmt.Errorf("docker inspect output not understood: %.200q", out)
	}
	return ci, nil
}

// ReadControlCmd copies global/pg_control out of a container, running or
// stopped, as a tar stream on stdout (docker cp needs no process in it).
func ReadControlCmd(container, pgdata string) string {
	return "docker cp " + shq(container+":"+strings.TrimRight(pgdata, "/")+"/global/pg_control") + " -"
}

// RunScriptCmd runs a script, read from stdin, in a fresh container made
// from the accessory's own container: its image by id (already on the
// server: nothing is pulled, so no registry is needed), its volumes
// (--volumes-from: the very mounts the node runs with), its network and
// Kamal's env file for it (the secrets, e.g. REPLICATION_PASSWORD), and its
// PGDATA. The image's entrypoint passes the unknown command through, as for
// `kamal accessory exec`; the script runs as the postgres user.
func RunScriptCmd(container string, ci ContainerInfo, envFile string) string {
	w := []string{"docker", "run", "--rm", "-i", "--volumes-from", shq(container)}
	if ci.Network != "" && ci.Network != "default" {
		w = append(w, "--network", shq(ci.Network))
	}
	if envFile != "" {
		w = append(w, "--env-file", shq(envFile))
	}
	if ci.PGDATA != "" {
		w = append(w, "--env", shq("PGDATA="+ci.PGDATA))
	}
	w = append(w, shq(ci.Image), "sh", "-c", shq(`cat >/tmp/understudy.sh && if command -v gosu >/dev/null; then exec gosu postgres sh /tmp/understudy.sh; else exec su-exec postgres sh /tmp/understudy.sh; fi`))
	return strings.Join(w, " ")
}

// shq quotes a word for the remote shell.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ParseControlTar reads pg_control out of docker cp's tar stream.
func ParseControlTar(b []byte) (pgops.ControlData, error) {
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			return pgops.ControlData{}, fmt.Errorf("docker cp gave no pg_control: %w", err)
		}
		if h.Typeflag != tar.TypeReg || !strings.HasSuffix(h.Name, "pg_control") {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(tr, 64<<10))
		if err != nil {
			return pgops.ControlData{}, err
		}
		return pgops.ParseControlFile(data)
	}
}

// containerOf is the accessory's container and its commands.
func (c *Control) containerOf(node string) (Node, error) {
	n, ok := c.Nodes[node]
	if !ok {
		return Node{}, fmt.Errorf("no accessory %q in the plan", node)
	}
	if n.Commands == nil {
		return Node{}, fmt.Errorf("accessory %q: its Kamal commands are unknown", node)
	}
	return n, nil
}

// inspect reads the node's container; errNoContainer when there is none.
// What cannot change while the container exists (image, network, PGDATA)
// is kept, so the steps between a switchover's stop and its promote
// (reading the control file) need no inspect of their own.
func (c *Control) inspect(ctx context.Context, node string) (ContainerInfo, error) {
	n, err := c.containerOf(node)
	if err != nil {
		return ContainerInfo{}, err
	}
	ci, err := c.inspectContainer(ctx, n.Host, n.Commands.ServiceName)
	if err != nil {
		c.forget(node)
		if errors.Is(err, errNoContainer) {
			return ContainerInfo{}, fmt.Errorf("%s: %w", c.Where(node), errNoContainer)
		}
		return ContainerInfo{}, fmt.Errorf("reading %s's container with docker: %w", c.Where(node), err)
	}
	c.mu.Lock()
	if c.known == nil {
		c.known = map[string]ContainerInfo{}
	}
	c.known[node] = ci
	c.mu.Unlock()
	return ci, nil
}

// inspectContainer reads a container on a server; errNoContainer when
// there is none.
func (c *Control) inspectContainer(ctx context.Context, host, name string) (ContainerInfo, error) {
	out, err := c.Shell.Exec(ctx, host, InspectCmd(name), nil)
	if err != nil {
		if errors.Is(err, ErrRemoteCommand) && strings.Contains(strings.ToLower(err.Error()), "no such") {
			return ContainerInfo{}, errNoContainer
		}
		return ContainerInfo{}, err
	}
	return ParseInspect(string(out))
}

// knownContainer is the last inspect of the node's container, if any.
func (c *Control) knownContainer(ctx context.Context, node string) (ContainerInfo, error) {
	c.mu.Lock()
	ci, ok := c.known[node]
	c.mu.Unlock()
	if ok {
		return ci, nil
	}
	return c.inspect(ctx, node)
}

// forget drops what was known of a node's container (it was re-created).
func (c *Control) forget(node string) {
	c.mu.Lock()
	delete(c.known, node)
	c.mu.Unlock()
}

// Running reports whether the accessory's container runs.
func (c *Control) Running(ctx context.Context, node string) (bool, error) {
	ci, err := c.inspect(ctx, node)
	if errors.Is(err, errNoContainer) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return ci.State == "running" || ci.State == "restarting", nil
}

// Start starts the node's container: `docker container start` (Kamal's
// accessory start) when one exists, running or not; `kamal accessory
// boot` (which uploads the files and env first) only when none does. Kamal's
// boot skips a server where any container exists, stopped ones included,
// so booting a stopped node would do nothing.
func (c *Control) Start(ctx context.Context, node string) error {
	ci, err := c.inspect(ctx, node)
	switch {
	case errors.Is(err, errNoContainer):
		c.forget(node)
		_, err = c.Runner.Run(ctx, c.Kamal.Boot(node))
		return err
	case err != nil:
		return err
	case ci.State == "running" || ci.State == "restarting":
		return nil
	}
	n, _ := c.containerOf(node)
	if _, err := c.Shell.Exec(ctx, n.Host, n.Commands.Start(), nil); err != nil {
		return fmt.Errorf("starting %s: %w", c.Where(node), err)
	}
	return nil
}

// Stop stops the container as Kamal's accessory stop does (docker sends
// the image's stop signal, SIGINT: a fast shutdown, and waits up to the
// container's stop timeout): never postgres inside it, which Docker's
// restart policy would bring back.
func (c *Control) Stop(ctx context.Context, node string) error {
	n, err := c.containerOf(node)
	if err != nil {
		return err
	}
	if _, err := c.Shell.Exec(ctx, n.Host, n.Commands.Stop(), nil); err != nil {
		return fmt.Errorf("stopping %s: %w", c.Where(node), err)
	}
	return nil
}

// Run runs a role script in a fresh container made from the node's own
// (RunScriptCmd): it works while the node is stopped and needs no registry.
func (c *Control) Run(ctx context.Context, node, script string) (string, error) {
	ci, err := c.inspect(ctx, node)
	if err != nil {
		return "", err
	}
	n, _ := c.containerOf(node)
	out, err := c.Shell.Exec(ctx, n.Host, RunScriptCmd(n.Commands.ServiceName, ci, n.Commands.SecretsPath()), strings.NewReader(script))
	if err != nil {
		return string(out), fmt.Errorf("running a script next to %s: %w", c.Where(node), err)
	}
	return string(out), nil
}

// ReadControl copies the node's pg_control out of its container (running
// or stopped) and reads it (live.ControlReader).
func (c *Control) ReadControl(ctx context.Context, node string) (pgops.ControlData, error) {
	ci, err := c.knownContainer(ctx, node)
	if err != nil {
		return pgops.ControlData{}, err
	}
	if ci.PGDATA == "" {
		return pgops.ControlData{}, fmt.Errorf("%s's container has no PGDATA in its env (the postgres image sets it)", c.Where(node))
	}
	n, _ := c.containerOf(node)
	out, err := c.Shell.Exec(ctx, n.Host, ReadControlCmd(n.Commands.ServiceName, ci.PGDATA), nil)
	if err != nil {
		return pgops.ControlData{}, err
	}
	return ParseControlTar(out)
}

// PrepareRoleChange proves on each node's server, before a role change
// stops anything, every container step it may take afterwards: docker
// answers over SSH, the container exists, its control file can be read,
// and a fresh container with its volumes runs a script as postgres and
// reads the cluster (live.RoleChangePreparer). None of them needs the
// registry, so a rollback cannot fail for want of one.
func (c *Control) PrepareRoleChange(ctx context.Context, nodes ...string) error {
	for _, node := range nodes {
		ci, err := c.inspect(ctx, node)
		if errors.Is(err, errNoContainer) {
			return fmt.Errorf("%s has no container (kamal accessory boot %s makes it)", c.Where(node), node)
		}
		if err != nil {
			return err
		}
		if ci.State == "running" {
			if _, err := c.ReadControl(ctx, node); err != nil {
				return fmt.Errorf("reading %s's control file with docker cp: %w", c.Where(node), err)
			}
		}
		out, err := c.Run(ctx, node, `test -s "$PGDATA/PG_VERSION" && pg_controldata "$PGDATA" >/dev/null && echo understudy-ok`)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "understudy-ok") {
			return fmt.Errorf("a fresh container next to %s could not read the cluster: %s", c.Where(node), strings.TrimSpace(lastLines(out, 3)))
		}
	}
	return nil
}

// NodeCommands builds each node's Kamal commands from the config.
func NodeCommands(cfg *kamal.Config, nodes []string) (map[string]*kamal.AccessoryCommands, error) {
	out := map[string]*kamal.AccessoryCommands{}
	for _, n := range nodes {
		ac, err := cfg.Commands(n)
		if err != nil {
			return nil, err
		}
		out[n] = ac
	}
	return out, nil
}
