package kamal

import (
	"strings"
	"testing"
)

func TestEvalRuby(t *testing.T) {
	env := func(k string) (string, bool) {
		v, ok := map[string]string{"SET": "v1", "EMPTY": ""}[k]
		return v, ok
	}
	cases := []struct {
		code, want string
		ok         bool
	}{
		{`ENV["SET"]`, "v1", true},
		{`ENV['SET']`, "v1", true},
		{`ENV["UNSET"]`, "", false},
		{`ENV.fetch("SET")`, "v1", true},
		{`ENV.fetch("UNSET")`, "", false},
		{`ENV.fetch("UNSET", "d")`, "d", true},
		{`ENV["UNSET"] || "d"`, "d", true},
		{`ENV["EMPTY"] || "d"`, "d", true},
		{`"lit"`, "lit", true},
		{`%x(aws ssm get-parameter)`, "", false},
	}
	for _, c := range cases {
		got, ok := evalRuby(c.code, env)
		if got != c.want || ok != c.ok {
			t.Errorf("%s = %q,%v want %q,%v", c.code, got, ok, c.want, c.ok)
		}
	}
}

func TestMaskKeepsOffsets(t *testing.T) {
	src := "<% require 'x' %>\nhost: <%= ENV[\"H\"] %>\nport: <%= ENV[\"IP\"] %>:5432:5432 # c\n"
	m, err := mask(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.masked) != len(src) || strings.Count(m.masked, "\n") != strings.Count(src, "\n") {
		t.Fatal("masking changed lengths or lines")
	}
	if m.unmask(m.masked) != strings.Repeat(" ", len("<% require 'x' %>"))+"\n"+strings.SplitN(src, "\n", 2)[1] {
		t.Fatalf("unmask does not restore output tags: %q", m.unmask(m.masked))
	}
}

func TestParsePort(t *testing.T) {
	cases := map[string]Port{
		"5432":                {"", 5432, 5432},
		"6543:5432":           {"", 6543, 5432},
		"10.0.0.2:5432:5432":  {"10.0.0.2", 5432, 5432},
		"[fd00::2]:5432:5432": {"fd00::2", 5432, 5432},
	}
	for in, want := range cases {
		got, err := ParsePort(in)
		if err != nil || got != want {
			t.Errorf("%s = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"host:5432:5432", "a:b", "1:2:3:4"} {
		if _, err := ParsePort(bad); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}

// Edits follow the file's own layout and keep comments.
func TestEditorKeepsLayoutAndComments(t *testing.T) {
	src := mapSrc{"config/deploy.yml": `service: s # the service
accessories:
    db: # primary
        image: postgres:16
        host: 1.2.3.4
        env:
            secret: [A, B]
        files:
        - a:/a   # compact list
        options: {shm-size: 1g}
`}
	e, err := NewEditor(src, "config/deploy.yml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.EnsureListItem("db", []string{"env", "secret"}, Raw("C"), func(v *Val) bool { return v.Masked() == "C" }))
	must(e.EnsureListItem("db", []string{"files"}, Raw("b:/b"), func(v *Val) bool { return v.Masked() == "b:/b" }))
	must(e.EnsureScalar("db", []string{"cmd"}, Raw("postgres")))
	must(e.EnsureScalar("db", []string{"env", "clear", "X"}, Raw("1")))
	got := e.Changed()["config/deploy.yml"]
	want := `service: s # the service
accessories:
    db: # primary
        image: postgres:16
        host: 1.2.3.4
        env:
            secret: [A, B, C]
            clear:
                X: 1
        files:
        - a:/a   # compact list
        - b:/b
        options: {shm-size: 1g}
        cmd: postgres
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	// A flow mapping cannot take a new key: the error says where and why.
	err = e.EnsureScalar("db", []string{"options", "stop-timeout"}, Raw("120"))
	if err == nil || !strings.Contains(err.Error(), "config/deploy.yml:13") || !strings.Contains(err.Error(), "flow style") {
		t.Fatalf("want a flow-style error at line 13 (options, after the edits above), got %v", err)
	}
	// A plain scalar in a flow mapping is replaced up to its end, not the
	// line's: the rest of the mapping stays.
	must(e.EnsureScalar("db", []string{"options", "shm-size"}, Raw("2g")))
	if got := e.Changed()["config/deploy.yml"]; !strings.Contains(got, "        options: {shm-size: 2g}\n") {
		t.Fatalf("the flow mapping was not edited in place:\n%s", got)
	}
}

type mapSrc map[string]string

func (m mapSrc) ReadFile(rel string) (string, error) {
	if s, ok := m[rel]; ok {
		return s, nil
	}
	return "", errNotExist
}

// A value copied into a new accessory keeps lists in lists and empty
// items (init derives the standby from the primary this way; the fuzzer
// found a list in a list that made the writer panic).
func TestEmitListsInListsAndEmptyItems(t *testing.T) {
	src := mapSrc{"config/deploy.yml": "service: s\naccessories:\n  db:\n    image: postgres:16\n"}
	e, err := NewEditor(src, "config/deploy.yml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body := Map{{"image", Raw("redis:7")}, {"x", List{List{Raw("a"), List{Raw("b")}}, Map{}, List{}, Raw("c")}}}
	if err := e.AddAccessory("cache", "db", body); err != nil {
		t.Fatal(err)
	}
	x := e.Config().Root.Get("accessories", "cache", "x")
	it := x.Items()
	if len(it) != 4 || len(it[0].Items()) != 2 || it[0].Items()[0].Masked() != "a" || it[0].Items()[1].Items()[0].Masked() != "b" ||
		!it[1].IsMap() || len(it[1].Keys()) != 0 || !it[2].IsSeq() || len(it[2].Items()) != 0 || it[3].Masked() != "c" {
		t.Fatalf("written as:\n%s", e.Changed()["config/deploy.yml"])
	}
}

// An accessory on roles that share a server runs there once, as Kamal's
// SSHKit runs each host once: the host is listed once, in role order.
func TestAccessoryHostsFromRolesListEachServerOnce(t *testing.T) {
	src := mapSrc{"config/deploy.yml": `service: s
image: s
servers:
  web: [10.0.0.4, 10.0.0.5]
  worker:
    hosts: [10.0.0.4, 10.0.0.6]
accessories:
  router:
    image: haproxy
    roles: [web, worker]
`}
	c, err := Load(src, "config/deploy.yml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	hosts, key, err := c.Accessory("router").Hosts()
	if err != nil || key != "roles" || strings.Join(hosts, ",") != "10.0.0.4,10.0.0.5,10.0.0.6" {
		t.Errorf("hosts %v (key %q, %v), want 10.0.0.4,10.0.0.5,10.0.0.6", hosts, key, err)
	}
}
