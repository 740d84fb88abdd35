// Command kamalstandin stands in for the `kamal` executable in tests, where
// Kamal (Ruby and its gems) is not installed. For each verb understudy uses
// (accessory boot, reboot, start, stop, details, exec, logs; lock status,
// acquire, release) it runs on the accessory's server, over SSH with
// deploy.yml's ssh: settings, exactly the commands Kamal 2.12 runs, in
// Kamal's order, built by kamal.AccessoryCommands (which is held against
// real Kamal's output; see docs/kamal-commands.md). Docker on the servers is
// real, so whatever Kamal's commands do or skip, the stand-in does or skips.
//
// Differences, none of which changes what Docker is asked to do: uploads
// are written with `cat >` instead of scp; hooks and the proxy are not run;
// the lock's "Locked by" name is the environment's USER.
//
// Environment: UNDERSTUDY_KNOWN_HOSTS (known_hosts files, as for
// understudy), UNDERSTUDY_STANDIN_LOG (each argv is appended to this file).
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/remote"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "  ERROR", err)
		os.Exit(1)
	}
}

type standin struct {
	cfg     *kamal.Config
	secrets *kamal.Secrets
	dialer  *remote.Dialer
	dest    string
}

func run(ctx context.Context, args []string) error {
	if log := os.Getenv("UNDERSTUDY_STANDIN_LOG"); log != "" {
		if f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, strings.Join(append([]string{"kamal"}, args...), " "))
			f.Close()
		}
	}
	var words []string
	dest, configPath := "", "config/deploy.yml"
	lines := 100
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-d", "--destination":
			i++
			dest = args[i]
		case "-c", "--config-file":
			i++
			configPath = args[i]
		case "--lines", "-n":
			i++
			fmt.Sscan(args[i], &lines)
		case "-q", "--quiet", "-v", "--verbose":
		default:
			words = append(words, args[i])
		}
	}
	cfg, err := kamal.Load(kamal.DirSource("."), configPath, dest, os.LookupEnv)
	if err != nil {
		return err
	}
	sec, err := kamal.LoadSecrets(kamal.DirSource("."), cfg.SecretsPath(), dest)
	if err != nil {
		return err
	}
	ssh, err := cfg.SSH()
	if err != nil {
		return err
	}
	o := remote.Options{User: ssh.User, Port: ssh.Port, Proxy: ssh.Proxy, KeysOnly: ssh.KeysOnly, Keys: ssh.Keys}
	if kh := os.Getenv("UNDERSTUDY_KNOWN_HOSTS"); kh != "" {
		o.KnownHost = filepath.SplitList(kh)
	}
	s := &standin{cfg: cfg, secrets: sec, dialer: remote.NewDialer(o), dest: dest}
	defer s.dialer.Close()

	if len(words) == 2 && words[0] == "lock" {
		return s.lock(ctx, words[1])
	}
	if len(words) < 3 || words[0] != "accessory" {
		return fmt.Errorf("the stand-in does not know %q", strings.Join(args, " "))
	}
	verb, name := words[1], words[2]
	ac, err := cfg.Commands(name)
	if err != nil {
		return err
	}
	hosts, _, err := cfg.Accessory(name).Hosts()
	if err != nil {
		return err
	}
	switch verb {
	case "boot":
		return s.withLock(ctx, func() error { return s.boot(ctx, ac, hosts, true) })
	case "reboot":
		return s.withLock(ctx, func() error {
			if err := s.prepare(ctx, ac, hosts); err != nil {
				return err
			}
			for _, h := range hosts {
				if _, err := s.exec(ctx, h, ac.PullImage()); err != nil {
					return err
				}
				s.exec(ctx, h, ac.Stop()) // raise_on_non_zero_exit: false
				if _, err := s.exec(ctx, h, ac.RemoveContainer()); err != nil {
					return err
				}
			}
			return s.boot(ctx, ac, hosts, false)
		})
	case "start", "stop":
		return s.withLock(ctx, func() error {
			for _, h := range hosts {
				s.audit(ctx, h, strings.ToUpper(verb[:1])+verb[1:]+"ped "+name+" accessory")
				cmd := ac.Start()
				if verb == "stop" {
					cmd = ac.Stop()
				}
				if _, err := s.exec(ctx, h, cmd); err != nil && verb == "start" {
					return err
				}
			}
			return nil
		})
	case "details":
		for _, h := range hosts {
			out, err := s.exec(ctx, h, ac.Info(false, false))
			if err != nil {
				return err
			}
			fmt.Printf("Accessory %s Host: %s\n%s\n", name, h, strings.TrimRight(string(out), "\n"))
		}
		return nil
	case "logs":
		for _, h := range hosts {
			out, err := s.exec(ctx, h, ac.Logs(lines))
			if err != nil {
				return err
			}
			fmt.Print(string(out))
		}
		return nil
	case "exec":
		cmd := strings.Join(words[3:], " ")
		fmt.Println("Launching command from new container...")
		for _, h := range hosts {
			if err := s.login(ctx, ac, h); err != nil {
				return err
			}
			s.audit(ctx, h, "Executed cmd '"+cmd+"' on "+name+" accessory")
			out, err := s.exec(ctx, h, ac.ExecNew(cmd))
			if err != nil {
				return err
			}
			fmt.Printf("App Host: %s\n%s\n", h, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return fmt.Errorf("the stand-in does not know accessory %s", verb)
}

// exec runs one command line on a server, printing it as Kamal's INFO lines do.
func (s *standin) exec(ctx context.Context, host, cmd string) ([]byte, error) {
	fmt.Printf("  INFO Running %s on %s\n", redactLogin(cmd), host)
	return s.dialer.Exec(ctx, host, cmd, nil)
}

func redactLogin(cmd string) string {
	if i := strings.Index(cmd, " -p "); strings.HasPrefix(cmd, "docker login ") && i > 0 {
		return cmd[:i] + " -p [REDACTED]"
	}
	return cmd
}

func (s *standin) secret(key string) string {
	v, err := s.secrets.Resolve(context.Background(), ".", key)
	if err != nil {
		return ""
	}
	return v
}

// login is registry.login: docker login unless there is no registry.
func (s *standin) login(ctx context.Context, ac *kamal.AccessoryCommands, host string) error {
	cmd := ac.Login(s.secret(ac.Registry.PasswordSecret))
	if cmd == "" {
		return nil
	}
	_, err := s.exec(ctx, host, cmd)
	return err
}

// prepare is the CLI's prepare: registry login, then the kamal network
// ("already exists" is not a failure).
func (s *standin) prepare(ctx context.Context, ac *kamal.AccessoryCommands, hosts []string) error {
	for _, h := range hosts {
		if err := s.login(ctx, ac, h); err != nil {
			return err
		}
		if _, err := s.exec(ctx, h, ac.CreateNetwork()); err != nil && !strings.Contains(err.Error(), "already exists") {
			return err
		}
	}
	return nil
}

// boot follows Kamal's accessory boot: hosts with any container (running
// or stopped) are skipped, directories and files go to every host, then
// the env file and docker run on the others.
func (s *standin) boot(ctx context.Context, ac *kamal.AccessoryCommands, hosts []string, prepare bool) error {
	if prepare {
		if err := s.prepare(ctx, ac, hosts); err != nil {
			return err
		}
	}
	var todo, booted []string
	for _, h := range hosts {
		out, err := s.exec(ctx, h, ac.Info(true, true))
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(out)) != "" {
			booted = append(booted, h)
		} else {
			todo = append(todo, h)
		}
	}
	if len(booted) > 0 {
		fmt.Printf("Skipping booting `%s` on %s, a container already exists\n", ac.Name, strings.Join(booted, ", "))
	}
	for _, h := range hosts {
		for _, d := range ac.Directories {
			if _, err := s.exec(ctx, h, kamal.MakeDirectory(d.HostPath)); err != nil {
				return err
			}
			if d.Mode != "" {
				if _, err := s.exec(ctx, h, kamal.Chmod(d.Mode, d.HostPath)); err != nil {
					return err
				}
			}
		}
		for _, f := range ac.Files {
			body, err := os.ReadFile(f.Local)
			if err != nil {
				return fmt.Errorf("Missing file: %s", f.Local)
			}
			if _, err := s.exec(ctx, h, kamal.MakeDirectory(filepath.Dir(f.HostPath))); err != nil {
				return err
			}
			if err := s.upload(ctx, h, f.HostPath, body, ""); err != nil {
				return err
			}
			if _, err := s.exec(ctx, h, kamal.Chmod(f.Mode, f.HostPath)); err != nil {
				return err
			}
		}
	}
	for _, h := range todo {
		s.audit(ctx, h, "Booted "+ac.Name+" accessory")
		if _, err := s.exec(ctx, h, ac.EnsureEnvDirectory()); err != nil {
			return err
		}
		if err := s.upload(ctx, h, ac.SecretsPath(), []byte(ac.EnvFile(s.secret)), "0600"); err != nil {
			return err
		}
		if _, err := s.exec(ctx, h, ac.Run(h)); err != nil {
			return err
		}
	}
	return nil
}

// upload writes a file on the server (SSHKit's upload!, here through cat).
func (s *standin) upload(ctx context.Context, host, path string, body []byte, mode string) error {
	fmt.Printf("  INFO Uploading %s to %s\n", path, host)
	cmd := "cat > " + shq(path)
	if mode != "" {
		cmd = "umask 077 && " + cmd + " && chmod " + mode + " " + shq(path)
	}
	_, err := s.dialer.Exec(ctx, host, cmd, strings.NewReader(string(body)))
	return err
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// audit is Kamal's auditor record on a host.
func (s *standin) audit(ctx context.Context, host, line string) {
	name := s.cfg.Service()
	if s.dest != "" {
		name += "-" + s.dest
	}
	tag := fmt.Sprintf("[%s] [%s]", time.Now().UTC().Format(time.RFC3339), user())
	s.exec(ctx, host, "/usr/bin/env mkdir -p .kamal && echo "+kamal.RubyDump(tag+" "+line)+" >> .kamal/"+name+"-audit.log")
}

func user() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "Unknown"
}

// primaryHost is where Kamal keeps the deploy lock: the first host of the
// primary role (web, unless primary_role says otherwise).
func (s *standin) primaryHost() (string, error) {
	role, _ := s.cfg.Str(s.cfg.Root.Get("primary_role"))
	if role == "" {
		role = "web"
	}
	if hs := s.cfg.RoleHosts(role); len(hs) > 0 {
		return hs[0], nil
	}
	return "", errors.New("no host for the primary role")
}

func (s *standin) lock(ctx context.Context, verb string) error {
	h, err := s.primaryHost()
	if err != nil {
		return err
	}
	app := s.cfg.Service()
	switch verb {
	case "status":
		out, err := s.dialer.Exec(ctx, h, kamal.LockStatus(app, s.dest), nil)
		if err != nil {
			fmt.Println("There is no deploy lock")
			return nil
		}
		fmt.Println(string(out))
		return nil
	case "acquire":
		return s.acquire(ctx, h, "Manual lock")
	case "release":
		_, err := s.exec(ctx, h, kamal.LockRelease(app, s.dest))
		return err
	}
	return fmt.Errorf("the stand-in does not know lock %s", verb)
}

func (s *standin) acquire(ctx context.Context, host, message string) error {
	if _, err := s.exec(ctx, host, "/usr/bin/env mkdir -p .kamal"); err != nil {
		return err
	}
	details := fmt.Sprintf("Locked by: %s at %s\nVersion: %s\nMessage: %s", user(), time.Now().UTC().Format(time.RFC3339), "standin", message)
	if _, err := s.exec(ctx, host, kamal.LockAcquire(s.cfg.Service(), s.dest, rubyEncode64(details))); err != nil {
		if strings.Contains(err.Error(), "cannot create directory") || strings.Contains(err.Error(), "File exists") {
			return errors.New("Deploy lock found. Run 'kamal lock help' for more information")
		}
		return err
	}
	return nil
}

// withLock is modify(lock: true): the automatic deploy lock around a verb.
func (s *standin) withLock(ctx context.Context, f func() error) error {
	h, err := s.primaryHost()
	if err != nil {
		return err
	}
	fmt.Println("Acquiring the deploy lock...")
	if err := s.acquire(ctx, h, "Automatic deploy lock"); err != nil {
		return err
	}
	ferr := f()
	fmt.Println("Releasing the deploy lock...")
	if _, err := s.exec(context.WithoutCancel(ctx), h, kamal.LockRelease(s.cfg.Service(), s.dest)); err != nil && ferr == nil {
		return err
	}
	return ferr
}

// rubyEncode64 is Ruby's Base64.encode64: lines of 60 characters, each
// ending in a newline.
func rubyEncode64(s string) string {
	enc := base64.StdEncoding.EncodeToString([]byte(s))
	var b strings.Builder
	for len(enc) > 60 {
		b.WriteString(enc[:60] + "\n")
		enc = enc[60:]
	}
	b.WriteString(enc + "\n")
	return b.String()
}
