package backup

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/understudy-dev/understudy/pgops"
)

// tarScanner reads a tar stream as it passes, chunk by chunk, without
// copying it: it parses each member's header (ustar, POSIX.1-1988: 512-byte
// blocks, the size in octal or, past 8 GB, base-256) and skips its content
// by arithmetic, keeping only the members it is asked for. A base backup's
// tar holds backup_label (its start) and backup_manifest (its WAL range).
type tarScanner struct {
	want    map[string]int64 // member name → the most bytes to keep
	got     map[string][]byte
	hdr     [512]byte
	hdrN    int    // bytes of hdr filled
	skip    int64  // bytes of the current member's content and padding left
	keep    string // the member being kept, "" when none
	keepN   int64  // bytes of it left to keep
	done    bool   // the end-of-archive block was seen
	err     error
	members int
}

func newTarScanner(want map[string]int64) *tarScanner {
	return &tarScanner{want: want, got: map[string][]byte{}}
}

// Write takes the next chunk of the stream; it never fails (the error is
// kept for the end), so it may sit in an io.MultiWriter.
func (s *tarScanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && !s.done && s.err == nil {
		if s.skip > 0 {
			k := min(int64(len(p)), s.skip)
			if s.keep != "" && s.keepN > 0 {
				c := min(k, s.keepN)
				s.got[s.keep] = append(s.got[s.keep], p[:c]...)
				s.keepN -= c
			}
			p, s.skip = p[k:], s.skip-k
			continue
		}
		c := copy(s.hdr[s.hdrN:], p)
		s.hdrN += c
		p = p[c:]
		if s.hdrN == len(s.hdr) {
			s.hdrN = 0
			s.header()
		}
	}
	return n, nil
}

func (s *tarScanner) header() {
	h := s.hdr[:]
	if bytes.Count(h, []byte{0}) == len(h) {
		s.done = true // end of archive
		return
	}
	var sum int64
	for i, b := range h {
		if i >= 148 && i < 156 {
			b = ' '
		}
		sum += int64(b)
	}
	want, err := tarNumber(h[148:156])
	if err != nil || want != sum {
		s.err = fmt.Errorf("reading the backup's tar: a header's checksum does not match (member %d)", s.members)
		return
	}
	size, err := tarNumber(h[124:136])
	if err != nil {
		s.err = fmt.Errorf("reading the backup's tar: member %d's size: %w", s.members, err)
		return
	}
	name := cstring(h[0:100])
	if string(h[257:262]) == "ustar" {
		if prefix := cstring(h[345:500]); prefix != "" {
			name = prefix + "/" + name
		}
	}
	s.members++
	s.skip = (size + 511) &^ 511
	s.keep, s.keepN = "", 0
	if limit, ok := s.want[name]; ok && (h[156] == '0' || h[156] == 0) {
		if size > limit {
			s.err = fmt.Errorf("reading the backup's tar: %s is %d bytes, more than %d", name, size, limit)
			return
		}
		s.keep, s.keepN = name, size
		s.got[name] = make([]byte, 0, size)
	}
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// tarNumber reads a numeric header field: octal digits (NUL or space
// ended), or base-256 when the first byte's high bit is set.
func tarNumber(b []byte) (int64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		var v int64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if v > (1<<55)-1 {
				return 0, errors.New("a base-256 number out of range")
			}
			v = v<<8 | int64(c)
		}
		return v, nil
	}
	t := bytes.TrimSpace(bytes.TrimRight(b, "\x00 "))
	t = bytes.TrimLeft(t, " ")
	if len(t) == 0 {
		return 0, nil
	}
	return strconv.ParseInt(string(t), 8, 64)
}

var startRE = regexp.MustCompile(`(?m)^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)`)
var startTLRE = regexp.MustCompile(`(?m)^START TIMELINE: (\d+)`)

type tarMeta struct {
	start, end pgops.LSN
	timeline   pgops.Timeline
	err        error
}

// baseMeta is the start (backup_label) and end (backup_manifest's last WAL
// range) of a base backup whose tar went through s.
func (s *tarScanner) baseMeta() tarMeta {
	var m tarMeta
	if s.err != nil {
		m.err = s.err
		return m
	}
	label, haveLabel := s.got["backup_label"]
	manifest, haveManifest := s.got["backup_manifest"]
	if !haveLabel || !haveManifest {
		m.err = errors.New("the backup's tar has no backup_label or backup_manifest (pg_basebackup 13 or later is needed)")
		return m
	}
	sm, tm := startRE.FindSubmatch(label), startTLRE.FindSubmatch(label)
	if sm == nil || tm == nil {
		m.err = errors.New("backup_label has no start location")
		return m
	}
	m.start, _ = pgops.ParseLSN(string(sm[1]))
	tl, _ := strconv.ParseUint(string(tm[1]), 10, 32)
	m.timeline = pgops.Timeline(tl)
	m.end, m.err = ManifestEnd(manifest)
	return m
}
