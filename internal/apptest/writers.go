package apptest

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/understudy-dev/understudy/internal/debimage"
	"github.com/understudy-dev/understudy/internal/dockertest"
)

// The writers' sources, and the npm manifest and lock file that pin
// node-postgres and postgres.js (npm ci installs exactly the locked
// versions, checked against the lock's integrity hashes).
//
//go:embed writers
var writerFiles embed.FS

// script is each interpreted client's writer and its interpreter's argv.
func script(c Client) (interp, file string, args []string) {
	switch c {
	case ActiveRecord:
		return "ruby", "activerecord.rb", nil
	case Psycopg2:
		return "python3", "pywriter.py", []string{"psycopg2"}
	case Psycopg3:
		return "python3", "pywriter.py", []string{"psycopg"}
	case NodePostgres:
		return "node", "nodewriter.js", []string{"pg"}
	case PostgresJS:
		return "node", "nodewriter.js", []string{"postgres"}
	case PDO:
		return "php", "pdo.php", nil
	}
	return "", "", nil
}

// Argv is how a writer is run, given where the scripts are, the pgx
// writer's binary and the interpreters (name → path; a missing name runs
// the interpreter found on PATH). Pure.
func Argv(c Client, scriptsDir, pgxWriter string, interpreters map[string]string) []string {
	if c == PGX {
		return []string{pgxWriter}
	}
	interp, file, args := script(c)
	if p := interpreters[interp]; p != "" {
		interp = p
	}
	return append([]string{interp, scriptsDir + "/" + file}, args...)
}

// scripts are the writer sources (everything but the npm files).
func scripts() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := fs.WalkDir(writerFiles, "writers", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := writerFiles.ReadFile(p)
		out[filepath.Base(p)] = b
		return err
	})
	return out, err
}

// BuildPGXWriter builds the pgx writer as a static binary into dir and
// returns its path. The build is reproducible (no paths, no build ID), so
// the same sources give the same bytes and the app image stays cached.
func BuildPGXWriter(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "pgx-writer")
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out,
		"github.com/understudy-dev/understudy/internal/apptest/pgxwriter")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the pgx writer: %v\n%s", err, b)
	}
	return out, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// NodeModules installs node-postgres and postgres.js from the npm registry
// with npm ci (the versions and hashes the embedded lock file pins) into
// the test cache, once per machine and lock file, and returns the
// node_modules directory.
func NodeModules(ctx context.Context, logf func(string, ...any)) (string, error) {
	pkg, err := writerFiles.ReadFile("writers/package.json")
	if err != nil {
		return "", err
	}
	lockFile, err := writerFiles.ReadFile("writers/package-lock.json")
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(pkg, lockFile...))
	cache := dockertest.CacheDir()
	dir := filepath.Join(cache, "node-writers-"+hex.EncodeToString(sum[:6]))
	mods, done := filepath.Join(dir, "node_modules"), dir+".complete"
	if _, err := os.Stat(done); err == nil {
		return mods, nil
	}
	if _, err := exec.LookPath("npm"); err != nil {
		return "", fmt.Errorf("npm is not installed, so node-postgres cannot be fetched (./scripts/setup-debian installs npm)")
	}
	err = debimage.Once(done, func() error {
		logf("installing node-postgres and postgres.js from the npm registry into %s (once per machine)", dir)
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		os.WriteFile(filepath.Join(dir, "package.json"), pkg, 0o644)
		os.WriteFile(filepath.Join(dir, "package-lock.json"), lockFile, 0o644)
		cmd := exec.CommandContext(ctx, "npm", "ci", "--omit=optional", "--no-audit", "--no-fund", "--ignore-scripts",
			"--cache", filepath.Join(cache, "npm-cache"))
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("npm ci (node-postgres, postgres.js from registry.npmjs.org) in %s: %v\n%s", dir, err, debimage.Tail(string(b), 15))
		}
		return os.WriteFile(done, nil, 0o644)
	})
	if err != nil {
		return "", err
	}
	return mods, nil
}
