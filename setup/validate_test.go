package setup

import (
	"strings"
	"testing"
)

// Issue 19 item 7: a cmd written as a YAML list (or mapping) is named as
// what it is, at its line: Kamal takes only a string there and refuses the
// file ("accessories/NAME/cmd: should be a string"). The fix shows the
// list as the one-line string Kamal wants. This holds for any accessory,
// not only the PostgreSQL one, since Kamal refuses the whole file.
func TestCmdAsAListIsNamedAsAList(t *testing.T) {
	ok := app("postgres:16", "10.0.0.2:5432:5432", "postgres")["config/deploy.yml"]
	cases := []struct {
		name, deploy, where string
		want                []string
	}{
		{"the primary's cmd as a block list",
			strings.Replace(ok, "    cmd: postgres\n", "    cmd:\n      - postgres\n      - -c\n      - max_connections=200\n", 1),
			"config/deploy.yml:16", []string{"accessory db's cmd is a list", "Kamal takes only a string", `"accessories/db/cmd: should be a string"`, "cmd: postgres -c max_connections=200"}},
		{"the primary's cmd as a flow list",
			strings.Replace(ok, "    cmd: postgres\n", "    cmd: [postgres, -c, \"log_line_prefix=%m [%p] \"]\n", 1),
			"config/deploy.yml:16", []string{"accessory db's cmd is a list", `cmd: postgres -c 'log_line_prefix=%m [%p] '`}},
		{"another accessory's cmd as a list",
			ok + "  cache:\n    image: redis:7\n    host: 192.0.2.5\n    cmd:\n      - redis-server\n      - --appendonly yes\n",
			"config/deploy.yml:25", []string{"accessory cache's cmd is a list", `"accessories/cache/cmd: should be a string"`, "cmd: redis-server '--appendonly yes'"}},
		{"a cmd as a mapping",
			strings.Replace(ok, "    cmd: postgres\n", "    cmd:\n      run: postgres\n", 1),
			"config/deploy.yml:16", []string{"accessory db's cmd is a mapping", "Kamal takes only a string"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(mapSource{"config/deploy.yml": c.deploy}, replica)
			if err == nil || !strings.HasPrefix(err.Error(), c.where+":") {
				t.Fatalf("got %v, want an error at %s", err, c.where)
			}
			if strings.Contains(err.Error(), `cmd ""`) || strings.Contains(err.Error(), "internal error") {
				t.Errorf("the message does not name what the cmd is: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\ndoes not say %q", err, w)
				}
			}
		})
	}
}
