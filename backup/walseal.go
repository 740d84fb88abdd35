package backup

import (
	"bytes"
	"fmt"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// segSealer seals one WAL segment incrementally. The segment being written
// is uploaded every PartialEvery; compressing all of it again each time
// cost most of the agent's CPU. Instead each round's new bytes become one
// more zstd frame, appended to the frames of the rounds before: a zstd
// reader decodes concatenated frames as one stream (RFC 8878, section 3.1),
// so the object is still age(zstd(segment)), and the finished segment is
// its partial frames plus one. Each byte is compressed once; only the
// (compressed) frames are encrypted and uploaded again.
//
// Only bytes before the receiver's flushed position (the slot's) are taken:
// pg_receivewal only appends, so those never change.
type segSealer struct {
	name   string // the segment's file name, without .partial
	gen    int    // the receiver run it belongs to (a new run starts over)
	off    int64  // the segment's first off bytes are in frames
	frames []byte
}

// walEncoder compresses WAL frames; EncodeAll may be used concurrently.
var walEncoder = sync.OnceValue(func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
	if err != nil {
		panic(err)
	}
	return e
})

// frameMax is the most bytes one frame takes, so the read buffer stays
// small whatever a round brings.
const frameMax = 1 << 20

// extend compresses the file's bytes [off, upTo) into more frames (of at
// most frameMax bytes each); scratch is reused between rounds.
func (s *segSealer) extend(f *os.File, upTo int64, scratch *[]byte) error {
	if cap(*scratch) < frameMax {
		*scratch = make([]byte, frameMax)
	}
	for s.off < upTo {
		buf := (*scratch)[:min(upTo-s.off, frameMax)]
		if _, err := f.ReadAt(buf, s.off); err != nil {
			return fmt.Errorf("reading %s: %w", f.Name(), err)
		}
		s.frames = walEncoder().EncodeAll(buf, s.frames)
		s.off += int64(len(buf))
	}
	return nil
}

// sealInto encrypts the frames so far into buf: the object to upload.
func (s *segSealer) sealInto(k *Key, buf *bytes.Buffer) error {
	buf.Grow(len(s.frames) + len(s.frames)/64 + 256)
	w, err := k.encrypt(buf)
	if err != nil {
		return err
	}
	if _, err := w.Write(s.frames); err != nil {
		return err
	}
	return w.Close()
}
