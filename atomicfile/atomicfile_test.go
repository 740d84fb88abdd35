package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// Issue 10 item 9: .kamal/secrets (0600) keeps its mode; a symlinked file
// stays a symlink and its target gets the content; leftovers of a killed
// write go.
func TestWriteKeepsModeFollowsLinksAndCleansUp(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	os.WriteFile(secrets, []byte("old\n"), 0o600)
	if err := Write(secrets, []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(secrets); st.Mode().Perm() != 0o600 {
		t.Errorf("mode became %v", st.Mode().Perm())
	}

	real := filepath.Join(dir, "shared", "deploy.yml")
	os.MkdirAll(filepath.Dir(real), 0o755)
	os.WriteFile(real, []byte("service: a\n"), 0o640)
	link := filepath.Join(dir, "deploy.yml")
	os.Symlink("shared/deploy.yml", link)
	stale := filepath.Join(dir, "shared", ".deploy.yml.tmp-12345")
	os.WriteFile(stale, []byte("half"), 0o600)
	if err := Write(link, []byte("service: b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("the symlink was replaced by a regular file")
	}
	if b, _ := os.ReadFile(real); string(b) != "service: b\n" {
		t.Errorf("the link's target holds %q", b)
	}
	if st, _ := os.Stat(real); st.Mode().Perm() != 0o640 {
		t.Errorf("the target's mode became %v", st.Mode().Perm())
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("a killed write's temporary file is still there")
	}
	fresh := filepath.Join(dir, "new", "file")
	if err := Write(fresh, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(fresh); st.Mode().Perm() != 0o644 {
		t.Errorf("a new file got %v", st.Mode().Perm())
	}
}
