package kamal

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ResolveScript builds the shell script that evaluates a secrets file's
// assignments in order, as Kamal's dotenv does ($(command) first, then
// $VAR from earlier keys and the environment), and prints one secret.
// It is fed to sh on stdin, never in argv. Pure, so it is tested on its text.
func ResolveScript(f *SecretsFile, name string) (string, bool) {
	var b strings.Builder
	b.WriteString("set -e\n")
	found := false
	for _, l := range f.Lines {
		fmt.Fprintf(&b, "%s=%s\n", l.Key, l.Raw)
		if l.Key == name {
			found = true
		}
	}
	fmt.Fprintf(&b, "printf '%%s' \"$%s\"\n", name)
	return b.String(), found
}

// Resolve returns a secret's value: a literal directly, a reference by
// evaluating its file with the local shell in the app directory. Errors
// name the file and line and never include a value.
func (s *Secrets) Resolve(ctx context.Context, appDir, name string) (string, error) {
	f, line := s.Lookup(name)
	if line == nil {
		var paths []string
		for _, f := range s.Files {
			paths = append(paths, f.Path)
		}
		return "", fmt.Errorf("secret %s is not defined in %s: add it there (a reference such as %s=$%s)", name, strings.Join(paths, " or "), name, name)
	}
	if v, ok := Literal(line.Raw); ok {
		return v, nil
	}
	script, _ := ResolveScript(f, name)
	cmd := exec.CommandContext(ctx, "/bin/sh", "-s")
	cmd.Dir = appDir
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = os.Environ()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s:%d: resolving secret %s failed (%v: %s). Check that the command or variable it names works in this shell (kamal secrets print shows what Kamal gets)",
			f.Path, line.Line, name, err, strings.TrimSpace(lastLine(stderr.String())))
	}
	if len(out) == 0 {
		return "", fmt.Errorf("%s:%d: secret %s resolved to an empty value: set the variable or fix the command it names", f.Path, line.Line, name)
	}
	return string(out), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
