package backup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/understudy-dev/understudy/pgops"
)

// What a process has written into its open .partial file, read from its
// file offset, as a WAL position on the file's timeline; a zero-filled
// page at the end is not taken for WAL.
func TestWrittenIn(t *testing.T) {
	if !canReadOffsets() {
		t.Skip("no /proc/self/fdinfo here")
	}
	const seg = pgops.DefaultSegSize
	spool := t.TempDir()
	s := pgops.Segment{TLI: 2, No: 7}
	f, err := os.Create(filepath.Join(spool, s.Name(seg)+partialSuffix))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := writtenIn(os.Getpid(), spool, seg); err != nil {
		t.Fatalf("an empty file: %v", err)
	}
	page := make([]byte, walPage)
	page[0], page[1] = 0x10, 0xD1 // a page header's magic
	f.Write(page)
	f.Write(page[:100])
	lsn, tli, err := writtenIn(os.Getpid(), spool, seg)
	if err != nil || tli != 2 || lsn != s.StartLSN(seg)+walPage+100 {
		t.Errorf("after %d bytes: %s on %d, %v", walPage+100, lsn, tli, err)
	}
	if ok, err := writtenPages(f, walPage+100); !ok || err != nil {
		t.Errorf("a written page: %v %v", ok, err)
	}
	f.Write(make([]byte, 3*walPage)) // zeros, as pg_receivewal fills a new segment
	if ok, err := writtenPages(f, 4*walPage+100); ok || err != nil {
		t.Errorf("a zero-filled page taken for WAL: %v %v", ok, err)
	}
	other := t.TempDir()
	if _, _, err := writtenIn(os.Getpid(), other, seg); err != errNoOpenSegment {
		t.Errorf("no file open in another spool: %v", err)
	}
}
