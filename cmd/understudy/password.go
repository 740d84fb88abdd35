package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
)

// passwordCommand prints a new random password for the replication role.
type passwordCommand struct{ out io.Writer }

func (*passwordCommand) Name() string { return "password" }
func (*passwordCommand) Summary() string {
	return "print a new random password (for REPLICATION_PASSWORD)"
}

func (c *passwordCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("password", flag.ContinueOnError)
	n := fs.Int("length", 32, "number of characters")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 16 || *n > 256 {
		return fmt.Errorf("--length %d: use 16 to 256", *n)
	}
	fmt.Fprintln(c.out, newPassword(*n))
	return nil
}

// newPassword draws letters and digits only, so SASLprep leaves it unchanged
// and no quoting is ever needed (PostgreSQL docs, CREATE ROLE: the password can end up in logs).
func newPassword(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		for {
			var r [1]byte
			rand.Read(r[:])
			if int(r[0]) < 256-256%len(alphabet) {
				b[i] = alphabet[int(r[0])%len(alphabet)]
				break
			}
		}
	}
	return string(b)
}
