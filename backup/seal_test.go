package backup

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSealOpensOnlyWithItsKeyAndDetectsDamage(t *testing.T) {
	k, _ := GenerateKey()
	other, _ := GenerateKey()
	plain := bytes.Repeat([]byte("a WAL page, compressible "), 40000)
	var sealed bytes.Buffer
	w, err := k.Seal(&sealed)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if sealed.Len() >= len(plain)/10 {
		t.Errorf("sealed %d bytes of %d: not compressed", sealed.Len(), len(plain))
	}
	if bytes.Contains(sealed.Bytes(), []byte("WAL page")) {
		t.Error("the plain text is visible in the sealed object")
	}
	r, err := k.Open(bytes.NewReader(sealed.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("round trip: %d bytes, %v", len(got), err)
	}
	if _, err := other.Open(bytes.NewReader(sealed.Bytes())); !errors.Is(err, ErrWrongKey) {
		t.Errorf("another key: %v, want ErrWrongKey", err)
	}
	damaged := bytes.Clone(sealed.Bytes())
	damaged[len(damaged)/2] ^= 1
	r, err = k.Open(bytes.NewReader(damaged))
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("a flipped bit: %v, want ErrCorrupt", err)
	}
	if _, err := ParseKey("AGE-SECRET-KEY-1NOTAKEY"); err == nil || strings.Contains(err.Error(), "NOTAKEY") {
		t.Errorf("a bad key: %v (must not repeat it)", err)
	}
	if _, err := ParseKey(" "); !errors.Is(err, ErrNoKey) {
		t.Errorf("no key: %v", err)
	}
	if k2, err := ParseKey(k.String()); err != nil || k2.Recipient() != k.Recipient() {
		t.Errorf("key round trip: %v", err)
	}
}
