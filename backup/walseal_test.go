package backup

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// A segment sealed in rounds opens, after each round, to exactly the bytes
// taken so far, and in the end to the whole segment, with each byte
// compressed once.
func TestSegSealerRounds(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	seg := make([]byte, 4<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(seg); i += 64 { // compressible, like WAL: runs of random bytes and of repeats
		if r.IntN(3) == 0 {
			for j := i; j < i+64 && j < len(seg); j++ {
				seg[j] = byte(r.IntN(256))
			}
		}
	}
	p := filepath.Join(t.TempDir(), "000000010000000000000003.partial")
	if err := os.WriteFile(p, seg, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ss := &segSealer{name: "000000010000000000000003"}
	var scratch []byte
	for _, upTo := range []int64{0, 1, 8191, 100000, 100000, 1 << 20, 3<<20 + 17, 4 << 20} {
		if err := ss.extend(f, upTo, &scratch); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := ss.sealInto(k, &buf); err != nil {
			t.Fatal(err)
		}
		o, err := k.Open(&buf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(o)
		o.Close()
		if err != nil || !bytes.Equal(got, seg[:upTo]) {
			t.Fatalf("after sealing up to %d: %d bytes back (%v), equal %v", upTo, len(got), err, bytes.Equal(got, seg[:upTo]))
		}
	}
	if ss.off != 4<<20 || len(ss.frames) >= len(seg) {
		t.Errorf("off %d, %d bytes of frames for %d of segment", ss.off, len(ss.frames), len(seg))
	}
}
