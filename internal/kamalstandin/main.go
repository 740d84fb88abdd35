// Command kamalstandin stands in for the `kamal` executable in tests. It
// honours the commands understudy runs (accessory boot, reboot, start,
// stop, details, exec, logs; lock status) by acting on the nodes of a lab,
// where a real kamal would drive Docker on servers over SSH. It keeps the
// behaviour that matters: boot skips an existing container, start and stop
// keep it, reboot re-creates it, exec runs in a fresh container with the
// volumes (here: a script with PGDATA set, as the postgres user), and the
// accessory's secret env is resolved from .kamal/secrets as Kamal does.
//
// Environment: UNDERSTUDY_STANDIN_LAB (the lab directory),
// UNDERSTUDY_STANDIN_LOG (a file each argv is appended to),
// UNDERSTUDY_STANDIN_LOCKED (set: the deploy lock is held),
// UNDERSTUDY_STANDIN_PLAIN (an accessory name: its first boot runs it as it
// ran before understudy's init, with the image's own command and settings).
package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/lab"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ERROR", err)
		os.Exit(1)
	}
}

var b64RE = regexp.MustCompile(`echo ([A-Za-z0-9+/=]+) \| base64 -d`)

func run(args []string) error {
	if log := os.Getenv("UNDERSTUDY_STANDIN_LOG"); log != "" {
		f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, strings.Join(append([]string{"kamal"}, args...), " "))
			f.Close()
		}
	}
	var words []string
	dest := ""
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-d":
			i++
			dest = args[i]
		case "-c":
			i++
		default:
			words = append(words, args[i])
		}
	}
	if len(words) == 2 && words[0] == "lock" && words[1] == "status" {
		if os.Getenv("UNDERSTUDY_STANDIN_LOCKED") != "" {
			fmt.Println("Locked by: Someone at 2026-11-25 10:00:00 UTC\nVersion: abc123\nMessage: Manual deploy")
		} else {
			fmt.Println("There is no deploy lock")
		}
		return nil
	}
	if len(words) < 3 || words[0] != "accessory" {
		return fmt.Errorf("the stand-in does not know %q", strings.Join(args, " "))
	}
	verb, name := words[1], words[2]
	l, err := lab.Open(os.Getenv("UNDERSTUDY_STANDIN_LAB"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	container := filepath.Join(l.Dir, "run", name+".container")
	_, statErr := os.Stat(container)
	exists := statErr == nil
	switch verb {
	case "boot":
		if exists {
			fmt.Printf("Skipping booting `%s` on %s, a container already exists\n", name, name)
			return nil
		}
		if err := secretEnv(dest); err != nil {
			return err
		}
		os.WriteFile(container, nil, 0o644)
		if os.Getenv("UNDERSTUDY_STANDIN_PLAIN") == name {
			return l.StartPlain(ctx, name)
		}
		return l.Start(ctx, name)
	case "reboot":
		if err := l.Stop(ctx, name); err != nil {
			return err
		}
		if err := secretEnv(dest); err != nil {
			return err
		}
		os.WriteFile(container, nil, 0o644)
		return l.Start(ctx, name)
	case "start":
		if !exists {
			return fmt.Errorf("no container for %s", name)
		}
		if err := secretEnv(dest); err != nil {
			return err
		}
		return l.Start(ctx, name)
	case "stop":
		return l.Stop(ctx, name)
	case "details":
		fmt.Println("CONTAINER ID   IMAGE         COMMAND                  CREATED         STATUS         PORTS     NAMES")
		if exists {
			status := "Exited (0) 2 seconds ago"
			if run, _ := l.Running(ctx, name); run {
				status = "Up 5 minutes"
			}
			fmt.Printf("0123456789ab   postgres:15   \"docker-entrypoint.s…\"   5 minutes ago   %s             app-%s\n", status, name)
		}
		return nil
	case "logs":
		b, _ := os.ReadFile(l.LogFile(name))
		fmt.Print(string(b))
		return nil
	case "exec":
		m := b64RE.FindStringSubmatch(strings.Join(words[3:], " "))
		if m == nil {
			return fmt.Errorf("the stand-in runs only understudy's base64 scripts, got %q", strings.Join(words[3:], " "))
		}
		script, err := base64.StdEncoding.DecodeString(m[1])
		if err != nil {
			return err
		}
		if err := secretEnv(dest); err != nil {
			return err
		}
		fmt.Printf("Launching command from new container on %s...\n", name)
		out, err := l.Run(ctx, name, string(script))
		fmt.Print(out)
		return err
	}
	return fmt.Errorf("the stand-in does not know accessory %s", verb)
}

// secretEnv resolves the accessory's secrets from .kamal/secrets in the
// current directory, as kamal puts them in the container's env file.
func secretEnv(dest string) error {
	s, err := kamal.LoadSecrets(kamal.DirSource("."), ".kamal/secrets", dest)
	if err != nil {
		return err
	}
	for _, name := range []string{"POSTGRES_PASSWORD", "REPLICATION_PASSWORD"} {
		if v, err := s.Resolve(context.Background(), ".", name); err == nil {
			os.Setenv(name, v)
		}
	}
	return nil
}
