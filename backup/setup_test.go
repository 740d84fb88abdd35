package backup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testSetup() Setup {
	return Setup{Accessory: "db-backup", Major: 15, Storage: S3Config{Endpoint: "http://10.211.7.1:9000", Bucket: "b", PathStyle: true},
		Sources: []Source{{Name: "db", Host: "10.0.0.2", Port: 5432}, {Name: "db-replica", Host: "10.0.0.3", Port: 5433}},
		User:    "replicator", StateDir: "/var/lib/understudy-backup", BaseEvery: "24h", Retention: Policy{KeepBases: 2}, Secrets: DefaultSecretNames}
}

func TestSetupRoundTripsAndRefusesWhatTheAgentCannotUse(t *testing.T) {
	s := testSetup()
	got, err := ParseSetup([]byte(MarshalSetup(s)))
	if err != nil {
		t.Fatal(err)
	}
	if MarshalSetup(got) != MarshalSetup(s) {
		t.Errorf("round trip changed the setup:\n%s", MarshalSetup(got))
	}
	bad := map[string]func(string) string{
		"unknown field":    func(j string) string { return strings.Replace(j, `"accessory"`, `"acessory"`, 1) },
		"relative state":   func(j string) string { return strings.Replace(j, `"/var/lib/understudy-backup"`, `"state"`, 1) },
		"a short period":   func(j string) string { return strings.Replace(j, `"24h"`, `"10s"`, 1) },
		"no bucket":        func(j string) string { return strings.Replace(j, `"bucket": "b"`, `"bucket": ""`, 1) },
		"a secret unnamed": func(j string) string { return strings.Replace(j, `"BACKUP_ENCRYPTION_KEY"`, `""`, 1) },
		"not JSON":         func(string) string { return "{" },
	}
	for name, edit := range bad {
		if _, err := ParseSetup([]byte(edit(MarshalSetup(s)))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The passfile escapes ':' and '\' (libpq-pgpass.html) and names each source.
func TestPassfileEscapes(t *testing.T) {
	got := testSetup().Passfile(`pa:ss\word`)
	want := "10.0.0.2:5432:*:replicator:pa\\:ss\\\\word\n10.0.0.3:5433:*:replicator:pa\\:ss\\\\word\n"
	if got != want {
		t.Errorf("passfile %q, want %q", got, want)
	}
}

func TestReadSecretsNamesWhatIsMissing(t *testing.T) {
	s := testSetup()
	k, _ := GenerateKey()
	env := map[string]string{"BACKUP_S3_ACCESS_KEY_ID": "id", "BACKUP_ENCRYPTION_KEY": k.String()}
	_, err := s.ReadSecrets(func(n string) (string, bool) { v, ok := env[n]; return v, ok }, true)
	if err == nil || !strings.Contains(err.Error(), "BACKUP_S3_SECRET_ACCESS_KEY, REPLICATION_PASSWORD") || !strings.Contains(err.Error(), "kamal accessory reboot db-backup") {
		t.Errorf("missing secrets: %v", err)
	}
	env["BACKUP_S3_SECRET_ACCESS_KEY"], env["REPLICATION_PASSWORD"] = "sk", "pw"
	env["BACKUP_ENCRYPTION_KEY"] = "AGE-SECRET-KEY-1NOTAKEY"
	if _, err := s.ReadSecrets(func(n string) (string, bool) { v, ok := env[n]; return v, ok }, true); err == nil || strings.Contains(err.Error(), "NOTAKEY") {
		t.Errorf("a malformed key: %v (must be refused without repeating it)", err)
	}
	env["BACKUP_ENCRYPTION_KEY"] = k.String()
	sec, err := s.ReadSecrets(func(n string) (string, bool) { v, ok := env[n]; return v, ok }, true)
	if err != nil || sec.Key.Recipient() != k.Recipient() || sec.Replication != "pw" {
		t.Errorf("secrets %+v, %v", sec, err)
	}
}

// Issue 18: a restore's programs come from UNDERSTUDY_PG_BINDIR when they
// are of the backup's major, whatever the directory is called; the hint
// names the major looked for, and the user's package by its plain name.
func TestFindPGBinAsksTheVersion(t *testing.T) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(dirs) == 0 {
		t.Skip("no PostgreSQL installed")
	}
	real := filepath.Dir(dirs[0])
	major := programMajor(filepath.Join(real, "pg_ctl"))
	if major == 0 {
		t.Fatalf("%s/pg_ctl does not say its version", real)
	}
	link := filepath.Join(t.TempDir(), "bin")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("UNDERSTUDY_PG_BINDIR", link)
	if got, err := FindPGBin(major); err != nil || got != link {
		t.Errorf("FindPGBin(%d) = %s, %v; want %s", major, got, err, link)
	}
	_, err := FindPGBin(99)
	if err == nil || !strings.Contains(err.Error(), "install postgresql-99") || !strings.Contains(err.Error(), "UNDERSTUDY_PG_BINDIR") {
		t.Errorf("FindPGBin(99): %v", err)
	}
	if !strings.Contains(errNoPostgresUser.Error(), "apt-get install postgresql)") {
		t.Errorf("the missing-user hint: %v", errNoPostgresUser)
	}
}

// Issue 18: restore --into a postgres:18 node whose volume was emptied:
// PGDATA is /var/lib/postgresql/18/docker and 18/ does not exist yet. Its
// parent must be enterable by the postgres user (it was made 0700).
func TestMakeRestoreDirParents(t *testing.T) {
	vol := t.TempDir()
	pgdata := filepath.Join(vol, "18", "docker")
	if err := makeRestoreDir(pgdata); err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]os.FileMode{filepath.Join(vol, "18"): 0o755, pgdata: 0o700} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", d, st.Mode().Perm(), err, want)
		}
	}
	if err := makeRestoreDir(pgdata); err != nil {
		t.Errorf("an existing empty directory: %v", err)
	}
}
