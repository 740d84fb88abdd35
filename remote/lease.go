package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/understudy-dev/understudy/failover"
	"github.com/understudy-dev/understudy/live"
	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/pgops"
)

// Lease is automatic failover's lease in etcd as the operator's machine
// reaches it on Kamal (live.LeaseControl). The members listen on the
// servers' private IPs only, so each member's client URL is dialed through
// SSH on that member's own server; the client has all three, so it works
// with one server gone. Its certificate is derived from FAILOVER_SECRET,
// resolved here as Kamal resolves secrets. Each call opens a client of its
// own (role changes and `failover` make a handful of calls).
type Lease struct {
	Failover *pgconf.Failover
	Dialer   *Dialer
	// Routes: each member's client address → the server to dial it
	// through (MemberRoutes).
	Routes map[string]MemberRoute
	// Secret is FAILOVER_SECRET's value; SecretErr says why it did not
	// resolve here (then every call fails with what to do).
	Secret    string
	SecretErr error
	// Err: the members cannot be reached from here at all (MemberRoutes
	// failed); every call returns it.
	Err error
}

var _ live.LeaseControl = (*Lease)(nil)

// MemberRoute is how the operator's machine reaches one etcd member.
type MemberRoute struct {
	Member string // the member's name
	Host   string // the server its SSH connection goes to
}

// MemberRoutes says, for each member's client address (ip:port, as the
// etcd client dials it), which server it is dialed through: a node's
// member through the node's server (nodeHosts), the witness's through the
// witness accessory's host. Pure.
func MemberRoutes(f *pgconf.Failover, nodeHosts map[string]string, witnessHost string) (map[string]MemberRoute, error) {
	if f == nil {
		return nil, errors.New("this cluster has no failover")
	}
	spec := failover.SpecFor(f, f.Witness, "")
	routes := map[string]MemberRoute{}
	for _, m := range spec.Members {
		host := nodeHosts[m.Name]
		if m.Name == f.Witness {
			host = witnessHost
		}
		if host == "" {
			what := "node " + m.Name + "'s accessory"
			if m.Name == f.Witness {
				what = "the witness accessory " + m.Name
			}
			return nil, fmt.Errorf("etcd member %s has no server to reach it through (%s has no host in deploy.yml): re-run `understudy init --failover` so deploy.yml and cluster.json agree", m.Name, what)
		}
		addr := spec.ClientURL(m)[len("https://"):]
		routes[addr] = MemberRoute{Member: m.Name, Host: host}
	}
	return routes, nil
}

// dial opens a member's client connection through its server's SSH
// connection.
func (l *Lease) dial(ctx context.Context, addr string) (net.Conn, error) {
	r, ok := l.Routes[addr]
	if !ok {
		return nil, fmt.Errorf("%s is not the client address of any failover member in cluster.json", addr)
	}
	return l.Dialer.DialFuncTo(r.Host, "etcd member "+r.Member)(ctx, "tcp", addr)
}

// secret is the parsed FAILOVER_SECRET, or what to do. The value itself
// never goes into an error.
func (l *Lease) secret() ([]byte, error) {
	if l.Err != nil {
		return nil, l.Err
	}
	if l.SecretErr != nil {
		return nil, fmt.Errorf("failover is on, but %s does not resolve on this machine (%v): the lease is read and changed from here with a certificate derived from it. Make it with `understudy failover secret` and keep it where POSTGRES_PASSWORD is kept (.kamal/secrets holds the reference)", failover.SecretName, l.SecretErr)
	}
	b, err := failover.ParseSecret(l.Secret)
	if err != nil {
		return nil, err // names the secret, not its value
	}
	return b, nil
}

// warm opens the SSH connections to the members' servers in parallel, so
// the etcd client's dial timeout covers only the tunnel and TLS. It
// returns once a majority of the servers is connected (or all tried): a
// server that does not answer is left to the client, which uses the
// others, and never holds up an emergency promote; its dial goes on in the
// background for up to 10 s.
func (l *Lease) warm(ctx context.Context) {
	hosts := map[string]bool{}
	for _, r := range l.Routes {
		hosts[r.Host] = true
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	done := make(chan bool, len(hosts)) // buffered: no sender waits
	var wg sync.WaitGroup
	for h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Dialer.Client(wctx, h)
			done <- err == nil
		}()
	}
	go func() { wg.Wait(); cancel() }()
	ok := 0
	for i := 0; i < len(hosts); i++ {
		select {
		case <-ctx.Done():
			return
		case up := <-done:
			if up {
				ok++
			}
		}
		if ok > len(hosts)/2 {
			return
		}
	}
}

// OpenStore opens the failover keys through the members' servers.
func (l *Lease) OpenStore(ctx context.Context) (*failover.Store, func(), error) {
	secret, err := l.secret()
	if err != nil {
		return nil, nil, err
	}
	l.warm(ctx)
	st, closeStore, err := failover.OperatorStore(l.Failover, secret, l.dial)
	if err != nil {
		return nil, nil, fmt.Errorf("opening an etcd client to the failover members through %s: %w", l.hostList(), err)
	}
	return st, closeStore, nil
}

func (l *Lease) hostList() string {
	var hs []string
	seen := map[string]bool{}
	for _, r := range l.Routes {
		if !seen[r.Host] {
			seen[r.Host] = true
			hs = append(hs, r.Host)
		}
	}
	sort.Strings(hs)
	return fmt.Sprint(hs)
}

// ReadLease reads the lease with a quorum.
func (l *Lease) ReadLease(ctx context.Context) (live.LeaseReading, error) {
	return l.store().ReadLease(ctx)
}

// HandOver hands the lease from `from` to `to`.
func (l *Lease) HandOver(ctx context.Context, from, to string) error {
	return l.store().HandOver(ctx, from, to)
}

// LeaseFor lets `to` take the free lease with its own position.
func (l *Lease) LeaseFor(ctx context.Context, to string, tl pgops.Timeline, lsn pgops.LSN) error {
	return l.store().LeaseFor(ctx, to, tl, lsn)
}

// SetPaused pauses or resumes failover.
func (l *Lease) SetPaused(ctx context.Context, paused bool) error {
	return l.store().SetPaused(ctx, paused)
}

func (l *Lease) store() live.StoreLease { return live.StoreLease{Open: l.OpenStore} }
