package kamal

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// evalFile evaluates every key of a secrets file as Kamal would, the last
// definition of a key winning.
func evalFile(t *testing.T, path string, env map[string]string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := parseSecrets(path, string(b))
	ev := &evaluator{ctx: context.Background(), dir: t.TempDir(), f: f, run: ExecRunner{}, memo: map[int]string{},
		env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	out := map[string]string{}
	for i, l := range f.Lines {
		v, err := ev.value(i)
		if err != nil {
			t.Fatalf("%s: %v", l.Key, err)
		}
		out[l.Key] = v
	}
	return out
}

// The secrets reader against real Kamal: kamal/testdata/dotenv/expected.txt
// is what dotenv 3.1.8 with Kamal 2.12's command substitution gives for
// kamal/testdata/dotenv/secrets (scripts/kamal-secrets.rb): quoting, escapes,
// comments, $VAR and ${VAR}, \$, $(...) with variables and nesting,
// \$(...), export, `:` separators, redefinitions, CRLF, and literal values
// full of shell syntax that must not run.
func TestSecretsReadAsKamalReadsThem(t *testing.T) {
	got := evalFile(t, "testdata/dotenv/secrets", map[string]string{"US_DOTENV_TEST_VAR": "from-env"})
	var lines []string
	for k, v := range got {
		lines = append(lines, k+"="+dump(v))
	}
	sort.Strings(lines)
	want, err := os.ReadFile("testdata/dotenv/expected.txt")
	if err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(lines, "\n") + "\n"; g != string(want) {
		t.Errorf("differs from Kamal's reading:\n--- understudy\n%s--- Kamal\n%s", g, want)
	}
}

// Issue 10 item 14: a literal password full of shell syntax is a value,
// never a command, even while status reads it; and a failing command's
// error names the line, not any value.
func TestLiteralSecretsRunNothing(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	secrets := "POSTGRES_PASSWORD=pw;touch " + marker + "&touch " + marker + "|touch " + marker + ">" + marker + "<x\n" +
		"OTHER=`touch " + marker + "`\n" +
		"BROKEN=$(exit 3)\n"
	os.MkdirAll(filepath.Join(dir, ".kamal"), 0o755)
	os.WriteFile(filepath.Join(dir, ".kamal", "secrets"), []byte(secrets), 0o644)
	s, err := LoadSecrets(DirSource(dir), ".kamal/secrets", "")
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Resolve(context.Background(), dir, "POSTGRES_PASSWORD")
	if err != nil || v != "pw;touch "+marker+"&touch "+marker+"|touch "+marker+">"+marker+"<x" {
		t.Errorf("value %q, %v", v, err)
	}
	if _, err := s.Resolve(context.Background(), dir, "OTHER"); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("reading a literal secret ran a command")
	}
	_, err = s.Resolve(context.Background(), dir, "BROKEN")
	if err == nil || !strings.Contains(err.Error(), ".kamal/secrets:3") || strings.Contains(err.Error(), "pw;") {
		t.Errorf("failing command: %v", err)
	}
}

func TestShellSplit(t *testing.T) {
	got, err := shellSplit(`kamal secrets fetch --adapter 1password --account "my acct" 'a b' c\ d`)
	want := []string{"kamal", "secrets", "fetch", "--adapter", "1password", "--account", "my acct", "a b", "c d"}
	if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("%q %v", got, err)
	}
}

// A command several secrets depend on runs once per Secrets, as Kamal
// evaluates the file once; ResolveWith keeps nothing.
func TestSharedCommandRunsOnce(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	secrets := "SHARED=$(echo x >> " + count + "; echo a:b)\nONE=$SHARED-1\nTWO=$SHARED-2\n"
	os.MkdirAll(filepath.Join(dir, ".kamal"), 0o755)
	os.WriteFile(filepath.Join(dir, ".kamal", "secrets"), []byte(secrets), 0o644)
	s, err := LoadSecrets(DirSource(dir), ".kamal/secrets", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"ONE", "a:b-1"}, {"TWO", "a:b-2"}, {"ONE", "a:b-1"}} {
		if v, err := s.Resolve(context.Background(), dir, c[0]); err != nil || v != c[1] {
			t.Errorf("%s = %q, %v; want %q", c[0], v, err, c[1])
		}
	}
	if b, _ := os.ReadFile(count); string(b) != "x\n" {
		t.Errorf("the shared command ran %d times, want once", strings.Count(string(b), "x"))
	}
}
