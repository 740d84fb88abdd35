package backup

import (
	"fmt"
	"io"
	"math/rand"

	"testing"
)

// tableLike is data shaped like a heap page of pgbench rows: mostly
// repeated structure with varying numbers, compressible about 20 times.
func tableLike(n int) []byte {
	r := rand.New(rand.NewSource(1))
	b := make([]byte, 0, n)
	for len(b) < n {
		b = append(b, fmt.Sprintf("\x00\x00\x00%08d\x00\x00\x01%06d%s", r.Intn(1e8), r.Intn(1e6), "                                                                                    ")...)
	}
	return b[:n]
}

// BenchmarkSealStream: the base backup's seal (zstd on every core, then
// age) on table-like data; MB/s is of the plain input.
func BenchmarkSealStream(b *testing.B) {
	k, _ := GenerateKey()
	data := tableLike(64 << 20)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		w, _ := k.SealStream(io.Discard)
		for off := 0; off < len(data); off += 1 << 20 {
			w.Write(data[off : off+1<<20])
		}
		w.Close()
	}
}

// BenchmarkWALFrames: the agent's incremental WAL sealing (one zstd frame
// per round, single-threaded), on table-like data; MB/s of plain input.
func BenchmarkWALFrames(b *testing.B) {
	data := tableLike(16 << 20)
	b.SetBytes(int64(len(data)))
	var frames []byte
	for i := 0; i < b.N; i++ {
		frames = frames[:0]
		for off := 0; off < len(data); off += 1 << 20 {
			frames = walEncoder().EncodeAll(data[off:off+1<<20], frames)
		}
	}
}
