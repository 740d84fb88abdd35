package kamal

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// The commands Kamal 2.12 runs on an accessory's server, built the way
// Kamal builds them (lib/kamal/commands/accessory.rb, commands/lock.rb,
// commands/registry.rb, configuration/accessory.rb, configuration/env.rb,
// utils.rb, env_file.rb in basecamp/kamal). Each is one command line as
// SSHKit sends it: the words joined by spaces, run by the SSH user's login
// shell in its home directory (so $PWD is the home directory). Docker is
// called as plain `docker` (Kamal maps it so); other programs as SSHKit
// does, through /usr/bin/env. Pure: tests hold the output against what real
// Kamal prints for the same deploy.yml.

// AccessoryCommands is one accessory as Kamal turns it into commands.
type AccessoryCommands struct {
	App         string // the root service:
	Destination string
	Name        string // the accessory's key
	ServiceName string // the container's name and its service label
	Image       string
	Network     string
	Port        string // publish, "" for none
	Clear       []Pair // env.clear, in file order
	Secrets     []Pair // env.secret: container variable, secrets key (aliases NAME:KEY)
	Labels      []Pair // service=<name> first, then labels:
	Volumes     []string
	Files       []UploadedFile
	Directories []Directory
	Options     []Pair // options: (restart is the restart policy, not an option)
	Restart     string
	Cmd         string
	LogArgs     []string
	Registry    Registry
}

// Pair is one key and value, in the order the file gives them.
type Pair struct{ Key, Val string }

// UploadedFile is a files: entry: copied from Local to HostPath (relative
// to the SSH user's home) with Mode, mounted at ContainerPath.
type UploadedFile struct {
	Local, HostPath, ContainerPath, Mode, Owner, Options string
}

// Directory is a directories: entry: HostPath is created on the server
// ($PWD/... for a relative one) and mounted at ContainerPath.
type Directory struct {
	HostPath, VolumePath, ContainerPath, Mode, Owner, Options string
}

// Registry is where docker login goes (the root registry:, or the
// accessory's own). Password is the name of the secret holding it.
type Registry struct {
	Server, Username, PasswordSecret string
}

