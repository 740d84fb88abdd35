package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Shell runs one command line on a server, the way Kamal's SSHKit does:
// handed to the SSH user's login shell, in its home directory.
type Shell interface {
	Exec(ctx context.Context, host, cmd string, stdin io.Reader) ([]byte, error)
}

var _ Shell = (*Dialer)(nil)

// maxOutput bounds what one remote command may send back.
const maxOutput = 4 << 20

// ErrRemoteCommand is wrapped by every failure of a command that ran on
// the server and exited non-zero (as opposed to not reaching it).
var ErrRemoteCommand = errors.New("command failed on the server")

// Exec runs cmd on host over the connection the dialer holds (a new
// session, not a new login). stdin, when given, is the command's input.
// A cancelled ctx closes the session, which ends the command's channel.
func (d *Dialer) Exec(ctx context.Context, host, cmd string, stdin io.Reader) ([]byte, error) {
	return d.exec(ctx, host, cmd, stdin, nil)
}

// ExecTee is Exec with the command's output also copied to tee as it
// comes (progress of a long command).
func (d *Dialer) ExecTee(ctx context.Context, host, cmd string, stdin io.Reader, tee io.Writer) ([]byte, error) {
	return d.exec(ctx, host, cmd, stdin, tee)
}

func (d *Dialer) exec(ctx context.Context, host, cmd string, stdin io.Reader, tee io.Writer) ([]byte, error) {
	c, err := d.Client(ctx, host)
	if err != nil {
		return nil, err
	}
	s, err := c.NewSession()
	if err != nil {
		return nil, fmt.Errorf("opening an SSH session on %s: %w", host, err)
	}
	defer s.Close()
	var out, errOut limitedBuffer
	out.max, errOut.max = maxOutput, 64<<10
	s.Stdout, s.Stderr = &out, &errOut
	if tee != nil {
		s.Stdout, s.Stderr = io.MultiWriter(&out, tee), io.MultiWriter(&errOut, tee)
	}
	if stdin != nil {
		s.Stdin = stdin
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Signal(ssh.SIGTERM)
		s.Close()
		return nil, fmt.Errorf("on %s: %w", host, ctx.Err())
	}
	if out.over {
		return nil, fmt.Errorf("on %s: `%s` printed more than %d bytes", host, firstWords(cmd, 4), maxOutput)
	}
	if err != nil {
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			return out.Bytes(), &exitError{code: ee.ExitStatus(), msg: fmt.Sprintf("%v: on %s, `%s` exited %d: %s", ErrRemoteCommand, host, firstWords(cmd, 4), ee.ExitStatus(), strings.TrimSpace(lastLines(errOut.String()+out.tail(), 5)))}
		}
		return out.Bytes(), fmt.Errorf("on %s, `%s`: %w", host, firstWords(cmd, 4), err)
	}
	return out.Bytes(), nil
}

// exitError is a command that ran on the server and exited non-zero.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) Unwrap() error { return ErrRemoteCommand }

// ExitCode is the exit status of the remote command behind err, or -1.
func ExitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return -1
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = append(f[:n], "…")
	}
	return strings.Join(f, " ")
}

// limitedBuffer keeps at most max bytes and notes that there was more.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// tail is the end of a text output, for error messages; binary output
// (a tar stream) gives nothing.
func (b *limitedBuffer) tail() string {
	s := b.String()
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	if strings.ContainsRune(s, 0) {
		return ""
	}
	return s
}
