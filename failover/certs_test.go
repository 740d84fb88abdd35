package failover

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"
)

func TestSecretAndCA(t *testing.T) {
	text := NewSecret()
	sec, err := ParseSecret(text + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSecret("hunter2"); err == nil || !strings.Contains(err.Error(), "understudy failover secret") {
		t.Fatalf("a bad secret: %v", err)
	}
	a, _ := DeriveCA(sec)
	b, _ := DeriveCA(sec)
	if !bytes.Equal(a.DER, b.DER) {
		t.Fatal("the same secret derived two different authorities")
	}
	other, _ := ParseSecret(NewSecret())
	c, _ := DeriveCA(other)
	if bytes.Equal(a.DER, c.DER) {
		t.Fatal("two secrets derived the same authority")
	}
	certPEM, _, err := a.Issue("db", []net.IP{net.ParseIP("10.0.1.2")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(certPEM), text) {
		t.Fatal("the certificate carries the secret")
	}
	cert := parsePEM(t, certPEM)
	for _, ca := range []*CA{b, c} {
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		_, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if (ca == b) != (err == nil) {
			t.Fatalf("verify against %s: %v", map[bool]string{true: "the same secret's CA", false: "another secret's CA"}[ca == b], err)
		}
	}
}

func parsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