// Commands builds an accessory's commands from the merged config. Values
// that ERB leaves unresolved are an error naming the field.
func (c *Config) Commands(name string) (*AccessoryCommands, error) {
	a := c.Accessory(name)
	if a == nil {
		return nil, fmt.Errorf("no accessory %q in %s", name, c.Files[0].Path)
	}
	str := func(v *Val, what string) (string, error) {
		if v == nil || v.IsNull() {
			return "", nil
		}
		s, ok := c.Str(v)
		if !ok {
			return "", fmt.Errorf("%s: accessories/%s/%s has no value here (ERB or not a scalar)", v.Pos(), name, what)
		}
		return s, nil
	}
	ac := &AccessoryCommands{App: c.Service(), Destination: c.Destination, Name: name, ServiceName: a.ServiceName(),
		Network: "kamal", Restart: "unless-stopped"}
	var err error
	if ac.Image, err = str(a.Field("image"), "image"); err != nil {
		return nil, err
	}
	reg := c.Root.Get("registry")
	if ar := a.Field("registry"); ar != nil {
		reg = ar
	}
	if reg != nil {
		ac.Registry.Server, _ = c.Str(reg.Get("server"))
		ac.Registry.Username, _ = c.Str(reg.Get("username"))
		if pw := reg.Get("password"); pw.IsSeq() && len(pw.Items()) > 0 {
			ac.Registry.PasswordSecret, _ = c.Str(pw.Items()[0])
		}
		if a.Field("registry") != nil && ac.Registry.Server != "" {
			ac.Image = ac.Registry.Server + "/" + ac.Image
		}
	}
	if n, err := str(a.Field("network"), "network"); err != nil {
		return nil, err
	} else if n != "" {
		ac.Network = n
	}
	if ac.Port, err = str(a.Field("port"), "port"); err != nil {
		return nil, err
	}
	if ac.Port != "" && !strings.Contains(ac.Port, ":") {
		ac.Port = ac.Port + ":" + ac.Port
	}
	if ac.Cmd, err = str(a.Field("cmd"), "cmd"); err != nil {
		return nil, err
	}
	env := a.Field("env")
	clear := env
	if env.Get("clear") != nil || env.Get("secret") != nil || env.Get("tags") != nil {
		clear = env.Get("clear")
	}
	for _, k := range clear.Keys() {
		v, err := str(clear.Get(k), "env/"+k)
		if err != nil {
			return nil, err
		}
		ac.Clear = append(ac.Clear, Pair{k, v})
	}
	for _, it := range env.Get("secret").Items() {
		s, err := str(it, "env/secret")
		if err != nil {
			return nil, err
		}
		k, alias, ok := strings.Cut(s, ":")
		if !ok {
			alias = k
		}
		ac.Secrets = append(ac.Secrets, Pair{k, alias})
	}
	ac.Labels = []Pair{{"service", ac.ServiceName}}
	labels := a.Field("labels")
	for _, k := range labels.Keys() {
		v, err := str(labels.Get(k), "labels/"+k)
		if err != nil {
			return nil, err
		}
		if k == "service" {
			ac.Labels[0].Val = v
			continue
		}
		ac.Labels = append(ac.Labels, Pair{k, v})
	}
	for _, it := range a.Field("volumes").Items() {
		s, err := str(it, "volumes")
		if err != nil {
			return nil, err
		}
		ac.Volumes = append(ac.Volumes, s)
	}
	for _, kind := range []string{"files", "directories"} {
		for _, it := range a.Field(kind).Items() {
			var local, remote, opts, mode, owner string
			if it.IsMap() {
				local, _ = c.Str(it.Get("local"))
				remote, _ = c.Str(it.Get("remote"))
				opts, _ = c.Str(it.Get("options"))
				mode, _ = c.Str(it.Get("mode"))
				owner, _ = c.Str(it.Get("owner"))
			} else {
				s, err := str(it, kind)
				if err != nil {
					return nil, err
				}
				parts := strings.SplitN(s, ":", 3)
				local = parts[0]
				if len(parts) > 1 {
					remote = parts[1]
				}
				if len(parts) > 2 {
					opts = parts[2]
				}
			}
			if kind == "files" {
				if mode == "" {
					mode = "755"
				}
				ac.Files = append(ac.Files, UploadedFile{Local: local, HostPath: ac.ServiceName + remote, ContainerPath: remote, Mode: mode, Owner: owner, Options: opts})
				continue
			}
			d := Directory{HostPath: local, VolumePath: local, ContainerPath: remote, Mode: mode, Owner: owner, Options: opts}
			if !path.IsAbs(local) {
				d.HostPath = "$PWD/" + ac.ServiceName + "/" + local
				d.VolumePath = ac.ServiceName + "/" + local
			}
			ac.Directories = append(ac.Directories, d)
		}
	}
	opts := a.Field("options")
	for _, k := range opts.Keys() {
		v := opts.Get(k)
		vals := []*Val{v}
		if v.IsSeq() {
			vals = v.Items()
		}
		for _, it := range vals {
			s, err := str(it, "options/"+k)
			if err != nil {
				return nil, err
			}
			if k == "restart" {
				ac.Restart = s
				continue
			}
			ac.Options = append(ac.Options, Pair{k, s})
		}
	}
	ac.LogArgs = c.logArgs()
	return ac, nil
}

// logArgs is Kamal's logging: driver and options, or max-size=10m.
func (c *Config) logArgs() []string {
	l := c.Root.Get("logging")
	driver, _ := c.Str(l.Get("driver"))
	opts := l.Get("options")
	if driver == "" && len(opts.Keys()) == 0 {
		return []string{"--log-opt", "max-size=" + RubyDump("10m")}
	}
	var out []string
	if driver != "" {
		out = append(out, "--log-driver", RubyDump(driver))
	}
	for _, k := range opts.Keys() {
		v, _ := c.Str(opts.Get(k))
		out = append(out, "--log-opt", k+"="+RubyDump(v))
	}
	return out
}

func (a *AccessoryCommands) envDirectory() string {
	return ".kamal/apps/" + a.App + "/env/accessories"
}

// SecretsPath is the env file Kamal uploads for the accessory (0600),
// relative to the SSH user's home.
func (a *AccessoryCommands) SecretsPath() string { return a.envDirectory() + "/" + a.Name + ".env" }

// EnvFile is that file's content, from the resolved secrets (by the
// secrets key): KEY=value lines escaped for Docker's env-file reader.
func (a *AccessoryCommands) EnvFile(secret func(key string) string) string {
	var b strings.Builder
	for _, s := range a.Secrets {
		b.WriteString(s.Key + "=" + escapeEnvFileValue(secret(s.Val)) + "\n")
	}
	if b.Len() == 0 {
		return "\n"
	}
	return b.String()
}

func (a *AccessoryCommands) envArgs() []string {
	var out []string
	for _, kv := range a.Clear {
		out = append(out, argumentize("--env", kv)...)
	}
	return append(out, "--env-file", a.SecretsPath())
}

