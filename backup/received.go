package backup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/understudy-dev/understudy/pgops"
)

// How far pg_receivewal has written. It writes each message it receives
// with write(2) at the end of the segment file it has open, so that file's
// offset (proc(5): /proc/PID/fdinfo/FD, "pos") is the end of its last
// completed write, and every byte before it is WAL the source had flushed.
// Reading it needs no fsync from pg_receivewal (so it runs without
// --synchronous, and fsyncs once per segment), and no round trip to the
// source. Linux only; elsewhere the slot's position stands in (then
// pg_receivewal runs with --synchronous).

// writtenIn finds pg_receivewal's open .partial file in spool and how far
// it has written it: the WAL position, on the file's timeline.
func writtenIn(pid int, spool string, segSize uint64) (pgops.LSN, pgops.Timeline, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || filepath.Dir(target) != spool || !strings.HasSuffix(target, partialSuffix) {
			continue
		}
		seg, ok := pgops.ParseSegmentName(strings.TrimSuffix(filepath.Base(target), partialSuffix), segSize)
		if !ok {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			return 0, 0, err
		}
		pos, err := fdPos(info)
		if err != nil {
			return 0, 0, err
		}
		if pos > int64(segSize) {
			return 0, 0, fmt.Errorf("pg_receivewal's offset %d in %s is past a segment", pos, target)
		}
		return seg.StartLSN(segSize) + pgops.LSN(pos), seg.TLI, nil
	}
	return 0, 0, errNoOpenSegment
}

var errNoOpenSegment = errors.New("pg_receivewal has no segment open")

func fdPos(info []byte) (int64, error) {
	for _, line := range bytes.Split(info, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("pos:")); ok {
			return strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, errors.New("no pos: line in fdinfo")
}

// canReadOffsets: /proc shows this process's own fdinfo (so it will show
// its children's).
func canReadOffsets() bool {
	_, err := os.ReadFile("/proc/self/fdinfo/0")
	return err == nil
}

// writtenPages reports whether the WAL pages that end at upTo were written:
// a WAL page (XLOG_BLCKSZ) begins with a header whose magic number is not
// zero, while pg_receivewal fills a new segment with zeros (with write(2),
// moving the offset) before it seeks back and writes WAL. A range ending
// in a zero page is that filling, not WAL.
func writtenPages(f *os.File, upTo int64) (bool, error) {
	if upTo <= 0 {
		return true, nil
	}
	page := (upTo - 1) &^ (walPage - 1)
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], page); err != nil {
		return false, err
	}
	return magic != [2]byte{}, nil
}
