package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/internal/dockertest"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/internal/sshtest"
	"github.com/understudy-dev/understudy/lab"
)

// kamalWorld is a Kamal deployment in miniature, with every part real
// except Kamal itself: two servers (network namespaces on a switch), each
// with its own dockerd and sshd sharing a mount namespace whose /root is
// that server's home, the postgres image built from Debian's packages, a
// jump host, this host attached as the operator's laptop, and an app
// directory in the guide's shape (POSTGRES_USER and POSTGRES_DB are
// secrets). `kamal` is internal/kamalstandin, which runs on the servers the
// docker commands Kamal 2.12 runs for each verb.
type kamalWorld struct {
	image      dockertest.Image // postgres:<major>, as deploy.yml names it
	pgBin      string           // the same major's programs on this machine
	netns      *lab.NetNS
	app        string
	standinLog string
	key        sshtest.Key
	servers    map[string]*sshtest.Server    // node name, or "jump"
	docker     map[string]*dockertest.Server // node name
	addr       map[string]string             // node name → its server's address
	knownHosts string
}

const (
	dbPassword = "app-db-password-1"
	dbUser     = "shop"
)

var nodes = []string{"db", "db-replica"}

var imageOnce struct {
	sync.Once
	img dockertest.Image
	tar string
	bin string
	err error
}

var routerImageOnce struct {
	sync.Once
	tar string
	err error
}

// routerImage is the router test image (dockertest.RouterImageTag).
func routerImage(t testing.TB) string {
	t.Helper()
	routerImageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		routerImageOnce.tar, routerImageOnce.err = dockertest.RouterImageTar(ctx, t.Logf)
	})
	if routerImageOnce.err != nil {
		t.Fatalf("building the router test image: %v", routerImageOnce.err)
	}
	return routerImageOnce.tar
}

var agentBinaryOnce struct {
	sync.Once
	path string
	err  error
}

// agentBinary is the static understudy apply puts into the agents' and the
// backup's accessories, built once per test process (the test binary
// itself is not a CLI).
func agentBinary(t testing.TB) string {
	t.Helper()
	agentBinaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "understudy-bin-")
		if err != nil {
			agentBinaryOnce.err = err
			return
		}
		agentBinaryOnce.path = filepath.Join(dir, "understudy")
		c := exec.Command("go", "build", "-o", agentBinaryOnce.path, ".")
		c.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := c.CombinedOutput(); err != nil {
			agentBinaryOnce.err = fmt.Errorf("%v\n%s", err, b)
		}
	})
	if agentBinaryOnce.err != nil {
		t.Fatalf("building a static understudy: %v", agentBinaryOnce.err)
	}
	return agentBinaryOnce.path
}

// testImage is the image the real-Docker tests run (postgres:17 unless
// UNDERSTUDY_TEST_MAJOR says another), built on first use, and the
// directory of the same major's programs for restores on this machine.
func testImage(t testing.TB) (dockertest.Image, string) {
	t.Helper()
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		major, err := dockertest.TestMajor()
		if err == nil {
			imageOnce.img, err = dockertest.ImageFor(major)
		}
		if err == nil {
			imageOnce.tar, err = dockertest.ImageTar(ctx, imageOnce.img, t.Logf)
		}
		if err == nil {
			imageOnce.bin, err = dockertest.PGBinDir(ctx, major, t.Logf)
		}
		imageOnce.err = err
	})
	if imageOnce.err != nil {
		t.Fatalf("building the test image: %v", imageOnce.err)
	}
	// A restore on this machine (restore --into DIR) runs the cluster's
	// major: Debian's when installed, else the image's own programs.
	t.Setenv("UNDERSTUDY_PG_BINDIR", imageOnce.bin)
	return imageOnce.img, imageOnce.tar
}

// worldOptions: jump puts a jump host in front of the servers; plain
// boots db before init, as the guide's app runs it; app gives the app (the
// web role, and so the router) a server of its own, named "app"; failover
// (with app) runs init with --failover and the witness on the app server.
type worldOptions struct{ jump, plain, app, failover bool }

