package pgops_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/internal/pgtest"
	"github.com/understudy-dev/understudy/pgops"
)

// A role created from a Go-computed verifier authenticates over TCP with
// scram-sha-256 using the password, and refuses a wrong one.
func TestSCRAMVerifierAuthenticatesOnRealServer(t *testing.T) {
	env := pgtest.New(t)
	data := env.Dir("data")
	sock := env.Dir("sock")
	port := pgtest.FreePort(t)
	env.InitDB(data)
	hba := "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := writeAs(env, data+"/pg_hba.conf", hba); err != nil {
		t.Fatal(err)
	}
	env.Start(data, fmt.Sprintf("-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s", port, sock))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", sock, port))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	const pw = "correct-horse-9"
	if err := pgops.EnsureReplicationRole(ctx, admin, "replicator", pw); err != nil {
		t.Fatal(err)
	}
	if err := pgops.EnsureReplicationRole(ctx, admin, "replicator", pw); err != nil {
		t.Fatalf("second call must update, not fail: %v", err)
	}
	var stored string
	admin.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'replicator'").Scan(&stored)
	if len(stored) < 14 || stored[:14] != "SCRAM-SHA-256$" {
		t.Fatalf("stored password is not a SCRAM verifier: %.14s", stored)
	}
	try := func(password string) error {
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=replicator dbname=postgres password=%s", port, password))
		if err == nil {
			c.Close(ctx)
		}
		return err
	}
	if err := try(pw); err != nil {
		t.Fatalf("login with the password failed: %v", err)
	}
	if err := try("wrong"); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
}

func TestVerifierMatches(t *testing.T) {
	v, err := pgops.SCRAMVerifier("s3cret-pass", nil, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !pgops.VerifierMatches(v, "s3cret-pass") {
		t.Error("the verifier does not match its own password")
	}
	for _, bad := range []string{"s3cret-pasS", "", "s3cret-pass "} {
		if pgops.VerifierMatches(v, bad) {
			t.Errorf("matched the wrong password %q", bad)
		}
	}
	for _, junk := range []string{"", "md5abc", "SCRAM-SHA-256$x:y$z", v[:len(v)-3]} {
		if pgops.VerifierMatches(junk, "s3cret-pass") {
			t.Errorf("matched a malformed verifier %q", junk)
		}
	}
}
