package kamal

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// kamalCommands renders every command the stand-in runs for the fixture's
// accessories, in the form scripts/kamal-commands.rb prints from Kamal's
// own classes, so the two outputs can be diffed.
func kamalCommands(t *testing.T) string {
	t.Helper()
	cfg, err := Load(DirSource("testdata/commands"), "config/deploy.yml", "", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	sec, err := LoadSecrets(DirSource("testdata/commands"), cfg.SecretsPath(), "")
	if err != nil {
		t.Fatal(err)
	}
	secret := func(k string) string {
		_, l := sec.Lookup(k)
		if l == nil {
			t.Fatalf("no secret %s", k)
		}
		v, ok := Literal(l.Raw)
		if !ok {
			t.Fatalf("secret %s is not literal", k)
		}
		return v
	}
	var b strings.Builder
	for _, name := range []string{"db", "db-replica"} {
		ac, err := cfg.Commands(name)
		if err != nil {
			t.Fatal(err)
		}
		p := func(k, v string) { fmt.Fprintf(&b, "%s %s: %s\n", name, k, v) }
		p("service", ac.ServiceName)
		p("run", ac.Run("10.211.7.10"))
		p("start", ac.Start())
		p("stop", ac.Stop())
		p("info", ac.Info(false, false))
		p("info_all_quiet", ac.Info(true, true))
		p("logs", ac.Logs(100))
		p("exec", ac.ExecNew("pg_controldata"))
		p("pull", ac.PullImage())
		p("remove_container", ac.RemoveContainer())
		p("login", ac.Login(secret("KAMAL_REGISTRY_PASSWORD")))
		p("env_path", ac.SecretsPath())
		p("env", fmt.Sprintf("%q", ac.EnvFile(secret)))
		for _, f := range ac.Files {
			p("file", f.HostPath+" "+f.Mode)
		}
		for _, d := range ac.Directories {
			p("dir", d.HostPath)
		}
	}
	fmt.Fprintf(&b, "lock status: %s\n", LockStatus("shop", ""))
	fmt.Fprintf(&b, "lock release: %s\n", LockRelease("shop", ""))
	return b.String()
}

// The commands Kamal 2.12 runs for each accessory verb, as checked against
// real Kamal (docs/kamal-commands.md). A change here must be checked
// against Kamal again before the golden file is rewritten.
func TestAccessoryCommandsGolden(t *testing.T) {
	got := kamalCommands(t)
	path := "testdata/kamal_commands_golden.txt"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("commands differ from %s (check against Kamal, then UPDATE_GOLDEN=1):\n%s", path, got)
	}
}

func TestRubyDump(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         `"plain"`,
		`a"b\c`:         `"a\"b\\c"`,
		"$HOME ${HOME}": `"\$HOME ${HOME}"`,
		"`x` #{y} #z":   "\"\\`x\\` \\#{y} #z\"",
		"tab\tnl\n\x01": `"tab\tnl\n\x01"`,
		"héllo":         `"h"é"llo"`,
		"":              ``,
	} {
		if got := RubyDump(in); got != want {
			t.Errorf("RubyDump(%q) = %s, want %s", in, got, want)
		}
	}
	if got := escapeEnvFileValue(`pa"ss$word\1 #x`); got != `pa"ss$word\\1 #x` {
		t.Errorf("env file value: %s", got)
	}
}
