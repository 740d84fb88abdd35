package kamal

import (
	"fmt"
	"strconv"
)

// SSH is the deploy.yml ssh: section as Kamal reads it (Kamal: lib/kamal/configuration/ssh.rb).
type SSH struct {
	User         string   // default root
	Port         int      // default 22
	Proxy        string   // jump host: host, user@host or user@host:port (a bare host means root@host)
	ProxyCommand string   // not supported by understudy; reported
	Keys         []string // private key files
	KeysOnly     bool     // use only Keys, not the agent or default keys
}

// SSH reads the ssh: section with Kamal's defaults.
func (c *Config) SSH() (SSH, error) {
	s := SSH{User: "root", Port: 22}
	v := c.Root.Get("ssh")
	if v == nil || v.IsNull() {
		return s, nil
	}
	if !v.IsMap() {
		return s, fmt.Errorf("%s: ssh: must be a map (user:, port:, proxy:, keys:)", v.Pos())
	}
	str := func(k string) (string, bool, error) {
		f := v.Get(k)
		if f == nil || f.IsNull() {
			return "", false, nil
		}
		val, ok := c.Str(f)
		if !ok {
			return "", false, fmt.Errorf("%s: ssh.%s: cannot read its value%s", f.Pos(), k, f.ERBHint())
		}
		return val, true, nil
	}
	var err error
	if u, ok, e := str("user"); e != nil {
		return s, e
	} else if ok {
		s.User = u
	}
	if p, ok, e := str("port"); e != nil {
		return s, e
	} else if ok {
		if s.Port, err = strconv.Atoi(p); err != nil || s.Port <= 0 || s.Port > 65535 {
			return s, fmt.Errorf("%s: ssh.port %q is not a port number", v.Get("port").Pos(), p)
		}
	}
	if s.Proxy, _, err = str("proxy"); err != nil {
		return s, err
	}
	if s.ProxyCommand, _, err = str("proxy_command"); err != nil {
		return s, err
	}
	if ko, ok, e := str("keys_only"); e != nil {
		return s, e
	} else if ok {
		s.KeysOnly = ko == "true"
	}
	if k := v.Get("keys"); k != nil && !k.IsNull() {
		if !k.IsSeq() {
			return s, fmt.Errorf("%s: ssh.keys must be a list of key files", k.Pos())
		}
		for _, item := range k.Items() {
			p, ok := c.Str(item)
			if !ok {
				return s, fmt.Errorf("%s: ssh.keys: cannot read this entry%s", item.Pos(), item.ERBHint())
			}
			s.Keys = append(s.Keys, p)
		}
	}
	if s.ProxyCommand != "" {
		return s, fmt.Errorf("%s: ssh.proxy_command is not supported by understudy yet; use ssh.proxy (a jump host) instead", v.Get("proxy_command").Pos())
	}
	return s, nil
}
