package setup

import (
	"fmt"
	"net"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
)

// accessoryKeys are the keys Kamal 2 accepts in an accessory
// (Kamal: lib/kamal/configuration/accessory.rb); any other key makes kamal refuse the file.
var accessoryKeys = map[string]bool{
	"service": true, "image": true, "registry": true, "host": true, "hosts": true,
	"role": true, "roles": true, "tag": true, "tags": true, "cmd": true, "port": true,
	"labels": true, "options": true, "env": true, "files": true, "directories": true,
	"volumes": true, "network": true, "proxy": true,
}

// ValidateKamal checks the accessories the way Kamal 2's validator does, for
// the rules that matter to what understudy writes.
func ValidateKamal(cfg *kamal.Config) error {
	for _, a := range cfg.Accessories() {
		if !a.Val.IsMap() {
			return fmt.Errorf("%s: accessories/%s should be a hash", a.Val.Pos(), a.Name)
		}
		selectors := 0
		for _, k := range a.Val.Keys() {
			if !accessoryKeys[k] {
				return fmt.Errorf("%s: accessories/%s: unknown key: %s", a.Field(k).Pos(), a.Name, k)
			}
			switch k {
			case "host", "hosts", "role", "roles", "tag", "tags":
				selectors++
			}
		}
		if selectors != 1 {
			return fmt.Errorf("%s: accessories/%s: specify one of host, hosts, role, roles, tag or tags", a.Val.Pos(), a.Name)
		}
		if v := a.Field("cmd"); v != nil && !v.IsScalar() {
			return fmt.Errorf("%s: accessories/%s/cmd: should be a string", v.Pos(), a.Name)
		}
		if v := a.Field("port"); v != nil {
			if !v.IsScalar() {
				return fmt.Errorf("%s: accessories/%s/port: should be a string", v.Pos(), a.Name)
			}
			if s, ok := cfg.Str(v); ok && !v.HasERB() {
				p, err := kamal.ParsePort(s)
				if err != nil {
					return fmt.Errorf("%s: accessories/%s/port: %v", v.Pos(), a.Name, err)
				}
				if strings.Count(s, ":") >= 2 && net.ParseIP(p.BindIP) == nil {
					return fmt.Errorf("%s: accessories/%s/port: bind address %q is not an IP", v.Pos(), a.Name, p.BindIP)
				}
			}
		}
		if env := a.Field("env"); env.IsMap() && (env.Get("clear") != nil || env.Get("secret") != nil) {
			for _, k := range env.Keys() {
				if k != "clear" && k != "secret" {
					return fmt.Errorf("%s: accessories/%s/env: unknown key: %s", env.Get(k).Pos(), a.Name, k)
				}
			}
			if s := env.Get("secret"); s != nil && !s.IsSeq() {
				return fmt.Errorf("%s: accessories/%s/env/secret: should be an array", s.Pos(), a.Name)
			}
		}
		for _, k := range []string{"files", "directories", "volumes"} {
			v := a.Field(k)
			if v == nil {
				continue
			}
			if !v.IsSeq() {
				return fmt.Errorf("%s: accessories/%s/%s: should be an array", v.Pos(), a.Name, k)
			}
			for i, it := range v.Items() {
				if !it.IsScalar() && !(it.IsMap() && k != "volumes") {
					return fmt.Errorf("%s: accessories/%s/%s/%d: should be a string", it.Pos(), a.Name, k, i)
				}
			}
		}
		if v := a.Field("options"); v != nil && !v.IsMap() {
			return fmt.Errorf("%s: accessories/%s/options: should be a hash", v.Pos(), a.Name)
		}
	}
	return nil
}

// refuseCmdNotString names an accessory cmd written as a YAML list or
// mapping. Kamal takes only a string there and refuses the whole file
// (its validator: "accessories/NAME/cmd: should be a string"); the string
// is put unescaped after the image in `docker run`, for the server's shell.
func refuseCmdNotString(cfg *kamal.Config) error {
	for _, a := range cfg.Accessories() {
		v := a.Field("cmd")
		if v == nil || v.IsScalar() || v.IsNull() {
			continue
		}
		what := fmt.Sprintf("accessory %s's cmd is a %s; Kamal takes only a string there and refuses this file (\"accessories/%s/cmd: should be a string\")", a.Name, kindName(v), a.Name)
		example := "cmd: postgres -c name=value"
		if line, ok := cmdLine(cfg, v); ok {
			example = "cmd: " + string(kamal.Quote(line))
		}
		return refuse(v.Pos(), what, "write the command as one string, as the server's shell will read it after the image:\n    %s", example)
	}
	return nil
}

func kindName(v *kamal.Val) string {
	if v.IsMap() {
		return "mapping"
	}
	return "list"
}

// cmdLine joins a list's items into one command line, quoting for the
// shell the items that need it.
func cmdLine(cfg *kamal.Config, v *kamal.Val) (string, bool) {
	if !v.IsSeq() || len(v.Items()) == 0 {
		return "", false
	}
	var words []string
	for _, it := range v.Items() {
		s, ok := cfg.Str(it)
		if !ok {
			return "", false
		}
		if s == "" || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-=./:,@%+") != "" {
			s = "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
		words = append(words, s)
	}
	return strings.Join(words, " "), true
}
