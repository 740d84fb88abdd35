package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/lab"
)

// The README's demo, run for real: two PostgreSQL servers, clone, stream,
// canary, read-only proof, status, and nothing left behind.
func TestDemoRunsAndCleansUp(t *testing.T) {
	if _, err := lab.BinDir(); err != nil {
		t.Skip(err)
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "understudy-lab-*"))
	out, code := runCLI(t, "demo")
	if code != 0 {
		t.Fatalf("demo exit %d:\n%s", code, out)
	}
	for _, w := range []string{"running init again would change 0", "is streaming", "was readable on db-replica", "apply again: 0 changes", "read-only transaction", "db-replica streaming", "the copy has all 5000 orders"} {
		if !strings.Contains(out, w) {
			t.Errorf("demo output lacks %q:\n%s", w, out)
		}
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "understudy-lab-*"))
	if len(after) != len(before) {
		t.Errorf("demo left directories behind: %v", after)
	}
}
