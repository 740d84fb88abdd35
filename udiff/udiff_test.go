package udiff

import "testing"

func TestDiff(t *testing.T) {
	a := "1\n2\n3\n4\n5\n6\n7\n8\n9\n"
	b := "1\n2\n3\n4\nfive\n6\n7\n8\n9\nten\n"
	want := "--- a/f\n+++ b/f\n@@ -2,8 +2,9 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n 9\n+ten\n"
	if got := Diff("f", a, b, 3, false); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if Diff("f", a, a, 3, false) != "" {
		t.Fatal("equal texts must give no diff")
	}
	if got := Diff("f", "", "x\n", 3, true); got != "--- /dev/null\n+++ b/f\n@@ -0,0 +1,1 @@\n+x\n" {
		t.Fatalf("new file: %q", got)
	}
}
