package main

import (
	"bytes"
	"context"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// copyApp copies a fixture app directory into a temp dir.
func copyApp(t *testing.T, fixture string) string {
	t.Helper()
	src := filepath.Join("..", "..", "testdata", "fixtures", fixture)
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// tree maps every file under dir to its content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			out[rel] = string(b)
		}
		return nil
	})
	return out
}

func runCLI(t testing.TB, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code := run(context.Background(), args, &out, &out)
	return out.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".txt")
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/understudy -update to create it, then review it)", err)
	}
	if string(want) != got {
		t.Errorf("output differs from %s (review, then -update):\n--- got ---\n%s", path, got)
	}
}

// fixtureCases are ../../testdata/fixtures/EXPECTED.md, row by row.
var fixtureCases = []struct {
	name, fixture string
	args          []string
	env           map[string]string
	wantCode      int
	wantText      []string // phrases the output must contain
}{
	{"guide-teamyap", "guide-teamyap", []string{"--replica-host", "123.123.123.125", "--replica-ip", "10.0.1.3"}, nil, 0,
		[]string{"standby  db-replica", "+  db-replica:", "config/understudy/pg_hba.conf", "understudy_db_replica", "+REPLICATION_PASSWORD=$REPLICATION_PASSWORD"}},
	{"alpine-loopback", "alpine-loopback", []string{"--replica-host", "203.0.113.11", "--replica-ip", "10.0.0.11"}, nil, 1,
		[]string{"config/deploy.yml:44:", "loopback", "can't reach it", "private IP"}},
	{"destinations-production", "destinations", []string{"-d", "production", "--replica-host", "198.51.100.31", "--replica-ip", "10.10.0.31"}, nil, 0,
		[]string{"+++ b/config/deploy.production.yml", "+REPLICATION_PASSWORD=$PRODUCTION_REPLICATION_PASSWORD", "config/understudy/production/boot.sh"}},
	{"destinations-staging", "destinations", []string{"-d", "staging", "--replica-host", "198.51.100.51", "--replica-ip", "10.10.0.51"}, nil, 1,
		[]string{"config/deploy.staging.yml:7:", "loopback"}},
	{"pg18-old-mount", "pg18-old-mount", []string{"--replica-host", "192.0.2.12", "--replica-ip", "10.0.0.12"}, nil, 1,
		[]string{"config/deploy.yml:25:", "/var/lib/postgresql/18/docker", "data:/var/lib/postgresql"}},
	{"erb-and-custom-cmd", "erb-and-custom-cmd", []string{"--replica-host", "192.0.2.60", "--replica-ip", "10.0.0.60"},
		map[string]string{"DB_HOST": "192.0.2.59", "DB_PRIVATE_IP": "10.0.0.59"}, 0,
		[]string{`host: <%= ENV["DB_HOST"] %>`, "-c shared_buffers=2GB -c max_connections=200 -c log_min_duration_statement=500", "db/init.sql:/docker-entrypoint-initdb.d/init.sql"}},
	{"erb-unset", "erb-and-custom-cmd", []string{"--replica-host", "192.0.2.60", "--replica-ip", "10.0.0.60"}, nil, 1,
		[]string{"config/deploy.yml:21:", "DB_HOST"}},
	{"guide-teamyap-failover", "guide-teamyap", []string{"--replica-host", "123.123.123.125", "--replica-ip", "10.0.1.3", "--failover", "--witness-host", "123.123.123.123", "--witness-ip", "10.0.1.1"}, nil, 0,
		[]string{"+  db-witness:", "understudy witness --cluster", "--failover --failover-data /var/lib/understudy-etcd --pgdata /var/lib/postgresql/data", "+FAILOVER_SECRET=$FAILOVER_SECRET", "`understudy failover secret`", `"witness": "db-witness"`}},
	{"guide-teamyap-failover-witness-on-db", "guide-teamyap", []string{"--replica-host", "123.123.123.125", "--replica-ip", "10.0.1.3", "--failover", "--witness-host", "123.123.123.124", "--witness-ip", "10.0.1.9"}, nil, 1,
		[]string{"--witness-host:", "database server"}},
	{"no-postgres", "no-postgres", []string{"--replica-host", "192.0.2.41", "--replica-ip", "10.0.0.41"}, nil, 1,
		[]string{"config/deploy.yml:", "no PostgreSQL accessory", "redis"}},
}

func TestPlanOnFixtures(t *testing.T) {
	for _, tc := range fixtureCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"DB_HOST", "DB_PRIVATE_IP"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			dir := copyApp(t, tc.fixture)
			before := tree(t, dir)
			out, code := runCLI(t, append([]string{"plan", "--app", dir}, tc.args...)...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.wantCode, out)
			}
			for _, w := range tc.wantText {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if len(tree(t, dir)) != len(before) || !equalTrees(before, tree(t, dir)) {
				t.Error("plan wrote files")
			}
			golden(t, "plan-"+tc.name, strings.ReplaceAll(out, dir, "APP"))

			// init writes exactly what plan showed, or nothing on a refusal;
			// a second init changes nothing.
			out, code = runCLI(t, append([]string{"init", "--app", dir}, tc.args...)...)
			if code != tc.wantCode {
				t.Fatalf("init exit %d, want %d:\n%s", code, tc.wantCode, out)
			}
			after := tree(t, dir)
			if tc.wantCode != 0 {
				if !equalTrees(before, after) {
					t.Fatal("a refused init wrote files")
				}
				return
			}
			out, code = runCLI(t, append([]string{"init", "--app", dir}, tc.args...)...)
			if code != 0 || !strings.Contains(out, "nothing to change") {
				t.Fatalf("second init: exit %d:\n%s", code, out)
			}
			if !equalTrees(after, tree(t, dir)) {
				t.Fatal("second init changed files")
			}
		})
	}
}

func equalTrees(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
