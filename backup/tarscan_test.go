package backup

import (
	"archive/tar"
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// The scanner picks backup_label and backup_manifest out of a tar fed in
// chunks of any size, whatever is around them, and agrees with
// archive/tar on the members it skips.
func TestTarScanner(t *testing.T) {
	label := "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\nCHECKPOINT LOCATION: 0/9000060\nSTART TIMELINE: 1\n"
	manifest := `{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [], "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/9000028", "End-LSN": "0/9000100"}]}`
	var tb bytes.Buffer
	w := tar.NewWriter(&tb)
	r := rand.New(rand.NewPCG(3, 4))
	add := func(name string, body []byte, typ byte) {
		h := &tar.Header{Name: name, Size: int64(len(body)), Mode: 0o600, Typeflag: typ, Format: tar.FormatUSTAR}
		if typ == tar.TypeDir {
			h.Size = 0
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ != tar.TypeDir {
			w.Write(body)
		}
	}
	add("backup_label", []byte(label), tar.TypeReg)
	add("base", nil, tar.TypeDir)
	for _, size := range []int{0, 1, 511, 512, 513, 8192, 1<<20 + 3} {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		add("base/1/"+strings.Repeat("x", size%40)+"file", b, tar.TypeReg)
	}
	add(strings.Repeat("d", 60)+"/"+strings.Repeat("e", 60)+"/backup_label", []byte("not this one"), tar.TypeReg) // a long name: ustar prefix
	add("backup_manifest", []byte(manifest), tar.TypeReg)
	w.Close()
	stream := tb.Bytes()

	for _, chunk := range []int{1, 7, 512, 1000, 1 << 20} {
		s := newTarScanner(map[string]int64{"backup_label": 64 << 10, "backup_manifest": 256 << 20})
		for p := stream; len(p) > 0; {
			n := min(len(p), chunk)
			s.Write(p[:n])
			p = p[n:]
		}
		m := s.baseMeta()
		if m.err != nil || m.start != 0x9000028 || m.end != 0x9000100 || m.timeline != 1 || !s.done {
			t.Errorf("chunks of %d: %+v, done %v", chunk, m, s.done)
		}
		if s.members != 11 {
			t.Errorf("chunks of %d: %d members, want 11", chunk, s.members)
		}
	}
	// A damaged header is named, not read past.
	bad := append([]byte(nil), stream...)
	bad[1024+10] ^= 0xff // inside the second header (the label is one block)
	s := newTarScanner(map[string]int64{"backup_label": 64 << 10, "backup_manifest": 256 << 20})
	s.Write(bad)
	if m := s.baseMeta(); m.err == nil || !strings.Contains(m.err.Error(), "checksum") {
		t.Errorf("a damaged header: %v", m.err)
	}
	// No manifest (pg_basebackup before 13).
	s = newTarScanner(map[string]int64{"backup_label": 64 << 10, "backup_manifest": 256 << 20})
	s.Write(stream[:1024])
	if m := s.baseMeta(); m.err == nil || !strings.Contains(m.err.Error(), "no backup_label or backup_manifest") {
		t.Errorf("no manifest: %v", m.err)
	}
	// Sizes: octal, and base-256 past 8 GB.
	for _, c := range []struct {
		field []byte
		want  int64
	}{{[]byte("00000001750\x00"), 1000}, {[]byte("     1750 \x00\x00"), 1000}, {append([]byte{0x80, 0, 0, 0}, 0, 0, 0, 2, 0, 0, 0, 0), 2 << 32}} {
		if got, err := tarNumber(c.field); err != nil || got != c.want {
			t.Errorf("tarNumber(%q) = %d, %v; want %d", c.field, got, err, c.want)
		}
	}
}
