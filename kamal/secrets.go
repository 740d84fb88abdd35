package kamal

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
)

// SecretsFile is one dotenv-style secrets file (Kamal: lib/kamal/secrets.rb). Only
// names and the raw (unexpanded) right-hand sides are read here: resolving a
// value may run a password manager and happens only when a command needs it.
type SecretsFile struct {
	Path  string
	Text  string
	Lines []SecretLine
}

// SecretLine is one KEY=value assignment.
type SecretLine struct {
	Key  string
	Raw  string // the right-hand side as written, quotes included
	Line int    // 1-based
}

// parseSecrets reads the assignments as dotenv matches them (dotenv.go).
func parseSecrets(path, text string) *SecretsFile {
	f := &SecretsFile{Path: path, Text: text}
	for _, e := range parseDotenv(text) {
		f.Lines = append(f.Lines, SecretLine{Key: e.Key, Raw: strings.TrimSpace(e.Value), Line: e.Line})
	}
	return f
}

// Secrets is the ordered set of secrets files Kamal reads for a destination:
// <path>-common, then <path> (no destination) or <path>.<dest>.
type Secrets struct {
	Files []*SecretsFile // in reading order; later definitions win
	Paths []string       // every path that was looked for

	// memo keeps what Resolve evaluated, per file and line, so a command
	// several secrets depend on (a `kamal secrets fetch` line) runs once
	// per understudy command, as Kamal evaluates the file once.
	mu   sync.Mutex
	memo map[*SecretsFile]map[int]string
}

// LoadSecrets reads the secrets files that exist.
func LoadSecrets(src Source, base, dest string) (*Secrets, error) {
	s := &Secrets{}
	second := base
	if dest != "" {
		second = base + "." + dest
	}
	for _, p := range []string{base + "-common", second} {
		s.Paths = append(s.Paths, p)
		text, err := src.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		s.Files = append(s.Files, parseSecrets(p, text))
	}
	return s, nil
}

// Lookup finds the definition Kamal would use for a secret name.
func (s *Secrets) Lookup(name string) (*SecretsFile, *SecretLine) {
	for i := len(s.Files) - 1; i >= 0; i-- {
		f := s.Files[i]
		for j := len(f.Lines) - 1; j >= 0; j-- {
			if f.Lines[j].Key == name {
				return f, &f.Lines[j]
			}
		}
	}
	return nil, nil
}

// IsReference reports whether a raw value fetches the secret from elsewhere
// ($VAR, ${VAR}, $(command)) rather than holding it: Kamal 2 commits
// .kamal/secrets, so a literal password there is a leaked password.
func IsReference(raw string) bool {
	v, quote := dotenvValue(raw)
	return quote != '\'' && strings.Contains(v, "$")
}

// Literal returns a secret's value when it is written plainly (no
// substitution), which needs no command or environment to read.
func Literal(raw string) (string, bool) {
	v, quote := dotenvValue(raw)
	if quote != '\'' && strings.Contains(v, "$") {
		return "", false
	}
	return v, true
}

var errNotExist = fs.ErrNotExist
