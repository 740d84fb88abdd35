package kamal

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Accessory is one entry of accessories: in the merged configuration.
type Accessory struct {
	Name string
	Val  *Val
	cfg  *Config
}

// Accessories lists the accessories in file order.
func (c *Config) Accessories() []*Accessory {
	acc := c.Root.Get("accessories")
	var out []*Accessory
	for _, k := range acc.Keys() {
		out = append(out, &Accessory{Name: k, Val: acc.Get(k), cfg: c})
	}
	return out
}

// Accessory returns the named accessory or nil.
func (c *Config) Accessory(name string) *Accessory {
	for _, a := range c.Accessories() {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// Field returns a key of the accessory's merged mapping.
func (a *Accessory) Field(path ...string) *Val { return a.Val.Get(path...) }

// Str resolves a scalar field.
func (a *Accessory) Str(path ...string) (string, bool) { return a.cfg.Str(a.Field(path...)) }

// ServiceName is the container name: service: or "<root service>-<name>".
func (a *Accessory) ServiceName() string {
	if s, ok := a.Str("service"); ok && s != "" {
		return s
	}
	return a.cfg.Service() + "-" + a.Name
}

// Hosts resolves host/hosts/role/roles/tag/tags (Kamal: lib/kamal/configuration/accessory.rb).
// Tags cannot be resolved without Kamal's tag model and are reported by key.
func (a *Accessory) Hosts() (hosts []string, key string, err error) {
	for _, k := range []string{"host", "hosts", "role", "roles", "tag", "tags"} {
		v := a.Field(k)
		if v == nil {
			continue
		}
		key = k
		switch k {
		case "host":
			if !v.IsScalar() && !v.HasERB() {
				return nil, k, fmt.Errorf("%s: accessories/%s/host is a %s; host: takes one server (Kamal's hosts: takes a list)", v.Pos(), a.Name, kindName(v.Node))
			}
			s, ok := a.cfg.Str(v)
			if !ok {
				return nil, k, fmt.Errorf("%s: accessories/%s/host (%s) comes from ERB that gives no value here\n  fix: %s, or write the host plainly", v.Pos(), a.Name, v.Source(), v.ERBHint())
			}
			return []string{s}, k, nil
		case "hosts":
			for _, it := range v.Items() {
				s, ok := a.cfg.Str(it)
				if !ok {
					return nil, k, fmt.Errorf("%s: a host of accessories/%s comes from ERB that gives no value here\n  fix: %s", it.Pos(), a.Name, it.ERBHint())
				}
				hosts = append(hosts, s)
			}
			return hosts, k, nil
		case "role", "roles":
			var roles []string
			if v.IsSeq() {
				for _, it := range v.Items() {
					s, _ := a.cfg.Str(it)
					roles = append(roles, s)
				}
			} else if s, ok := a.cfg.Str(v); ok {
				roles = []string{s}
			}
			// Kamal lists each role's hosts in turn (Accessory#hosts_from_roles);
			// a server in two roles runs the accessory once (SSHKit's
			// Coordinator takes each host once), so it is listed once here.
			for _, r := range roles {
				for _, h := range a.cfg.RoleHosts(r) {
					if !slices.Contains(hosts, h) {
						hosts = append(hosts, h)
					}
				}
			}
			return hosts, k, nil
		default:
			return nil, k, fmt.Errorf("%s: accessories/%s picks its servers by %s:, which understudy cannot resolve; use host: with the server's address", v.Pos(), a.Name, k)
		}
	}
	return nil, "", nil
}

// Port is a parsed accessory port: mapping.
type Port struct {
	BindIP        string // "" when none is given (Docker then binds 0.0.0.0)
	HostPort      int
	ContainerPort int
}

// ParsePort parses Kamal's port forms: 5432, "5432", "5432:5432", "IP:5432:5432", "[v6]:5432:5432".
func ParsePort(s string) (Port, error) {
	var p Port
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		i := strings.Index(s, "]")
		if i < 0 {
			return p, fmt.Errorf("unclosed [ in %q", s)
		}
		p.BindIP = s[1:i]
		s = strings.TrimPrefix(s[i+1:], ":")
		parts := strings.Split(s, ":")
		if len(parts) != 2 {
			return p, fmt.Errorf("%q is not [IP]:HOSTPORT:CONTAINERPORT", s)
		}
		return p, p.setPorts(parts[0], parts[1])
	}
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 1:
		return p, p.setPorts(parts[0], parts[0])
	case 2:
		return p, p.setPorts(parts[0], parts[1])
	case 3:
		if net.ParseIP(parts[0]) == nil {
			return p, fmt.Errorf("%q is not an IP address", parts[0])
		}
		p.BindIP = parts[0]
		return p, p.setPorts(parts[1], parts[2])
	}
	return p, fmt.Errorf("%q is not a port mapping", s)
}

