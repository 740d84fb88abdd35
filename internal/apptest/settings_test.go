package apptest

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	nodes := Settings{Endpoints: []Endpoint{{"127.0.0.1", 34705}, {"127.0.0.1", 40867}}, Database: "appdb", User: "app", Password: "p@ss/w:rd"}
	router := Settings{Endpoints: []Endpoint{{"shop-router", 5432}}, Database: "appdb", User: "app", Password: "secret"}
	withTimeouts := nodes
	withTimeouts.TCPUserTimeout, withTimeouts.ConnectTimeout, withTimeouts.QueryTimeout = 5*time.Second, 3*time.Second, 5*time.Second
	cases := []struct {
		name   string
		s      Settings
		client Client
		want   Config
		err    string
	}{
		{"rails with a host list: database.yml, quoted lists, no DATABASE_URL", nodes, ActiveRecord, Config{
			Env: map[string]string{"APP_DB_PASSWORD": "p@ss/w:rd", "APPTEST_DATABASE_YML": "/cfg/database.yml"},
			Files: map[string]string{"database.yml": `production:
  adapter: postgresql
  host: "127.0.0.1,127.0.0.1"
  port: "34705,40867"
  database: "appdb"
  username: "app"
  password: <%= ENV.fetch("APP_DB_PASSWORD").to_json %>
  connect_timeout: 2
  target_session_attrs: read-write
`}}, ""},
		{"rails through the router: DATABASE_URL", router, ActiveRecord, Config{
			Env: map[string]string{"DATABASE_URL": "postgres://app:secret@shop-router:5432/appdb?connect_timeout=2&target_session_attrs=read-write",
				"APPTEST_DATABASE_YML": "/cfg/database.yml"},
			Files: map[string]string{"database.yml": "production:\n  url: <%= ENV[\"DATABASE_URL\"] %>\n"}}, ""},
		{"psycopg2: a libpq URL with both hosts, the password escaped", nodes, Psycopg2, Config{
			Env:   map[string]string{"DATABASE_URL": "postgresql://app:p%40ss%2Fw%3Ard@127.0.0.1:34705,127.0.0.1:40867/appdb?connect_timeout=2&target_session_attrs=read-write"},
			Files: map[string]string{}}, ""},
		{"pgx with timeouts", withTimeouts, PGX, Config{
			Env: map[string]string{"DATABASE_URL": "postgresql://app:p%40ss%2Fw%3Ard@127.0.0.1:34705,127.0.0.1:40867/appdb?connect_timeout=3&target_session_attrs=read-write&tcp_user_timeout=5000",
				"APPTEST_QUERY_TIMEOUT_MS": "5000"},
			Files: map[string]string{}}, ""},
		{"postgres.js: target_session_attrs=primary", nodes, PostgresJS, Config{
			Env:   map[string]string{"DATABASE_URL": "postgresql://app:p%40ss%2Fw%3Ard@127.0.0.1:34705,127.0.0.1:40867/appdb?connect_timeout=2&target_session_attrs=primary"},
			Files: map[string]string{}}, ""},
		{"node-postgres through the router", router, NodePostgres, Config{
			Env:   map[string]string{"DATABASE_URL": "postgres://app:secret@shop-router:5432/appdb?connect_timeout=2&target_session_attrs=read-write"},
			Files: map[string]string{}}, ""},
		{"node-postgres cannot take a host list", nodes, NodePostgres, Config{}, "node-postgres takes one host only"},
		{"PDO: a DSN with lists, the timeout as ATTR_TIMEOUT", withTimeouts, PDO, Config{
			Env: map[string]string{"APP_DB_DSN": "pgsql:host=127.0.0.1,127.0.0.1;port=34705,40867;dbname=appdb;target_session_attrs=read-write;tcp_user_timeout=5000",
				"APP_DB_USER": "app", "APP_DB_PASSWORD": "p@ss/w:rd", "APP_DB_TIMEOUT": "3"},
			Files: map[string]string{}}, ""},
		{"no endpoint", Settings{Database: "appdb", User: "app"}, PGX, Config{}, "no endpoint"},
		{"unknown client", nodes, "prisma", Config{}, `no writer for client "prisma"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.s.Config(c.client, "/cfg")
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got\n%#v\nwant\n%#v", got, c.want)
			}
		})
	}
}

func TestArgvAndRunArgv(t *testing.T) {
	if got := Argv(Psycopg3, "/w", "/bin/pgxw", map[string]string{"python3": "/usr/bin/python3"}); !reflect.DeepEqual(got, []string{"/usr/bin/python3", "/w/pywriter.py", "psycopg"}) {
		t.Errorf("psycopg3: %q", got)
	}
	if got := Argv(PGX, "/w", "/bin/pgxw", nil); !reflect.DeepEqual(got, []string{"/bin/pgxw"}) {
		t.Errorf("pgx: %q", got)
	}
	for _, c := range All {
		if Argv(c, "/w", "/p", nil)[0] == "" {
			t.Errorf("%s has no command", c)
		}
	}
	env := map[string]string{"DATABASE_URL": "postgres://app:secret@r:5432/appdb", "APPTEST_CLIENT": "pgx"}
	got := RunArgv("apptest-pgx-1", "kamal", "/tmp/c", env, []string{"/app/bin/pgx-writer"})
	want := []string{"run", "-d", "--name", "apptest-pgx-1", "--label", "understudy-apptest=1", "--network", "kamal",
		"-v", "/tmp/c:/app/run", "-e", "APPTEST_CLIENT", "-e", "DATABASE_URL", ImageTag,
		"/bin/sh", "-c", `exec "$@" >>/app/run/attempts.jsonl`, "writer", "/app/bin/pgx-writer"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("run argv:\n%q\nwant\n%q", got, want)
	}
	if strings.Contains(strings.Join(got, " "), "secret") {
		t.Error("a secret is in docker run's argv")
	}
}
