package apptest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/understudy-dev/understudy/internal/debimage"
	"github.com/understudy-dev/understudy/internal/dockertest"
)

// ImageTag is the app image's name on a test server.
const ImageTag = "understudy-app:test"

// imagePackages are Debian bookworm's packages for every writer.
var imagePackages = []string{"ruby", "ruby-activerecord", "ruby-pg", "python3", "python3-psycopg2", "python3-psycopg",
	"nodejs", "php-cli", "php-pgsql"}

// In the image: the scripts, node_modules beside them (node finds them by
// walking up from the script), the pgx writer; each container gets its
// writer's directory (config files, the attempts it logs) at /app/run.
const (
	imageScripts = "/app/writers"
	imagePGX     = "/app/bin/pgx-writer"
	imageRun     = "/app/run"
)

// ImageTar returns a `docker load` tarball of understudy-app:test: Debian
// bookworm with the writers' packages (built once per machine and cached
// in dockertest.CacheDir), and the writers, node-postgres and
// postgres.js from the npm registry (npm ci, cached), and the pgx writer
// built here, as a top layer. Load it with dockertest's Server.Docker(t,
// "load", "-i", tar).
func ImageTar(ctx context.Context, logf func(string, ...any)) (string, error) {
	work, err := os.MkdirTemp("", "apptest-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	pgxPath, err := BuildPGXWriter(ctx, work)
	if err != nil {
		return "", err
	}
	mods, err := NodeModules(ctx, logf)
	if err != nil {
		return "", err
	}
	files, err := imageFiles(pgxPath, mods)
	if err != nil {
		return "", err
	}
	return debimage.Build(ctx, debimage.Recipe{
		Name: "app", Tag: ImageTag, Suite: "bookworm", Packages: imagePackages, Files: files,
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"},
		WorkingDir: "/app", StopSignal: "SIGTERM",
	}, dockertest.CacheDir(), logf)
}

// imageFiles: the scripts, the node modules (regular files only: npm's
// .bin links are not needed), the pgx writer.
func imageFiles(pgxPath, nodeModules string) ([]debimage.File, error) {
	src, err := scripts()
	if err != nil {
		return nil, err
	}
	var files []debimage.File
	for name, b := range src {
		files = append(files, debimage.File{Path: imageScripts + "/" + name, Mode: 0o644, Body: b})
	}
	b, err := os.ReadFile(pgxPath)
	if err != nil {
		return nil, err
	}
	files = append(files, debimage.File{Path: imagePGX, Mode: 0o755, Body: b})
	err = filepath.WalkDir(nodeModules, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(nodeModules, p)
		body, err := os.ReadFile(p)
		files = append(files, debimage.File{Path: imageScripts + "/node_modules/" + filepath.ToSlash(rel), Mode: 0o644, Body: body})
		return err
	})
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, err
}

// ContainerRunner runs writers as containers of understudy-app:test on a
// dockerd (a test server's: dockertest.Server.DockerHost()), on a network
// (Kamal's "kamal", where accessories are reached by name). Each writer
// gets a directory under Dir, mounted in its container: its config files,
// and the file its attempts go to (stdout; stderr stays in docker logs).
type ContainerRunner struct {
	DockerHost string
	Network    string // "" is Docker's default bridge
	Dir        string
}

var _ Runner = (*ContainerRunner)(nil)

// Start runs one writer in a container. Secrets reach it as environment
// variables copied from the docker client's own environment (`-e NAME`),
// never in argv.
func (r *ContainerRunner) Start(ctx context.Context, w Writer) (Proc, error) {
	dir := filepath.Join(r.Dir, w.name())
	env, err := w.configure(dir, imageRun)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 3)
	rand.Read(b)
	name := "apptest-" + w.name() + "-" + hex.EncodeToString(b)
	argv := RunArgv(name, r.Network, dir, env, Argv(w.Client, imageScripts, imagePGX, nil))
	c := &container{r: r, name: name, logPath: filepath.Join(dir, attemptsFile)}
	if out, err := c.docker(ctx, env, argv...); err != nil {
		return nil, fmt.Errorf("docker run of the %s writer: %v\n%s", w.name(), err, out)
	}
	return c, nil
}

// RunArgv is the `docker run` command of one writer: detached, named, on
// the network, its directory mounted, every variable passed by name only,
// its stdout sent to the attempts file by a shell that then becomes the
// writer (so the writer is PID 1 and gets docker stop's SIGTERM). Pure.
func RunArgv(name, network, dir string, env map[string]string, cmd []string) []string {
	argv := []string{"run", "-d", "--name", name, "--label", "understudy-apptest=1"}
	if network != "" {
		argv = append(argv, "--network", network)
	}
	argv = append(argv, "-v", dir+":"+imageRun)
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		argv = append(argv, "-e", k)
	}
	argv = append(argv, ImageTag, "/bin/sh", "-c", `exec "$@" >>`+imageRun+"/"+attemptsFile, "writer")
	return append(argv, cmd...)
}

type container struct {
	r        *ContainerRunner
	name     string
	logPath  string
	stopOnce sync.Once
	res      StopResult
	err      error
}

// docker runs the client against the runner's dockerd, with env added to
// its environment; it returns stdout, or stdout and stderr on failure.
func (c *container) docker(ctx context.Context, env map[string]string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+c.r.DockerHost)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func (c *container) Log(ctx context.Context, from int64) ([]byte, error) {
	return readFrom(c.logPath, from)
}

func (c *container) Stderr(ctx context.Context) string {
	var errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", "logs", c.name)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+c.r.DockerHost)
	cmd.Stdout, cmd.Stderr = &errb, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("(docker logs %s: %v) %s", c.name, err, tailBytes(errb.String(), 500))
	}
	return tailBytes(errb.String(), 2000)
}

// Stop: `docker stop -t 2` sends the image's stop signal (SIGTERM) and
// SIGKILL 2 s later; exit code 137 without the OOM killer is that kill.
func (c *container) Stop(ctx context.Context) (StopResult, error) {
	c.stopOnce.Do(func() {
		state, err := c.docker(ctx, nil, "inspect", "-f", "{{.State.Running}}", c.name)
		if err != nil {
			c.err = fmt.Errorf("docker inspect %s: %v: %s", c.name, err, state)
			return
		}
		early := strings.TrimSpace(state) != "true"
		if !early {
			if out, err := c.docker(ctx, nil, "stop", "-t", strconv.Itoa(int(StopGrace.Seconds())), c.name); err != nil {
				c.err = fmt.Errorf("docker stop %s: %v: %s", c.name, err, out)
				return
			}
		}
		out, err := c.docker(ctx, nil, "inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", c.name)
		if err != nil {
			c.err = fmt.Errorf("docker inspect %s: %v: %s", c.name, err, out)
			return
		}
		f := strings.Fields(out)
		if len(f) != 2 {
			c.err = fmt.Errorf("docker inspect %s: unexpected %q", c.name, out)
			return
		}
		c.res = StopResult{ExitedEarly: early, Exit: "exit code " + f[0]}
		if f[1] == "true" {
			c.res.Exit += " (killed by the OOM killer)"
		} else if f[0] == "137" && !early {
			c.res.Hung, c.res.Exit = true, "killed after "+StopGrace.String()
		}
	})
	return c.res, c.err
}
