// Package remote reaches servers the way Kamal does: over SSH with the
// deploy.yml ssh: settings (user, port, jump host, keys, agent), checking
// host keys against known_hosts, and tunnels PostgreSQL connections to a
// node's private address through it.
package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Options is how to log in: from deploy.yml's ssh: section.
type Options struct {
	User      string
	Port      int
	Proxy     string   // jump host as user@host:port, "" for none
	Keys      []string // private key files; default ~/.ssh/id_ed25519, id_ecdsa, id_rsa
	KeysOnly  bool     // no agent
	KnownHost []string // known_hosts files; default ~/.ssh/known_hosts
	Timeout   time.Duration
}

// Dialer holds SSH clients to the hosts it has reached, one per host.
type Dialer struct {
	o       Options
	mu      sync.Mutex
	clients map[string]*ssh.Client
	closers []func()
	// dialing holds one lock per host, so a server that does not answer
	// (a vanished primary) delays only its own connections, never the
	// ones to the other servers (promote reaches the standby's while the
	// old primary's hangs).
	dialing map[string]*sync.Mutex
	// failed remembers, for a while, a server whose SSH login just failed,
	// so one command does not wait out the same timeout again and again
	// for a server that is gone (promote, with the old primary's).
	failed map[string]dialFailure
}

type dialFailure struct {
	at  time.Time
	err error
}

// failedFor is how long a failed login is remembered.
const failedFor = 30 * time.Second

// NewDialer prepares a dialer; nothing connects yet.
func NewDialer(o Options) *Dialer {
	if o.Port == 0 {
		o.Port = 22
	}
	if o.User == "" {
		o.User = "root"
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	home, _ := os.UserHomeDir()
	if len(o.KnownHost) == 0 {
		o.KnownHost = []string{filepath.Join(home, ".ssh", "known_hosts")}
	}
	if len(o.Keys) == 0 && !o.KeysOnly {
		for _, k := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			o.Keys = append(o.Keys, filepath.Join(home, ".ssh", k))
		}
	}
	return &Dialer{o: o, clients: map[string]*ssh.Client{}, dialing: map[string]*sync.Mutex{}, failed: map[string]dialFailure{}}
}

// Close ends every SSH connection.
func (d *Dialer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.clients {
		c.Close()
	}
	for _, f := range d.closers {
		f()
	}
	d.clients = map[string]*ssh.Client{}
}

// Client returns the SSH client for host (a server from deploy.yml),
// connecting through the jump host when one is set.
func (d *Dialer) Client(ctx context.Context, host string) (*ssh.Client, error) {
	d.mu.Lock()
	if c, ok := d.clients[host]; ok {
		d.mu.Unlock()
		return c, nil
	}
	hl := d.dialing[host]
	if hl == nil {
		hl = &sync.Mutex{}
		d.dialing[host] = hl
	}
	d.mu.Unlock()
	hl.Lock()
	defer hl.Unlock()
	d.mu.Lock()
	c, ok := d.clients[host]
	f, failed := d.failed[host]
	d.mu.Unlock()
	if ok {
		return c, nil // dialed by another caller meanwhile
	}
	if failed && time.Since(f.at) < failedFor {
		return nil, f.err
	}
	addr := net.JoinHostPort(host, strconv.Itoa(d.o.Port))
	var conn net.Conn
	var err error
	via := ""
	if d.o.Proxy != "" {
		user, jhost, jport, perr := splitProxy(d.o.Proxy)
		if perr != nil {
			return nil, perr
		}
		jaddr := net.JoinHostPort(jhost, strconv.Itoa(jport))
		jump, jerr := d.connect(ctx, nil, jhost, jaddr, user, "")
		if jerr != nil {
			return nil, jerr
		}
		d.mu.Lock()
		d.closers = append(d.closers, func() { jump.Close() })
		d.mu.Unlock()
		via = " via jump host " + jaddr
		conn, err = jump.Dial("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("the jump host %s cannot reach %s: %v. Check that %s is the server's address as the jump host sees it, and ssh.port", jaddr, addr, err, host)
		}
	}
	c, err = d.connect(ctx, conn, host, addr, d.o.User, via)
	if err != nil {
		if ctx.Err() == nil {
			d.mu.Lock()
			d.failed[host] = dialFailure{time.Now(), err}
			d.mu.Unlock()
		}
		return nil, err
	}
	d.mu.Lock()
	d.clients[host] = c
	d.mu.Unlock()
	return c, nil
}

