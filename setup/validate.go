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
