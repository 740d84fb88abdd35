package remote_test

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/remote"
)

var update = flag.Bool("update", false, "rewrite testdata/kamal-argv.txt")

// The argv of every step that runs the kamal executable: verbs and
// accessory names as Kamal's CLI takes them (lib/kamal/cli/accessory.rb),
// -c only for a non-default config, -d for a destination.
func TestKamalArgvGolden(t *testing.T) {
	var b strings.Builder
	for _, k := range []remote.Kamal{{}, {Destination: "staging"}, {ConfigFile: "config/deploy.eu.yml", Destination: "production"}} {
		b.WriteString("# " + strings.TrimSpace("config="+k.ConfigFile+" destination="+k.Destination) + "\n")
		for _, argv := range [][]string{
			k.Boot("db-replica"), k.Reboot("db"), k.LockStatus(),
		} {
			b.WriteString(strings.Join(argv, " ") + "\n")
		}
	}
	got := b.String()
	path := "testdata/kamal-argv.txt"
	if *update {
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("argv changed (go test ./remote -update, then review):\n%s", got)
	}
}

// An IPv6 node is named [addr]:port in messages (issue 19 item 7).
func TestWhereBracketsIPv6(t *testing.T) {
	c := &remote.Control{Nodes: map[string]remote.Node{"db": {Host: "192.0.2.2", Addr: "fd00::20", Port: 5432}}}
	if w := c.Where("db"); !strings.Contains(w, "PostgreSQL at [fd00::20]:5432;") {
		t.Errorf("Where = %q", w)
	}
}