// connect makes one SSH connection (over conn when given, else TCP) and
// turns each kind of failure into what to do about it.
func (d *Dialer) connect(ctx context.Context, conn net.Conn, host, addr, user, via string) (*ssh.Client, error) {
	hostKeys, err := knownhosts.New(existing(d.o.KnownHost)...)
	if err != nil {
		return nil, fmt.Errorf("reading known_hosts (%s): %w", strings.Join(d.o.KnownHost, ", "), err)
	}
	var auths []ssh.AuthMethod
	var tried []string
	if !d.o.KeysOnly {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			if ac, err := net.Dial("unix", sock); err == nil {
				d.mu.Lock()
				d.closers = append(d.closers, func() { ac.Close() })
				d.mu.Unlock()
				auths = append(auths, ssh.PublicKeysCallback(agent.NewClient(ac).Signers))
				tried = append(tried, "the ssh agent")
			}
		}
	}
	var signers []ssh.Signer
	for _, k := range d.o.Keys {
		b, err := os.ReadFile(expandHome(k))
		if err != nil {
			continue
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				tried = append(tried, k+" (has a passphrase: load it into ssh-agent)")
				continue
			}
			return nil, fmt.Errorf("reading ssh key %s: %w", k, err)
		}
		signers = append(signers, s)
		tried = append(tried, k)
	}
	if len(signers) > 0 {
		auths = append(auths, ssh.PublicKeys(signers...))
	}
	if len(auths) == 0 {
		return nil, fmt.Errorf("no ssh key to log in to %s with: start ssh-agent with your key, or list key files under ssh.keys in deploy.yml", host)
	}
	cfg := &ssh.ClientConfig{User: user, Auth: auths, HostKeyCallback: hostKeys, Timeout: d.o.Timeout}
	if conn == nil {
		dialer := net.Dialer{Timeout: d.o.Timeout}
		conn, err = dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("cannot reach %s over SSH (%v): check the host in deploy.yml, ssh.port, and that this machine can reach it (VPN, firewall)", addr, err)
		}
	}
	conn.SetDeadline(time.Now().Add(d.o.Timeout))
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, explain(err, host, addr, user, via, tried, d.o.KnownHost)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// permanentError is an SSH failure that waiting will not fix.
type permanentError struct{ error }

func (permanentError) Permanent() bool { return true }
func (e permanentError) Unwrap() error { return e.error }

func explain(err error, host, addr, user, via string, tried, knownHosts []string) error {
	return permanentError{explainText(err, host, addr, user, via, tried, knownHosts)}
}

func explainText(err error, host, addr, user, via string, tried, knownHosts []string) error {
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		if len(ke.Want) == 0 {
			return fmt.Errorf("the host key of %s%s is not in %s, so understudy cannot tell it is the right server. Check and accept it once with `ssh -p %s %s@%s` (or add it with ssh-keyscan), then run again",
				addr, via, strings.Join(knownHosts, ", "), portOf(addr), user, host)
		}
		return fmt.Errorf("the host key of %s%s has CHANGED since it was recorded (%s:%d): either the server was rebuilt, or someone is intercepting the connection. If the change is expected, remove the old key with `ssh-keygen -R '%s'` and accept the new one; otherwise stop here",
			addr, via, ke.Want[0].Filename, ke.Want[0].Line, knownhosts.Normalize(addr))
	}
	if strings.Contains(err.Error(), "unable to authenticate") {
		return fmt.Errorf("%s@%s%s refused every key understudy offered (%s): add your public key to %s's ~%s/.ssh/authorized_keys, or set ssh.user / ssh.keys in deploy.yml",
			user, addr, via, strings.Join(tried, ", "), host, user)
	}
	return fmt.Errorf("ssh to %s@%s%s failed: %w", user, addr, via, err)
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func existing(paths []string) []string {
	var out []string
	for _, p := range paths {
		p = expandHome(p)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func expandHome(p string) string {
	if strings.HasPrefix(p, "~/") {
		home, _ := os.UserHomeDir()
		return filepath.Join(home, p[2:])
	}
	return p
}

// splitProxy reads ssh.proxy: host, user@host or user@host:port.
func splitProxy(p string) (user, host string, port int, err error) {
	user, port = "root", 22
	if u, h, ok := strings.Cut(p, "@"); ok {
		user, p = u, h
	}
	host = p
	if h, ps, ok := strings.Cut(p, ":"); ok && !strings.Contains(ps, ":") {
		host = h
		if port, err = strconv.Atoi(ps); err != nil {
			return "", "", 0, fmt.Errorf("ssh.proxy %q: the port after ':' is not a number", p)
		}
	}
	return user, host, port, nil
}

// tunnelConn reports the address it was dialed for, so pgx's cancel
// request (which re-dials RemoteAddr) goes to the same server through the
// tunnel (pgx: pgconn.CancelRequestContextWatcherHandler). SSH channels have no deadlines; a
// deadline here closes the connection when it passes, which is what a
// timed-out read or write leads to anyway.
type tunnelConn struct {
	net.Conn
	remote net.Addr
	mu     *sync.Mutex
	timer  **time.Timer
}

func (c tunnelConn) RemoteAddr() net.Addr { return c.remote }

func (c tunnelConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if *c.timer != nil {
		(*c.timer).Stop()
		*c.timer = nil
	}
	if !t.IsZero() {
		*c.timer = time.AfterFunc(time.Until(t), func() { c.Conn.Close() })
	}
	return nil
}

func (c tunnelConn) SetReadDeadline(t time.Time) error  { return c.SetDeadline(t) }
func (c tunnelConn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }

// DialFunc returns a pgx DialFunc that opens TCP connections to addresses
// as seen from host, through its SSH connection.
func (d *Dialer) DialFunc(host string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.DialFuncTo(host, "PostgreSQL")
}

// DialFuncTo is DialFunc for a service other than PostgreSQL (a node
// agent, a router's metrics), named in the error when nothing answers.
func (d *Dialer) DialFuncTo(host, service string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.Client(ctx, host)
		if err != nil {
			return nil, err
		}
		conn, err := c.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s cannot reach %s at %s (%v): is the accessory running and published on that address?", host, service, addr, err)
		}
		ra, _ := net.ResolveTCPAddr("tcp", addr)
		var timer *time.Timer
		return tunnelConn{Conn: conn, remote: ra, mu: &sync.Mutex{}, timer: &timer}, nil
	}
}
