package kamal

import (
	"context"
	"os"
	"strings"
	"testing"
)

func loadText(t *testing.T, deploy string) *Config {
	t.Helper()
	c, err := Load(&Overlay{Base: DirSource(t.TempDir()), Files: map[string]string{"config/deploy.yml": deploy}}, "config/deploy.yml", "", os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSSHSection(t *testing.T) {
	s, err := loadText(t, "service: a\nimage: a\n").SSH()
	if err != nil || s.User != "root" || s.Port != 22 || s.Proxy != "" {
		t.Errorf("defaults: %+v %v", s, err)
	}
	s, err = loadText(t, "service: a\nimage: a\nssh:\n  user: deploy\n  port: 2222\n  proxy: ops@bastion:2200\n  keys_only: true\n  keys: [\"~/.ssh/a\", b]\n").SSH()
	if err != nil || s.User != "deploy" || s.Port != 2222 || s.Proxy != "ops@bastion:2200" || !s.KeysOnly || strings.Join(s.Keys, ",") != "~/.ssh/a,b" {
		t.Errorf("values: %+v %v", s, err)
	}
	for _, bad := range []string{"ssh:\n  port: twenty\n", "ssh:\n  proxy_command: nc %h %p\n", "ssh:\n  keys: a\n"} {
		if _, err := loadText(t, "service: a\nimage: a\n"+bad).SSH(); err == nil || !strings.Contains(err.Error(), "config/deploy.yml:") {
			t.Errorf("%q: want an error naming the file and line, got %v", bad, err)
		}
	}
}

// Secrets resolve as Kamal's dotenv does: literals as written, $VAR from
// earlier keys and then the environment, $(command) through the shell.
func TestResolveSecrets(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(dir+"/.kamal", 0o755)
	os.WriteFile(dir+"/.kamal/secrets", []byte("PLAIN='lit$eral'\nBASE=$UNDERSTUDY_TEST_SECRET\nDERIVED=$(printf '%s-x' \"$BASE\")\nEMPTY=$UNDERSTUDY_TEST_UNSET\n"), 0o644)
	t.Setenv("UNDERSTUDY_TEST_SECRET", "s3")
	s, err := LoadSecrets(DirSource(dir), ".kamal/secrets", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, want := range map[string]string{"PLAIN": "lit$eral", "BASE": "s3", "DERIVED": "s3-x"} {
		if got, err := s.Resolve(ctx, dir, name); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := s.Resolve(ctx, dir, "EMPTY"); err == nil || !strings.Contains(err.Error(), ".kamal/secrets:4") {
		t.Errorf("empty secret: %v", err)
	}
	if _, err := s.Resolve(ctx, dir, "MISSING"); err == nil || !strings.Contains(err.Error(), "not defined") {
		t.Errorf("missing secret: %v", err)
	}
}
