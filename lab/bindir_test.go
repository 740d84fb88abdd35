package lab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 18: the install hint names the distribution's package, not a major
// that Debian 13 and 14 do not have.
func TestBinDirHintNamesTheDistributionsPackage(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "16", "bin"), 0o755) // a client-only install: no postgres in it
	_, err := binDirIn(root)
	if err == nil || !strings.Contains(err.Error(), "apt-get install postgresql)") || strings.Contains(err.Error(), "postgresql-15") {
		t.Errorf("hint: %v", err)
	}
	t.Setenv("UNDERSTUDY_PG_BINDIR", root)
	if _, err := BinDir(); err == nil || !strings.Contains(err.Error(), "holds no postgres program") {
		t.Errorf("UNDERSTUDY_PG_BINDIR without postgres: %v", err)
	}
}

// Issue 18: UNDERSTUDY_PG_BINDIR need not end in /<major>/bin: the lab
// asks postgres its version (/opt/pg18/bin gave "PostgreSQL 0 is not
// supported").
func TestBinDirIsAskedItsVersion(t *testing.T) {
	real, err := binDirIn("/usr/lib/postgresql")
	if err != nil {
		t.Skip(err)
	}
	v, err := BinMajor(context.Background(), real)
	if err != nil {
		t.Fatal(err)
	}
	opt := filepath.Join(t.TempDir(), "opt", "pg")
	os.MkdirAll(opt, 0o755)
	if err := os.Symlink(real, filepath.Join(opt, "bin")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("UNDERSTUDY_PG_BINDIR", filepath.Join(opt, "bin"))
	root := t.TempDir()
	os.Chmod(root, 0o755)
	l, err := Create(context.Background(), filepath.Join(root, "lab"), Config{Names: []string{"db", "db-replica"}, Ports: []int{55441, 55442}, Password: "pw"})
	if err != nil {
		t.Fatalf("a lab from %s: %v", opt, err)
	}
	if l.Cluster.Major != v || l.BinMajor != v || v < 13 {
		t.Errorf("the lab's major is %d (programs %d), want %d", l.Cluster.Major, l.BinMajor, v)
	}
	if s := l.Target().Images["db"]; s.Major != v || s.Ref != filepath.Join(opt, "bin") || !s.Programs {
		t.Errorf("the lab's image: %+v", s)
	}
}
