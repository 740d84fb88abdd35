package failover

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/understudy-dev/understudy/atomicfile"
)

// SecretName is the Kamal secret every etcd member derives its TLS from:
// one random value (`understudy failover secret` prints a new one), kept
// where POSTGRES_PASSWORD is and referenced from .kamal/secrets. From it
// each member derives the same certificate authority (an Ed25519 key by
// HKDF, a self-signed certificate with fixed fields) and signs a fresh key
// of its own at every start. No certificate or key is written into the
// app's repository, and rotating is one new secret and a rolling restart.
const SecretName = "FAILOVER_SECRET"

// NewSecret returns a new random secret, as text.
func NewSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseSecret checks a secret's text.
func ParseSecret(text string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil || len(b) < 32 {
		return nil, fmt.Errorf("%s is not a secret made by `understudy failover secret` (43 characters of base64url); make one with it and store it where POSTGRES_PASSWORD is stored", SecretName)
	}
	return b, nil
}

// CA is the failover certificate authority derived from the secret.
type CA struct {
	Cert *x509.Certificate
	DER  []byte
	key  ed25519.PrivateKey
}

// DeriveCA derives the authority: the same key and certificate from the
// same secret on every member.
func DeriveCA(secret []byte) (*CA, error) {
	seed, err := hkdf.Key(sha256.New, secret, nil, "understudy failover ca v1", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	key := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "understudy failover CA"},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("making the failover CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, DER: der, key: key}, nil
}

// Issue signs a new key for a member (or a client, such as the agent's
// own etcd client): usable as server and client, valid for its IPs.
func (ca *CA) Issue(name string, ips []net.IP, now time.Time) (certPEM, keyPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing %s's certificate: %w", name, err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), nil
}

// TLSFiles are the files a member's etcd reads (etcd takes paths only).
type TLSFiles struct {
	CA, Cert, Key string
}

// WriteTLS derives the authority, issues this member's certificate and
// writes the three files into dir (0700; the key 0600).
func WriteTLS(dir string, secret []byte, name string, ips []net.IP, now time.Time) (TLSFiles, error) {
	if len(ips) == 0 {
		return TLSFiles{}, errors.New("a member's certificate needs its private IP")
	}
	ca, err := DeriveCA(secret)
	if err != nil {
		return TLSFiles{}, err
	}
	cert, key, err := ca.Issue(name, ips, now)
	if err != nil {
		return TLSFiles{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return TLSFiles{}, fmt.Errorf("making %s: %w", dir, err)
	}
	f := TLSFiles{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "member.crt"), Key: filepath.Join(dir, "member.key")}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.CA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.DER}), 0o644},
		{f.Cert, cert, 0o644},
		{f.Key, key, 0o600},
	} {
		if err := atomicfile.Write(w.path, w.data, w.mode); err != nil {
			return TLSFiles{}, fmt.Errorf("writing %s: %w", w.path, err)
		}
	}
	return f, nil
}