func (a *AccessoryCommands) volumeArgs() []string {
	var out []string
	for _, v := range a.Volumes {
		out = append(out, "--volume", v)
	}
	vol := func(host, container, opts string) {
		if !path.IsAbs(host) {
			host = "$PWD/" + host
		}
		s := host + ":" + container
		if opts != "" {
			s += ":" + opts
		}
		out = append(out, "--volume", s)
	}
	for _, f := range a.Files {
		vol(f.HostPath, f.ContainerPath, f.Options)
	}
	for _, d := range a.Directories {
		vol(d.VolumePath, d.ContainerPath, d.Options)
	}
	return out
}

func (a *AccessoryCommands) optionArgs() []string {
	var out []string
	for _, kv := range a.Options {
		if kv.Val == "true" {
			out = append(out, "--"+kv.Key)
			continue
		}
		out = append(out, "--"+kv.Key, RubyDump(kv.Val))
	}
	return out
}

func line(words ...string) string {
	var nonEmpty []string
	for _, w := range words {
		if w != "" {
			nonEmpty = append(nonEmpty, w)
		}
	}
	return strings.Join(nonEmpty, " ")
}

func (a *AccessoryCommands) serviceFilter() []string {
	return []string{"--filter", "label=service=" + a.ServiceName}
}

// Run is `docker run` as accessory boot runs it on host.
func (a *AccessoryCommands) Run(host string) string {
	w := []string{"docker", "run", "--name", a.ServiceName, "--detach", "--restart", a.Restart, "--network", a.Network}
	w = append(w, a.LogArgs...)
	if a.Port != "" {
		w = append(w, "--publish", a.Port)
	}
	w = append(w, "--env", `KAMAL_HOST="`+host+`"`)
	w = append(w, a.envArgs()...)
	w = append(w, a.volumeArgs()...)
	for _, kv := range a.Labels {
		w = append(w, argumentize("--label", kv)...)
	}
	w = append(w, a.optionArgs()...)
	w = append(w, a.Image, a.Cmd)
	return line(w...)
}

// Start is accessory start.
func (a *AccessoryCommands) Start() string {
	return line("docker", "container", "start", a.ServiceName)
}

// Stop is accessory stop (Docker's stop: the stop signal, then the stop
// timeout, then SIGKILL).
func (a *AccessoryCommands) Stop() string { return line("docker", "container", "stop", a.ServiceName) }

// Info is `docker ps` for the accessory's container: details runs it
// without -a (running containers only); boot runs it with -a -q to see
// whether any container, running or stopped, exists.
func (a *AccessoryCommands) Info(all, quiet bool) string {
	w := []string{"docker", "ps"}
	if all {
		w = append(w, "-a")
	}
	if quiet {
		w = append(w, "-q")
	}
	return line(append(w, a.serviceFilter()...)...)
}

// Logs is accessory logs --lines N (timestamps on, as by default).
func (a *AccessoryCommands) Logs(lines int) string {
	return line("docker", "logs", a.ServiceName, fmt.Sprintf(" --tail %d", lines), "--timestamps", "2>&1")
}

// ExecNew is accessory exec without --reuse: a fresh container with the
// accessory's network, env, volumes and options; cmd is passed as the user
// wrote it (Kamal joins the words and does not escape them).
func (a *AccessoryCommands) ExecNew(cmd string) string {
	w := []string{"docker", "run", "--rm", "--network", a.Network}
	w = append(w, a.envArgs()...)
	w = append(w, a.volumeArgs()...)
	w = append(w, a.optionArgs()...)
	return line(append(w, a.Image, cmd)...)
}

// PullImage is reboot's first step.
func (a *AccessoryCommands) PullImage() string { return line("docker", "image", "pull", a.Image) }

// RemoveContainer is reboot's removal of the stopped container.
func (a *AccessoryCommands) RemoveContainer() string {
	return line(append([]string{"docker", "container", "prune", "--force"}, a.serviceFilter()...)...)
}

// Login is docker login as boot, reboot and exec run it first (nothing
// when there is no registry server). password is the resolved secret.
func (a *AccessoryCommands) Login(password string) string {
	if a.Registry.Server == "" {
		return ""
	}
	return line("docker", "login", a.Registry.Server, "-u", RubyDump(a.Registry.Username), "-p", RubyDump(password))
}

// CreateNetwork is prepare's `docker network create kamal` (an "already
// exists" failure is ignored by Kamal).
func (a *AccessoryCommands) CreateNetwork() string { return "docker network create kamal" }

// EnsureEnvDirectory makes the env file's directory.
func (a *AccessoryCommands) EnsureEnvDirectory() string {
	return line("/usr/bin/env", "mkdir", "-p", a.envDirectory())
}