func (p *Port) setPorts(h, c string) error {
	c = strings.TrimSuffix(strings.TrimSuffix(c, "/tcp"), "/udp")
	var err1, err2 error
	p.HostPort, err1 = strconv.Atoi(h)
	p.ContainerPort, err2 = strconv.Atoi(c)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("ports must be numbers, got %q:%q", h, c)
	}
	return nil
}

func (p Port) String() string {
	if strings.Contains(p.BindIP, ":") {
		return fmt.Sprintf("[%s]:%d:%d", p.BindIP, p.HostPort, p.ContainerPort)
	}
	if p.BindIP == "" {
		return fmt.Sprintf("%d:%d", p.HostPort, p.ContainerPort)
	}
	return fmt.Sprintf("%s:%d:%d", p.BindIP, p.HostPort, p.ContainerPort)
}

// Env is an accessory's env: in Kamal's simple (all clear) or complex form.
type Env struct {
	Clear  map[string]*Val
	Secret []SecretRef
}

// SecretRef is one env.secret item: NAME or NAME:SECRET (Kamal: lib/kamal/configuration/env.rb).
type SecretRef struct {
	Name   string // the variable the container sees
	Secret string // the key looked up in .kamal/secrets*
	Val    *Val
}

// Env parses the accessory's env.
func (a *Accessory) Env() Env {
	e := Env{Clear: map[string]*Val{}}
	v := a.Field("env")
	if !v.IsMap() {
		return e
	}
	if v.Get("clear") == nil && v.Get("secret") == nil {
		for _, k := range v.Keys() {
			e.Clear[k] = v.Get(k)
		}
		return e
	}
	for _, k := range v.Get("clear").Keys() {
		e.Clear[k] = v.Get("clear", k)
	}
	for _, it := range v.Get("secret").Items() {
		s, _ := a.cfg.Str(it)
		name, key, ok := strings.Cut(s, ":")
		if !ok {
			key = name
		}
		e.Secret = append(e.Secret, SecretRef{Name: name, Secret: key, Val: it})
	}
	return e
}

// Mount is a files/directories/volumes entry.
type Mount struct {
	Kind   string // files, directories, volumes
	Local  string // as written (relative or absolute, or a named volume)
	Remote string // path in the container
	Val    *Val
}

// Mounts lists files, directories and volumes, in that order.
func (a *Accessory) Mounts() []Mount {
	var out []Mount
	for _, kind := range []string{"files", "directories", "volumes"} {
		for _, it := range a.Field(kind).Items() {
			var local, remote string
			if it.IsMap() {
				local, _ = a.cfg.Str(it.Get("local"))
				remote, _ = a.cfg.Str(it.Get("remote"))
			} else {
				s, _ := a.cfg.Str(it)
				parts := strings.SplitN(s, ":", 3)
				local = parts[0]
				if len(parts) > 1 {
					remote = parts[1]
				}
			}
			out = append(out, Mount{Kind: kind, Local: local, Remote: remote, Val: it})
		}
	}
	return out
}
