package kamal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Source reads files of an app directory. Reads go through it so that a plan
// can be computed over edited, not-yet-written text.
type Source interface {
	ReadFile(rel string) (string, error) // fs.ErrNotExist when missing
}

// DirSource reads from a directory on disk.
type DirSource string

// ReadFile reads a path relative to the directory; an absolute path (an
// absolute secrets_path, as Kamal allows) is read where it is.
func (d DirSource) ReadFile(rel string) (string, error) {
	p := rel
	if !filepath.IsAbs(rel) {
		p = filepath.Join(string(d), rel)
	}
	b, err := os.ReadFile(p)
	return string(b), err
}

// Overlay is a set of edited files in front of another Source.
type Overlay struct {
	Base  Source
	Files map[string]string
}

func (o *Overlay) ReadFile(rel string) (string, error) {
	if s, ok := o.Files[rel]; ok {
		return s, nil
	}
	return o.Base.ReadFile(rel)
}

// Config is a loaded Kamal configuration: config/deploy.yml merged with
// config/deploy.<destination>.yml when a destination is given.
type Config struct {
	ConfigPath  string // e.g. config/deploy.yml
	Destination string
	Files       []*File // base first, then the destination file
	Root        *Val
	Env         func(string) (string, bool) // for ERB lookups
}

// DestinationPath is the destination file's path for a base config path.
func DestinationPath(configPath, dest string) string {
	ext := filepath.Ext(configPath)
	return strings.TrimSuffix(configPath, ext) + "." + dest + ext
}

// MaxConfigBytes bounds one config file.
const MaxConfigBytes = 1 << 20

// Load reads the configuration as Kamal does (Kamal: lib/kamal/configuration.rb, deep_merge of the destination file).
// env answers ERB's ENV lookups; KAMAL_DESTINATION is set as Kamal sets it.
func Load(src Source, configPath, dest string, env func(string) (string, bool)) (*Config, error) {
	if configPath == "" {
		configPath = "config/deploy.yml"
	}
	lookup := func(k string) (string, bool) {
		if k == "KAMAL_DESTINATION" {
			return dest, dest != ""
		}
		if env == nil {
			return "", false
		}
		return env(k)
	}
	c := &Config{ConfigPath: configPath, Destination: dest, Env: lookup}
	paths := []string{configPath}
	if dest != "" {
		paths = append(paths, DestinationPath(configPath, dest))
	}
	for i, p := range paths {
		text, err := src.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			if i == 0 {
				return nil, fmt.Errorf("%s not found: run understudy in your app's directory (the one holding config/deploy.yml), or pass -c PATH", p)
			}
			return nil, fmt.Errorf("%s not found: destination %q needs this file (kamal reads it for -d %s); check the spelling of -d", p, dest, dest)
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		if len(text) > MaxConfigBytes {
			return nil, fmt.Errorf("%s is %d bytes; a Kamal config is a few kilobytes, and understudy reads at most %d: check that this is the right file", p, len(text), MaxConfigBytes)
		}
		f, err := parseFile(p, text)
		if err != nil {
			return nil, err
		}
		c.Files = append(c.Files, f)
		if f.doc != nil {
			v, err := build(f, nil, f.doc)
			if err != nil {
				return nil, err
			}
			c.Root = merge(c.Root, v)
		}
	}
	if c.Root == nil {
		return nil, fmt.Errorf("%s is empty: it needs at least service:, image: and accessories:", configPath)
	}
	return c, nil
}

// Str resolves a scalar at path, with ok=false when it is missing or unresolvable ERB.
func (c *Config) Str(v *Val) (string, bool) {
	if !v.IsScalar() {
		return "", false
	}
	return v.Resolve(c.Env)
}

// Service is the root service name.
func (c *Config) Service() string {
	s, _ := c.Str(c.Root.Get("service"))
	return s
}

// SecretsPath is the base secrets path (root key secrets_path, default .kamal/secrets).
func (c *Config) SecretsPath() string {
	if s, ok := c.Str(c.Root.Get("secrets_path")); ok && s != "" {
		return s
	}
	return ".kamal/secrets"
}

// File returns the loaded file with a path, or nil.
func (c *Config) File(path string) *File {
	for _, f := range c.Files {
		if f.Path == path {
			return f
		}
	}
	return nil
}

// EditFile is the file that edits go to: the destination file when a
// destination is given (so other destinations are untouched), else deploy.yml.
func (c *Config) EditFile() *File { return c.Files[len(c.Files)-1] }

// RoleHosts returns the hosts of an app role in servers:.
func (c *Config) RoleHosts(role string) []string {
	servers := c.Root.Get("servers")
	var hostsOf func(v *Val) []string
	hostsOf = func(v *Val) []string {
		var out []string
		switch {
		case v.IsSeq():
			for _, it := range v.Items() {
				if it.IsScalar() {
					s, _ := c.Str(it)
					out = append(out, s)
				} else if it.IsMap() && len(it.Keys()) == 1 { // {host: tag}
					out = append(out, it.Keys()[0])
				}
			}
		case v.IsMap():
			out = hostsOf(v.Get("hosts"))
		}
		return out
	}
	if servers.IsSeq() {
		if role == "web" {
			return hostsOf(servers)
		}
		return nil
	}
	return hostsOf(servers.Get(role))
}