// MakeDirectory is mkdir -p for a directories: entry or an upload's parent.
func MakeDirectory(p string) string { return line("/usr/bin/env", "mkdir", "-p", p) }

// Chmod sets a mode, as upload and directories do.
func Chmod(mode, p string) string { return line("/usr/bin/env", "chmod", mode, p) }

// lockDir is Kamal's deploy lock: .kamal/lock-<service>[-<destination>].
func lockDir(app, dest string) string {
	name := "lock-" + app
	if dest != "" {
		name += "-" + dest
	}
	return ".kamal/" + name
}

// LockStatus is `kamal lock status` on the primary host: stat of the lock
// directory, then its details decoded.
func LockStatus(app, dest string) string {
	d := lockDir(app, dest)
	return line("/usr/bin/env", "stat", d, ">", "/dev/null", "&&", "cat", d+"/details", "|", "base64", "-d")
}

// LockAcquire takes the lock: mkdir fails while someone holds it.
// detailsB64 is Base64.encode64 of the details text (with its line breaks).
func LockAcquire(app, dest, detailsB64 string) string {
	d := lockDir(app, dest)
	return line("/usr/bin/env", "mkdir", d, "&&", "echo", `"`+detailsB64+`"`, ">", d+"/details")
}

// LockRelease removes the lock.
func LockRelease(app, dest string) string {
	d := lockDir(app, dest)
	return line("/usr/bin/env", "rm", d+"/details", "&&", "rm", "-r", d)
}

// argumentize is Kamal::Utils.argumentize for one key and value.
func argumentize(flag string, kv Pair) []string {
	if kv.Val == "" {
		return []string{flag, kv.Key}
	}
	return []string{flag, kv.Key + "=" + RubyDump(kv.Val)}
}

// RubyDump is Kamal::Utils.escape_shell_value: ASCII runs become Ruby's
// String#dump (double quotes, backslash escapes) with ` escaped and $
// escaped unless it starts ${...}; runs of other characters stay as they
// are, between their own quoted neighbours.
func RubyDump(s string) string {
	return eachASCIIRun(s, func(run string) string {
		return escapeDollars(strings.ReplaceAll(dump(run), "`", "\\`"))
	})
}

// eachASCIIRun applies f to each run of ASCII characters (Kamal's
// scan(/[\x00-\x7F]+|[^\x00-\x7F]+/)), keeping the other runs as they are.
func eachASCIIRun(s string, f func(string) string) string {
	var b strings.Builder
	for _, run := range splitASCII(s) {
		if run[0] >= utf8.RuneSelf {
			b.WriteString(run)
			continue
		}
		b.WriteString(f(run))
	}
	return b.String()
}

// escapeDollars is gsub(/\$(?!{[^\}]*\})/, '\$').
func escapeDollars(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' {
			rest := s[i+1:]
			if strings.HasPrefix(rest, "{") && strings.Contains(rest[1:], "}") {
				b.WriteByte('$')
				continue
			}
			b.WriteString(`\$`)
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// splitASCII is scan(/[\x00-\x7F]+|[^\x00-\x7F]+/).
func splitASCII(s string) []string {
	var out []string
	if s == "" {
		return nil // Ruby's "".scan gives [], and [].join gives ""
	}
	start := 0
	for i := 1; i <= len(s); i++ {
		if i == len(s) || (s[i] < utf8.RuneSelf) != (s[start] < utf8.RuneSelf) {
			out = append(out, s[start:i])
			start = i
		}
	}
	return out
}

// dump is Ruby's String#dump for ASCII text.
func dump(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\f':
			b.WriteString(`\f`)
		case '\v':
			b.WriteString(`\v`)
		case '\b':
			b.WriteString(`\b`)
		case '\a':
			b.WriteString(`\a`)
		case 0x1b:
			b.WriteString(`\e`)
		case '#':
			if i+1 < len(s) && (s[i+1] == '{' || s[i+1] == '$' || s[i+1] == '@') {
				b.WriteString(`\#`)
			} else {
				b.WriteByte('#')
			}
		default:
			if c < 0x20 || c == 0x7f {
				fmt.Fprintf(&b, `\x%02X`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// escapeEnvFileValue is Kamal::EnvFile's escaping: dump without the outer
// quotes, then \" and \# back to " and # (Docker reads both literally).
func escapeEnvFileValue(s string) string {
	return eachASCIIRun(s, func(run string) string {
		d := dump(run)
		d = d[1 : len(d)-1]
		d = strings.ReplaceAll(d, `\"`, `"`)
		return strings.ReplaceAll(d, `\#`, `#`)
	})
}
