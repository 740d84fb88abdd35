// Package pgops holds the PostgreSQL operations understudy performs over a
// pgx connection: roles, slots, settings and replication state.
package pgops

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// SCRAMIterations is PostgreSQL's default scram_iterations.
const SCRAMIterations = 4096

// SCRAMVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for a
// password (PostgreSQL's src/common/scram-common.c, scram_build_secret; RFC
// 7677). CREATE/ALTER ROLE store a verifier as given, so the plaintext
// never reaches the server or its log. Passwords should be ASCII: the server
// applies SASLprep, which is the identity on printable ASCII.
func SCRAMVerifier(password string, salt []byte, iterations int) (string, error) {
	if salt == nil {
		salt = make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return "", fmt.Errorf("making a salt: %w", err)
		}
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, 32)
	if err != nil {
		return "", fmt.Errorf("deriving the SCRAM key: %w", err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(stored[:]), b64(mac(salted, "Server Key"))), nil
}

// VerifierMatches reports whether a stored SCRAM-SHA-256 verifier was made
// from password, by recomputing it with the stored salt and iteration count.
func VerifierMatches(stored, password string) bool {
	var iter int
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$") {
		return false
	}
	head, keys, ok := strings.Cut(strings.TrimPrefix(stored, "SCRAM-SHA-256$"), "$")
	if !ok {
		return false
	}
	it, salt64, ok := strings.Cut(head, ":")
	if !ok {
		return false
	}
	if _, err := fmt.Sscan(it, &iter); err != nil || iter <= 0 {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return false
	}
	v, err := SCRAMVerifier(password, raw, iter)
	if err != nil {
		return false
	}
	return hmac.Equal([]byte(v), []byte("SCRAM-SHA-256$"+head+"$"+keys))
}
