// Command understudy gives a Kamal app's PostgreSQL accessory a standby that
// is always ready to take over. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/understudy-dev/understudy/internal/version"
)

// command is one subcommand: a flag set and a Run.
type command interface {
	Name() string
	Summary() string
	Run(ctx context.Context, args []string) error
}

// exitError carries a specific exit status (check uses 0/1/2).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

// Unwrap lets `-h` (flag.ErrHelp) exit 0 from a command that gives its
// errors an exit status (cron reads 2 as critical).
func (e *exitError) Unwrap() error { return e.err }

func commands(stdout, stderr io.Writer) []command {
	return append([]command{
		&planCommand{out: stdout},
		&initCommand{out: stdout},
		&passwordCommand{out: stdout},
		&failoverCommand{out: stdout},
		&labCommand{out: stdout},
		&applyCommand{out: stdout, in: os.Stdin},
		&statusCommand{out: stdout},
		&checkCommand{out: stdout},
		&verifyCommand{out: stdout},
		&backupCommand{out: stdout},
		&agentCommand{out: stdout},
		&witnessCommand{out: stdout},
		&connectCommand{out: stdout},
		&backupsCommand{out: stdout},
		&restoreCommand{out: stdout},
	}, append(roleCommands(stdout), &demoCommand{out: stdout})...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands(stdout, stderr)
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout, cmds)
		return 0
	}
	if args[0] == "version" || args[0] == "--version" {
		// One line: the release version, its commit, the Go toolchain and
		// the platform (release builds are stamped; see docs/install.md).
		fmt.Fprintf(stdout, "understudy %s %s/%s\n", version.Info(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	for _, c := range cmds {
		if c.Name() == args[0] {
			err := c.Run(ctx, args[1:])
			if err == nil {
				return 0
			}
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			var ee *exitError
			if errors.As(err, &ee) {
				if ee.err != nil && ee.err.Error() != "" {
					fmt.Fprintln(stderr, "understudy:", ee.err)
				}
				return ee.code
			}
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				fmt.Fprintln(stderr, "understudy: interrupted:", err)
				return 130
			}
			fmt.Fprintln(stderr, "understudy:", err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "understudy: unknown command %q\n\n", args[0])
	usage(stderr, cmds)
	return 2
}

func usage(w io.Writer, cmds []command) {
	fmt.Fprintln(w, "understudy: a PostgreSQL standby for Kamal apps, always ready to take the stage.")
	fmt.Fprintln(w, "\nUsage: understudy <command> [flags]   (understudy <command> -h for its flags)\n\nCommands:")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.Name(), c.Summary())
	}
	fmt.Fprintf(w, "  %-10s %s\n", "version", "the release version, commit and Go version of this understudy (also --version)")
}
