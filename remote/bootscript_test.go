package remote

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ReplaceFileCmd, run by sh as the server's would: the file is replaced
// by a new one (a new inode: a container that mounted the old one keeps
// it until its next start), with the mode, in a directory made if needed,
// and no temporary file is left; an odd name is quoted.
func TestReplaceFileCmd(t *testing.T) {
	dir := t.TempDir()
	rel := "shop-db/understudy/boot 'x'.sh"
	run := func(body string) {
		t.Helper()
		c := exec.Command("sh", "-c", ReplaceFileCmd(rel, "755"))
		c.Dir, c.Stdin = dir, strings.NewReader(body)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	run("old\n")
	p := filepath.Join(dir, rel)
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	run("#!/bin/sh\nnew\n")
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "#!/bin/sh\nnew\n" || after.Mode().Perm() != 0o755 || os.SameFile(before, after) {
		t.Errorf("replaced: %q, mode %v, same inode %v", b, after.Mode().Perm(), os.SameFile(before, after))
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}
