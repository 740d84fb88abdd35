package remote

import (
	"context"
	"fmt"

	"github.com/understudy-dev/understudy/kamal"
)

// accessory is what apply does the same way to each of understudy's own
// accessories (the backup agent, the node agents, the witness, the
// router): the understudy binary installed into the directory deploy.yml
// mounts at binDir, and the containers booted and rebooted through kamal,
// or started with the start command Kamal would run.
type accessory struct {
	c      *Control
	name   string
	hosts  []string
	cmds   *kamal.AccessoryCommands
	binDir string
	reinit string // the init command that writes the mount again
}

// binHostDir is the servers' directory behind binDir, as Kamal names it.
func (a accessory) binHostDir() (string, error) {
	for _, d := range a.cmds.Directories {
		if d.ContainerPath == a.binDir {
			return d.HostPath, nil
		}
	}
	return "", fmt.Errorf("accessory %s mounts nothing at %s: re-run `%s`", a.name, a.binDir, a.reinit)
}

// installBinary copies the understudy build for each server's machine to
// it.
func (a accessory) installBinary(ctx context.Context) error {
	dir, err := a.binHostDir()
	if err != nil {
		return err
	}
	for _, h := range a.hosts {
		if _, err := a.c.InstallUnderstudy(ctx, h, dir); err != nil {
			return err
		}
	}
	return nil
}

// boot is `kamal accessory boot` (it boots where no container is).
func (a accessory) boot(ctx context.Context) error {
	_, err := a.c.Runner.Run(ctx, a.c.Kamal.Boot(a.name))
	return err
}

// reboot is `kamal accessory reboot`.
func (a accessory) reboot(ctx context.Context) error {
	_, err := a.c.Runner.Run(ctx, a.c.Kamal.Reboot(a.name))
	return err
}

// start is Kamal's accessory start on every server.
func (a accessory) start(ctx context.Context) error {
	for _, h := range a.hosts {
		if _, err := a.c.Shell.Exec(ctx, h, a.cmds.Start(), nil); err != nil {
			return fmt.Errorf("starting %s on %s: %w", a.name, h, err)
		}
	}
	return nil
}
