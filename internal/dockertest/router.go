package dockertest

import (
	"context"
	"os/exec"
	"testing"

	"github.com/understudy-dev/understudy/internal/debimage"
)

// RouterImageTag is the test router image: the official haproxy image's
// shape (the config at /usr/local/etc/haproxy/haproxy.cfg, haproxy in the
// foreground as PID 1, SIGUSR1 to stop) with Debian's haproxy package; it
// runs as root, where the official image runs as user haproxy. Its tag
// says what it is: init is given it with --router-image, as a user would
// give theirs.
const RouterImageTag = "understudy-test/haproxy:2.6"

// routerEntrypoint plays the official image's docker-entrypoint.sh (as its
// Docker Hub page documents it): a first argument that is a flag runs
// haproxy with it; haproxy runs in master-worker mode in the foreground.
const routerEntrypoint = `#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then set -- haproxy "$@"; fi
if [ "$1" = haproxy ]; then shift; set -- haproxy -W -db "$@"; fi
exec "$@"
`

// RouterImageTar returns a `docker load` tarball of the router image,
// building it on first use on this machine (debimage: debootstrap and
// apt-get, cached).
func RouterImageTar(ctx context.Context, logf func(string, ...any)) (string, error) {
	return debimage.Build(ctx, debimage.Recipe{
		Name: "haproxy", Tag: RouterImageTag, Suite: "bookworm", Packages: []string{"haproxy"},
		Files:      []debimage.File{{Path: "/usr/local/bin/docker-entrypoint.sh", Mode: 0o755, Body: []byte(routerEntrypoint)}},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Entrypoint: []string{"docker-entrypoint.sh"},
		Cmd:        []string{"haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"},
		WorkingDir: "/var/lib/haproxy",
		StopSignal: "SIGUSR1",
	}, CacheDir(), logf)
}

// Load loads one more image tarball into the server's dockerd.
func (s *Server) Load(t testing.TB, tar string) {
	t.Helper()
	if out, err := exec.Command("docker", "-H", s.DockerHost(), "load", "-q", "-i", tar).CombinedOutput(); err != nil {
		t.Fatalf("docker load %s on %s: %v\n%s", tar, s.Name, err, out)
	}
}
