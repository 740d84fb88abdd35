package main

import (
	"flag"
	"fmt"
)

// parseInterleaved parses a command line whose flags may come before,
// between or after its positional arguments (`promote --fence db --lab D`):
// Go's flag package stops at the first positional one. It returns the
// positional arguments in order; after "--" every argument is one.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// oneNode is the node a role command works on, from its positional
// arguments: exactly one.
func oneNode(command string, pos []string) (string, error) {
	switch len(pos) {
	case 0:
		return "", fmt.Errorf("name the node: understudy %s NODE (`understudy status` lists them)", command)
	case 1:
		return pos[0], nil
	}
	return "", fmt.Errorf("understudy %s takes one node, %s, but was also given %q: flags start with - or --; see understudy %s -h", command, pos[0], pos[1], command)
}
