package main

import (
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/setup"
)

// Help is not an error: every command and subcommand exits 0 on -h (cron
// and monitoring read 2 as critical; `restore drill -h` gave 2).
func TestHelpExitsZero(t *testing.T) {
	var lines [][]string
	for _, c := range commands(nil, nil) {
		lines = append(lines, []string{c.Name(), "-h"})
	}
	lines = append(lines, []string{"restore", "drill", "-h"}, []string{"restore", "drill", "--help"}, []string{"lab", "up", "-h"},
		[]string{"lab", "down", "-h"}, []string{"backup", "agent", "-h"}, []string{"restore", "--here", "-h"}, []string{"promote", "db", "-h"}, []string{"failover", "watchdog", "-h"})
	for _, args := range lines {
		if out, code := runCLI(t, args...); code != 0 {
			t.Errorf("understudy %s: exit %d, want 0\n%s", strings.Join(args, " "), code, out)
		}
	}
}

// Flags may sit on either side of the node (`promote --fence db --lab D`
// was told to "name the node"), and a second positional argument is named.
func TestRoleCommandArguments(t *testing.T) {
	parse := func(args ...string) (string, bool, string, error) {
		fs := flag.NewFlagSet("promote", flag.ContinueOnError)
		fence := fs.Bool("fence", false, "")
		lab := fs.String("lab", "", "")
		pos, err := parseInterleaved(fs, args)
		if err != nil {
			return "", false, "", err
		}
		node, err := oneNode("promote", pos)
		return node, *fence, *lab, err
	}
	for _, args := range [][]string{
		{"--fence", "db", "--lab", "D"},
		{"db", "--fence", "--lab", "D"},
		{"--lab", "D", "--fence", "db"},
		{"--lab=D", "db", "--fence"},
	} {
		node, fence, lab, err := parse(args...)
		if err != nil || node != "db" || !fence || lab != "D" {
			t.Errorf("%v: node %q fence %v lab %q err %v", args, node, fence, lab, err)
		}
	}
	if _, _, _, err := parse("--fence", "db", "extra", "--lab", "D"); err == nil || !strings.Contains(err.Error(), `"extra"`) {
		t.Errorf("a leftover argument: %v", err)
	}
	if _, _, _, err := parse("--lab", "D"); err == nil || !strings.Contains(err.Error(), "name the node") {
		t.Errorf("no node: %v", err)
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Bool("fence", false, "")
	if pos, err := parseInterleaved(fs, []string{"--", "--fence", "db"}); err != nil || !slices.Equal(pos, []string{"--fence", "db"}) {
		t.Errorf("after --: %v %v", pos, err)
	}
	// From the command line: the same error before anything is opened.
	out, code := runCLI(t, "promote", "--fence", "db", "extra", "--lab", t.TempDir())
	if code != 1 || !strings.Contains(out, `"extra"`) {
		t.Errorf("promote with a leftover argument: exit %d\n%s", code, out)
	}
}

// The agent's superuser login takes any POSTGRES_USER the image does.
func TestConninfoQuote(t *testing.T) {
	for _, u := range []string{"postgres", "app user", `o'brien\x`} {
		cc, err := pgx.ParseConfig("host=10.0.0.2 port=5432 user=" + conninfoQuote(u) + " dbname=postgres")
		if err != nil || cc.User != u {
			t.Errorf("%q: %v, user %q", u, err, cc.User)
		}
	}
}

// setup writes the secret's name that the failover package reads.
func TestFailoverSecretName(t *testing.T) {
	if setup.FailoverSecret != failover.SecretName {
		t.Errorf("setup.FailoverSecret %q, failover.SecretName %q", setup.FailoverSecret, failover.SecretName)
	}
}
