package kamal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Runner runs one $(command) of a secrets file: a command line for the
// shell, or Kamal's own `kamal secrets ...` as kamal with --inline. It
// returns the command's standard output.
type Runner interface {
	Shell(ctx context.Context, dir, command string) (string, error)
	Kamal(ctx context.Context, dir string, args []string) (string, error)
}

// ExecRunner runs commands as local processes. The command line goes to
// /bin/sh on its standard input, never in argv (Kamal hands it to Ruby's
// backticks, that is sh -c; the effect is the same).
type ExecRunner struct{}

func (ExecRunner) Shell(ctx context.Context, dir, command string) (string, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-s")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(command)
	return output(cmd)
}

func (ExecRunner) Kamal(ctx context.Context, dir string, args []string) (string, error) {
	cmd := exec.CommandContext(ctx, "kamal", args...)
	cmd.Dir = dir
	return output(cmd)
}

// output runs cmd in a process group of its own, so that when ctx ends
// the command and whatever it started (a password manager under the shell)
// are killed together and understudy stops at once instead of waiting for
// them to close its pipe.
func output(cmd *exec.Cmd) (string, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, strings.TrimSpace(lastLine(stderr.String())))
	}
	return string(out), nil
}

// Resolve returns a secret's value as Kamal computes it (dotenv.go), in
// the app directory. Only the lines the value depends on are evaluated.
// Errors name the file and line and never include a value.
func (s *Secrets) Resolve(ctx context.Context, appDir, name string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.memo == nil {
		s.memo = map[*SecretsFile]map[int]string{}
	}
	return s.resolve(ctx, appDir, name, ExecRunner{}, os.LookupEnv, func(f *SecretsFile) map[int]string {
		if s.memo[f] == nil {
			s.memo[f] = map[int]string{}
		}
		return s.memo[f]
	})
}

// ResolveWith is Resolve with the command runner and the environment
// given; nothing is kept between calls.
func (s *Secrets) ResolveWith(ctx context.Context, appDir, name string, run Runner, env func(string) (string, bool)) (string, error) {
	return s.resolve(ctx, appDir, name, run, env, func(*SecretsFile) map[int]string { return map[int]string{} })
}

func (s *Secrets) resolve(ctx context.Context, appDir, name string, run Runner, env func(string) (string, bool), memo func(*SecretsFile) map[int]string) (string, error) {
	f, line := s.Lookup(name)
	if line == nil {
		var paths []string
		for _, f := range s.Files {
			paths = append(paths, f.Path)
		}
		return "", fmt.Errorf("secret %s is not defined in %s: add it there (a reference such as %s=$%s)", name, strings.Join(paths, " or "), name, name)
	}
	ev := &evaluator{ctx: ctx, dir: appDir, f: f, run: run, env: env, memo: memo(f)}
	idx := -1
	for i := range f.Lines {
		if &f.Lines[i] == line {
			idx = i
		}
	}
	v, err := ev.value(idx)
	if err != nil {
		return "", err
	}
	if v == "" {
		return "", fmt.Errorf("%s:%d: secret %s resolved to an empty value: set the variable or fix the command it names", f.Path, line.Line, name)
	}
	return v, nil
}

type evaluator struct {
	ctx  context.Context
	dir  string
	f    *SecretsFile
	run  Runner
	env  func(string) (string, bool)
	memo map[int]string
	err  error
}

// value is line i's value: dotenv's parse_value with Kamal's command
// substitution, looking up $VAR among the lines before it.
func (e *evaluator) value(i int) (string, error) {
	if v, ok := e.memo[i]; ok {
		return v, nil
	}
	l := e.f.Lines[i]
	v, quote := dotenvValue(l.Raw)
	if quote != '\'' {
		lookup := func(name string) string {
			for j := i - 1; j >= 0; j-- {
				if e.f.Lines[j].Key == name {
					val, err := e.value(j)
					if err != nil && e.err == nil {
						e.err = err
					}
					return val
				}
			}
			if e.env != nil {
				if val, ok := e.env(name); ok {
					return val
				}
			}
			return ""
		}
		v = substituteVariables(v, lookup)
		var err error
		if v, err = e.commands(v, l, lookup); err != nil {
			return "", err
		}
		if e.err != nil {
			return "", e.err
		}
	}
	e.memo[i] = v
	return v, nil
}

// commands replaces each $(command) (not \$(...)) with its output.
func (e *evaluator) commands(v string, l SecretLine, lookup func(string) string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(v); {
		if v[i] == '\\' && i+1 < len(v) {
			if end, ok := commandSpan(v, i+1); ok {
				b.WriteString(v[i+1 : end])
				i = end
				continue
			}
		}
		end, ok := commandSpan(v, i)
		if !ok {
			b.WriteByte(v[i])
			i++
			continue
		}
		command := substituteVariables(v[i+2:end-1], lookup)
		var out string
		var err error
		if words := strings.Fields(command); len(words) >= 2 && words[0] == "kamal" && words[1] == "secrets" {
			args, serr := shellSplit(command)
			if serr != nil {
				return "", fmt.Errorf("%s:%d: secret %s: %v", e.f.Path, l.Line, l.Key, serr)
			}
			out, err = e.run.Kamal(e.ctx, e.dir, append(args[1:], "--inline"))
		} else {
			out, err = e.run.Shell(e.ctx, e.dir, command)
		}
		if err != nil {
			if errors.Is(e.ctx.Err(), context.Canceled) {
				return "", e.ctx.Err()
			}
			return "", fmt.Errorf("%s:%d: resolving secret %s: its command failed (%v). Check that the command works in this shell (kamal secrets print shows what Kamal gets)", e.f.Path, l.Line, l.Key, err)
		}
		out = strings.TrimSuffix(out, "\n")
		out = strings.TrimSuffix(out, "\r")
		b.WriteString(out)
		i = end
	}
	return b.String(), nil
}

// shellSplit is Ruby's Shellwords.shellsplit: words split on blanks, with
// single quotes, double quotes (\ escapes " \ $ ` and newline) and
// backslashes, and nothing run.
func shellSplit(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unmatched ' in the kamal secrets command")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`\n", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New(`unmatched " in the kamal secrets command`)
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
