package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/setup"
)

// connectCommand prints the connection settings an app's stack takes.
type connectCommand struct{ out io.Writer }

func (*connectCommand) Name() string { return "connect" }
func (*connectCommand) Summary() string {
	return "how your app connects so it follows the primary: --stack rails|django|laravel|node|postgresjs|go|python|php"
}

func (c *connectCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	stack := fs.String("stack", "", "the app's framework or driver: "+stackNames())
	labDir := fs.String("lab", "", "the local lab in this directory")
	app := fs.String("app", ".", "the Kamal app directory (holding config/deploy.yml)")
	config := fs.String("c", "config/deploy.yml", "Kamal config file, relative to the app directory")
	dest := fs.String("d", "", "Kamal destination")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (understudy connect --stack NAME)", fs.Arg(0))
	}
	var in setup.ConnectInput
	if *labDir != "" {
		l, err := lab.Open(*labDir)
		if err != nil {
			return err
		}
		in = setup.ConnectInput{Nodes: l.Cluster.Nodes, User: "USER", DB: "DB"}
		if r := l.Router(); r != nil {
			in.Router = &setup.RouterEndpoint{Host: "127.0.0.1", Port: r.Port, ROPort: r.ROPort}
		}
	} else {
		abs, err := filepath.Abs(*app)
		if err != nil {
			return err
		}
		d, err := setup.LoadDeployed(kamal.DirSource(abs), setup.Options{ConfigPath: *config, Destination: *dest, Env: os.LookupEnv})
		if err != nil {
			return err
		}
		in = setup.DeployedConnect(d)
	}
	if *stack == "" {
		if in.Router != nil {
			fmt.Fprintf(c.out, "Every stack connects through the router, one host that follows the primary:\n  %s\nreads from the standby: %s\nEach framework's form: understudy connect --stack %s\n", in.RouterURL(false), in.RouterURL(true), stackNames())
			return nil
		}
		fmt.Fprintf(c.out, "There is no router, so each framework takes the node list its own way. What each survives:\n\n%s\nPass --stack %s for its settings.\n", setup.ConnectTable(), stackNames())
		return nil
	}
	st, err := setup.ParseStack(*stack)
	if err != nil {
		return err
	}
	fmt.Fprint(c.out, setup.ConnectAdvice(st, in))
	return nil
}

func stackNames() string {
	var n []string
	for _, s := range setup.Stacks {
		n = append(n, string(s))
	}
	return strings.Join(n, "|")
}
