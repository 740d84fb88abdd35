package backup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A restore lists the archive, then fetches. A running agent may finish
// the newest segment in between: its partial object is replaced by the
// whole segment, which the restore then takes (it holds all the partial
// had). A segment missing for any other reason is still refused.
func TestFetchSegmentsTakesTheSegmentThatReplacedItsPartial(t *testing.T) {
	ctx := context.Background()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	const segSize = 1 << 20
	store := NewMemStore()
	put := func(name string, data []byte) {
		var b bytes.Buffer
		w, err := key.Seal(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
		if err := store.Put(ctx, walKey(name), &b, int64(b.Len())); err != nil {
			t.Fatal(err)
		}
	}
	whole := bytes.Repeat([]byte{7}, segSize)
	put("000000010000000000000009", bytes.Repeat([]byte{9}, segSize))
	put("00000001000000000000000A", whole) // the listing said 0A.partial

	dir := t.TempDir()
	segs := []WALFile{{Name: "000000010000000000000009"}, {Name: "00000001000000000000000A", Partial: true}}
	if err := fetchSegments(ctx, store, key, segs, dir, segSize, nil); err != nil {
		t.Fatalf("the partial was replaced by its whole segment: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "00000001000000000000000A"))
	if err != nil || !bytes.Equal(got, whole) {
		t.Errorf("0A restored as %d bytes (%v), want the whole segment", len(got), err)
	}

	// Gone altogether: the restore says which file and what to do.
	segs = append(segs, WALFile{Name: "00000001000000000000000B", Partial: true})
	err = fetchSegments(ctx, store, key, segs, t.TempDir(), segSize, nil)
	if err == nil || !strings.Contains(err.Error(), "00000001000000000000000B.partial is missing from the archive") || !strings.Contains(err.Error(), "fix:") {
		t.Errorf("a missing partial and no segment: %v", err)
	}
	segs = []WALFile{{Name: "00000001000000000000000C"}}
	if err := fetchSegments(ctx, store, key, segs, t.TempDir(), segSize, nil); err == nil || !strings.Contains(err.Error(), "0000000C is missing") {
		t.Errorf("a missing complete segment: %v", err)
	}
}
