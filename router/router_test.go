package router_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/router"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func kamalCluster() pgconf.Cluster {
	return pgconf.Cluster{InitialPrimary: "db", Major: 16, ReplUser: "replicator", WALCap: "10GB",
		Nodes: []pgconf.Node{{Name: "db", Addr: "10.0.1.2", Port: 5432}, {Name: "db-replica", Addr: "10.0.1.3", Port: 5432}}}
}

func labCluster() pgconf.Cluster {
	return pgconf.Cluster{InitialPrimary: "db", Major: 15, ReplUser: "replicator", WALCap: "1GB",
		Nodes: []pgconf.Node{{Name: "db", Addr: "127.0.0.1", Port: 40001, AgentPort: 40011}, {Name: "db-replica", Addr: "127.0.0.1", Port: 40002, AgentPort: 40012}}}
}

// TestRenderGolden holds the rendered haproxy.cfg to its golden text and
// has HAProxy itself (Debian's haproxy -c) validate it.
func TestRenderGolden(t *testing.T) {
	cases := map[string]struct {
		c   pgconf.Cluster
		cfg router.Config
	}{
		"kamal.cfg": {kamalCluster(), router.Config{StatsBind: ""}},
		"lab.cfg":   {labCluster(), router.Config{Bind: "127.0.0.1", Port: 40020, ROPort: 40021, StatsBind: "127.0.0.1", StatsPort: 40022, Lag: "10s", Log: "stderr"}},
	}
	haproxy, _ := exec.LookPath("haproxy")
	for name, c := range cases {
		got, err := router.Render(c.c, c.cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		golden := filepath.Join("testdata", name)
		if *update {
			os.WriteFile(golden, []byte(got), 0o644)
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test ./router -update to write it)", err)
		}
		if got != string(want) {
			t.Errorf("%s differs from %s:\n%s", name, golden, got)
		}
		if haproxy == "" {
			t.Log("haproxy is not installed (./scripts/setup-debian installs it): the rendering is not validated by HAProxy")
			continue
		}
		f := filepath.Join(t.TempDir(), name)
		os.WriteFile(f, []byte(got), 0o644)
		out, err := exec.Command(haproxy, "-c", "-f", f).CombinedOutput()
		if err != nil || strings.Contains(string(out), "WARNING") {
			t.Errorf("haproxy -c -f %s: %v\n%s", name, err, out)
		}
	}
	if haproxy == "" {
		t.Skip("haproxy is not installed: ./scripts/setup-debian installs it")
	}
}

func TestRenderRefuses(t *testing.T) {
	for name, cfg := range map[string]router.Config{
		"a lag that is no size": {Lag: "soon"},
		"one port twice":        {Port: 6000, ROPort: 6000},
		"stats on the rw port":  {Port: 6000, StatsPort: 6000},
		"no port":               {Port: 70000},
		"no fall":               {Timing: router.Timing{Inter: 1, FastInter: 1, DownInter: 1, CheckTimeout: 1, Rise: 1}},
	} {
		if _, err := router.Render(kamalCluster(), cfg); err == nil {
			t.Errorf("%s: rendered; want a refusal", name)
		}
	}
	c := kamalCluster()
	c.Nodes[1].Name = "db replica"
	if _, err := router.Render(c, router.Config{}); err == nil {
		t.Errorf("a node name with a space: rendered")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP haproxy_server_status Current status of the server.
# TYPE haproxy_server_status gauge
haproxy_server_status{proxy="understudy_rw",server="db",state="DOWN"} 0
haproxy_server_status{proxy="understudy_rw",server="db",state="UP"} 1
haproxy_server_status{proxy="understudy_rw",server="db-replica",state="DOWN"} 1
haproxy_server_status{proxy="understudy_rw",server="db-replica",state="UP"} 0
haproxy_server_status{proxy="understudy_ro",server="db-replica",state="UP"} 1
haproxy_server_status{proxy="understudy_stats",server="x",state="UP"} 1
haproxy_server_check_status{proxy="understudy_rw",server="db",state="L7OK"} 1
haproxy_server_check_status{proxy="understudy_rw",server="db-replica",state="L7STS"} 0
haproxy_server_check_status{proxy="understudy_rw",server="db-replica",state="L4TOUT"} 1
haproxy_server_current_sessions{proxy="understudy_rw",server="db"} 12
`
	got := router.ParseMetrics(text)
	want := []router.ServerState{
		{Backend: "understudy_rw", Server: "db", Status: "UP", Check: "L7OK", Sessions: 12},
		{Backend: "understudy_rw", Server: "db-replica", Status: "DOWN", Check: "L4TOUT"},
		{Backend: "understudy_ro", Server: "db-replica", Status: "UP"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if w := router.Writes(got); len(w) != 1 || w[0] != "db" {
		t.Errorf("writes go to %v", w)
	}
	if got[1].AgentReached() || !got[0].AgentReached() {
		t.Errorf("AgentReached: %v %v", got[0].AgentReached(), got[1].AgentReached())
	}
}
