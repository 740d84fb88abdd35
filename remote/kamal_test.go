package remote_test

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/remote"
)

var update = flag.Bool("update", false, "rewrite testdata/kamal-argv.txt")

// The argv of every Kamal step, against research/kamal.md §2: verbs and
// accessory names as Kamal's CLI takes them, -c only for a non-default
// config, -d for a destination, and exec's script in a form the remote
// shell cannot misread (Kamal joins the words and does not escape them).
func TestKamalArgvGolden(t *testing.T) {
	var b strings.Builder
	for _, k := range []remote.Kamal{{}, {Destination: "staging"}, {ConfigFile: "config/deploy.eu.yml", Destination: "production"}} {
		b.WriteString("# " + strings.TrimSpace("config="+k.ConfigFile+" destination="+k.Destination) + "\n")
		for _, argv := range [][]string{
			k.Boot("db-replica"), k.Reboot("db"), k.Start("db"), k.Stop("db"), k.Details("db"),
			k.Logs("db", 50), k.LockStatus(), k.Exec("db", "pg_controldata \"$PGDATA\"\n"),
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
	// Each exec command is one argv word whose only quotes are the outer ones.
	cmd := remote.Kamal{}.Exec("db", "echo 'it''s' \"$X\" `y` $(z); exit 1")
	last := cmd[len(cmd)-1]
	if strings.Count(last, "'") != 2 || strings.ContainsAny(strings.Trim(last[strings.Index(last, "'")+1:strings.LastIndex(last, "'")], "|&;>/-. "), "\"`$(") {
		t.Errorf("exec word can be misread by a shell: %s", last)
	}
}

func TestParseDetails(t *testing.T) {
	header := "CONTAINER ID   IMAGE         COMMAND                  CREATED         STATUS         PORTS     NAMES\n"
	cases := []struct {
		out             string
		exists, running bool
	}{
		{header, false, false},
		{"Accessory db Host: 10.0.1.2\n" + header + "0123456789ab   postgres:17   \"docker-entrypoint.s…\"   5 minutes ago   Up 5 minutes             app-db\n", true, true},
		{header + "0123456789ab   postgres:17   \"docker-entrypoint.s…\"   5 minutes ago   Exited (0) 3 seconds ago             app-db\n", true, false},
	}
	for i, c := range cases {
		e, r, _ := remote.ParseDetails(c.out)
		if e != c.exists || r != c.running {
			t.Errorf("case %d: exists=%v running=%v", i, e, r)
		}
	}
}
