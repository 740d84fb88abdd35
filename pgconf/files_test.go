package pgconf

import (
	"strings"
	"testing"
)

// Issue 18: the settings file's comment on hba_file pointed at "the
// managed rules above", and nothing is above it: it names the file.
func TestConfSaysWhereTheHBARulesAre(t *testing.T) {
	c := Cluster{InitialPrimary: "db", ReplUser: "replicator", WALCap: "1GB", Major: 17, DataDir: "/var/lib/postgresql/data",
		ConfFile: "/understudy/postgresql.conf", HBAFile: "/understudy/pg_hba.conf", ContainerDefaults: true,
		Nodes: []Node{{Name: "db", Addr: "10.0.0.2", Port: 5432}, {Name: "db-replica", Addr: "10.0.0.3", Port: 5432}}}
	conf := Conf(c)
	i := strings.Index(conf, "\nhba_file = '/understudy/pg_hba.conf'\n")
	if i < 0 {
		t.Fatalf("no hba_file line:\n%s", conf)
	}
	comment := conf[strings.LastIndex(conf[:i], "\n# ")+1 : i]
	if strings.Contains(comment, "above") || !strings.Contains(comment, "pg_hba.conf beside this file") {
		t.Errorf("the comment on hba_file: %q", comment)
	}
}