func newKamalWorld(t testing.TB, o worldOptions) *kamalWorld {
	sshtest.Skip(t)
	dockertest.Skip(t)
	img, tar := testImage(t)
	rtar := routerImage(t)
	t.Setenv("UNDERSTUDY_AGENT_BINARY", agentBinary(t))
	ctx := context.Background()
	// Each world plugs this host into its switch at the same address: one
	// world at a time on this machine, across test processes too.
	release, err := netutil.HostLock(ctx, "kamal-world")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	b := make([]byte, 2)
	rand.Read(b)
	servers := nodes
	if o.app {
		servers = append(append([]string(nil), nodes...), "app")
	}
	w := &kamalWorld{netns: &lab.NetNS{ID: hex.EncodeToString(b), Nodes: len(servers)}, image: img, pgBin: os.Getenv("UNDERSTUDY_PG_BINDIR"),
		servers: map[string]*sshtest.Server{}, docker: map[string]*dockertest.Server{}, addr: map[string]string{}}
	if err := w.netns.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.netns.Down(context.Background()) })
	for _, c := range w.netns.HostCommands() {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	dir := t.TempDir()
	w.key = sshtest.NewKey(t, dir, "id_test")
	serverBin := filepath.Join(dir, "server-bin")
	os.MkdirAll(serverBin, 0o755)
	os.WriteFile(filepath.Join(serverBin, "docker"), []byte(dockertest.RegistryStandIn), 0o755)

	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, n := range servers {
		w.addr[n] = w.netns.Addr(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds := dockertest.StartServer(t, n, w.netns.Path(i), i, tar)
			ds.Load(t, rtar)
			mu.Lock()
			w.docker[n] = ds
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var known []string
	for i, n := range servers {
		s := sshtest.StartWith(t, dir, sshtest.Options{NetNS: w.netns.Path(i), MountNS: w.docker[n].MountNS, IP: w.addr[n], Port: 2222,
			SetEnv: []string{"DOCKER_HOST=" + w.docker[n].DockerHost(), "PATH=" + serverBin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
			w.key.Authorized)
		w.servers[n] = s
		known = append(known, s.KnownHost)
	}
	if o.jump {
		s := sshtest.Start(t, dir, "/run/netns/understudy-"+w.netns.ID+"-out", w.netns.OutsiderAddr(), 2222, w.key.Authorized)
		w.servers["jump"] = s
		known = append(known, s.KnownHost)
	}
	w.knownHosts = filepath.Join(dir, "known_hosts")
	os.WriteFile(w.knownHosts, []byte(strings.Join(known, "\n")+"\n"), 0o600)

	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "kamal"), "github.com/understudy-dev/understudy/internal/kamalstandin").CombinedOutput(); err != nil {
		t.Fatalf("building the kamal stand-in: %v\n%s", err, out)
	}
	w.standinLog = filepath.Join(dir, "kamal.log")
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("UNDERSTUDY_STANDIN_LOG", w.standinLog)
	t.Setenv("UNDERSTUDY_KNOWN_HOSTS", w.knownHosts)
	t.Setenv("TEST_DB_PASSWORD", dbPassword)
	t.Setenv("TEST_REGISTRY_PASSWORD", "registry-password-1")
	t.Setenv("REPLICATION_PASSWORD", "repl-password-for-kamal-test")
	t.Setenv("MONITOR_PASSWORD", "monitor-password-for-kamal-test")

	// The app, as a user has it before understudy: the guide's shape.
	w.app = filepath.Join(dir, "app")
	os.MkdirAll(filepath.Join(w.app, "config"), 0o755)
	os.MkdirAll(filepath.Join(w.app, ".kamal"), 0o755)
	proxy := ""
	if o.jump {
		proxy = "\n  proxy: root@" + w.servers["jump"].Addr
	}
	db := w.addr["db"]
	web := db
	if o.app {
		web = w.addr["app"]
	}
	deploy := `service: shop
image: shop/app
servers:
  web:
    - ` + web + `
registry:
  server: registry.invalid
  username: shop
  password:
    - KAMAL_REGISTRY_PASSWORD
ssh:
  user: root
  port: 2222
  keys_only: true
  keys:
    - ` + w.key.Path + proxy + `
accessories:
  db:
    image: ` + img.Tag + `
    host: ` + db + `
    port: ` + db + `:5432:5432
    env:
      secret:
        - POSTGRES_DB
        - POSTGRES_USER
        - POSTGRES_PASSWORD
    directories:
      - data:` + img.Volume + `
`
	os.WriteFile(filepath.Join(w.app, "config", "deploy.yml"), []byte(deploy), 0o644)
	os.WriteFile(filepath.Join(w.app, ".kamal", "secrets"), []byte("KAMAL_REGISTRY_PASSWORD=$TEST_REGISTRY_PASSWORD\nPOSTGRES_DB=shop_production\nPOSTGRES_USER="+dbUser+"\nPOSTGRES_PASSWORD=$TEST_DB_PASSWORD\n"), 0o644)
	if o.plain {
		w.kamal(t, "accessory", "boot", "db")
		w.waitSQL(t, "db", 60*time.Second)
	}
	args := w.initArgs()
	if o.failover {
		if !o.app {
			t.Fatal("worldOptions: failover needs the app server (its witness)")
		}
		args = append(args, w.failoverFlags(t)...)
	}
	if out, code := runCLI(t, args...); code != 0 {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	return w
}

// initArgs is the world's init: the standby on db-replica's server, the
// router's test image.
func (w *kamalWorld) initArgs() []string {
	r := w.addr["db-replica"]
	return []string{"init", "--app", w.app, "--replica-host", r, "--replica-ip", r, "--router-image", dockertest.RouterImageTag}
}

// failoverFlags are init's flags that turn automatic failover on, with
// the witness on the app server; FAILOVER_SECRET (which .kamal/secrets
// references) is made once per world.
func (w *kamalWorld) failoverFlags(t testing.TB) []string {
	t.Helper()
	if os.Getenv(failover.SecretName) == "" {
		t.Setenv(failover.SecretName, failover.NewSecret())
	}
	return []string{"--failover", "--witness-host", w.addr["app"]}
}

// kamal runs the stand-in in the app directory, as a user would run kamal.
func (w *kamalWorld) kamal(t testing.TB, args ...string) string {
	t.Helper()
	c := exec.Command("kamal", args...)
	c.Dir = w.app
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("kamal %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (w *kamalWorld) kamalCalls() []string {
	b, _ := os.ReadFile(w.standinLog)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// state is the node's container as Docker on its server sees it.
func (w *kamalWorld) state(t testing.TB, node string) string {
	t.Helper()
	return w.containerState(t, node, "shop-"+node)
}

// containers lists every container on every server with its state and id,
// to prove that something changed nothing.
func (w *kamalWorld) containers(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, n := range nodes {
		ids := strings.Fields(w.docker[n].Docker(t, "ps", "-a", "-q"))
		b.WriteString(n + ":")
		if len(ids) > 0 {
			b.WriteString(" " + w.docker[n].Docker(t, append([]string{"container", "inspect", "--format", "{{.Id}} {{.Name}} {{.State.Status}} started {{.State.StartedAt}}"}, ids...)...))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// conn connects to a node as the app's database user, straight to its
// published port from this host (the laptop is on the servers' switch).
func (w *kamalWorld) conn(t testing.TB, node string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig("host=" + w.addr[node] + " port=5432 dbname=postgres sslmode=disable connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = dbUser, dbPassword
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connecting to %s: %v", node, err)
	}
	return c
}

func (w *kamalWorld) query(t testing.TB, node, sql string) string {
	t.Helper()
	c := w.conn(t, node)
	defer c.Close(context.Background())
	var s string
	if err := c.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s on %s: %v", sql, node, err)
	}
	return s
}

func (w *kamalWorld) exec(t testing.TB, node string, sqls ...string) {
	t.Helper()
	c := w.conn(t, node)
	defer c.Close(context.Background())
	for _, s := range sqls {
		if _, err := c.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s on %s: %v", s, node, err)
		}
	}
}

func (w *kamalWorld) waitSQL(t testing.TB, node string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		cfg, _ := pgx.ParseConfig("host=" + w.addr[node] + " port=5432 dbname=postgres sslmode=disable connect_timeout=2")
		cfg.User, cfg.Password = dbUser, dbPassword
		if c, err := pgx.ConnectConfig(context.Background(), cfg); err == nil {
			c.Close(context.Background())
			return
		} else if time.Now().After(deadline) {
			logs, _ := exec.Command("docker", "-H", w.docker[node].DockerHost(), "logs", "--tail", "30", "shop-"+node).CombinedOutput()
			t.Fatalf("%s does not answer after %s: %v\n%s", node, timeout, err, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
