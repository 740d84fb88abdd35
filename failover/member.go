package failover

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Ports etcd's own defaults use.
const (
	DefaultClientPort = 2379
	DefaultPeerPort   = 2380
)

// MemberAddr is one member of the three: a database server's agent or the
// witness on an app host, by its private IP.
type MemberAddr struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
	// Ports of this member when it has its own (three members on one
	// machine: the loopback lab); 0 uses the spec's.
	ClientPort int `json:"client_port,omitempty"`
	PeerPort   int `json:"peer_port,omitempty"`
}

// MemberSpec is what a member needs to run.
type MemberSpec struct {
	Name       string       `json:"name"`
	Members    []MemberAddr `json:"members"` // all of them, this one included
	ClientPort int          `json:"client_port"`
	PeerPort   int          `json:"peer_port"`
	DataDir    string       `json:"data_dir"` // on a named volume
	Token      string       `json:"token"`    // initial-cluster-token: the cluster's id
	// Raft timing (0: 250 ms heartbeat, 2.5 s election; see EmbedConfig).
	HeartbeatMs uint   `json:"heartbeat_ms"`
	ElectionMs  uint   `json:"election_ms"`
	LogFile     string `json:"log_file,omitempty"` // etcd's own log ("" = stderr)
}

func (s MemberSpec) self() (MemberAddr, error) {
	for _, m := range s.Members {
		if m.Name == s.Name {
			return m, nil
		}
	}
	return MemberAddr{}, fmt.Errorf("member %q is not among the failover members %v", s.Name, s.Members)
}

func (s MemberSpec) port(p, def int) string {
	if p == 0 {
		p = def
	}
	return strconv.Itoa(p)
}

// PeerURL and ClientURL of a member.
func (s MemberSpec) PeerURL(m MemberAddr) string {
	return "https://" + net.JoinHostPort(m.IP, s.port(cmp.Or(m.PeerPort, s.PeerPort), DefaultPeerPort))
}
func (s MemberSpec) ClientURL(m MemberAddr) string {
	return "https://" + net.JoinHostPort(m.IP, s.port(cmp.Or(m.ClientPort, s.ClientPort), DefaultClientPort))
}

// ClientURLs of every member, this one first.
func (s MemberSpec) ClientURLs() []string {
	var urls []string
	for _, m := range s.Members {
		if m.Name == s.Name {
			urls = append([]string{s.ClientURL(m)}, urls...)
		} else {
			urls = append(urls, s.ClientURL(m))
		}
	}
	return urls
}

// InitialCluster is etcd's initial-cluster for the three members.
func (s MemberSpec) InitialCluster() string {
	var parts []string
	for _, m := range s.Members {
		parts = append(parts, m.Name+"="+s.PeerURL(m))
	}
	return strings.Join(parts, ",")
}

// Validate says what is wrong with a spec.
func (s MemberSpec) Validate() error {
	if len(s.Members) != 3 {
		return fmt.Errorf("failover needs exactly three etcd members (the two database servers and the witness), not %d", len(s.Members))
	}
	seen := map[string]bool{}
	for _, m := range s.Members {
		ip := net.ParseIP(m.IP)
		if ip == nil || !(ip.IsPrivate() || ip.IsLoopback()) {
			return fmt.Errorf("failover member %s: %q is not a private IP; etcd's peer and client traffic stays on the private network (give the server's private IP)", m.Name, m.IP)
		}
		// One machine may run several members only on ports of their own
		// (the loopback lab).
		where := s.ClientURL(m)
		if seen[m.Name] || seen[where] {
			return fmt.Errorf("failover member %s (%s) appears twice: each member needs its own server", m.Name, where)
		}
		seen[m.Name], seen[where] = true, true
	}
	if _, err := s.self(); err != nil {
		return err
	}
	if s.DataDir == "" || s.Token == "" {
		return errors.New("failover member: a data directory and a cluster token are needed")
	}
	return nil
}

// EmbedConfig is etcd's configuration for this member: TLS on both
// sides with client certificates required, listening on the private IP
// only. state is "new" (bootstrap, or a member that never started) or
// "existing" (joining after MemberAdd), with its initial cluster. Pure.
func EmbedConfig(s MemberSpec, tlsf TLSFiles, state, initialCluster string) (*embed.Config, error) {
	self, err := s.self()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = s.Name
	cfg.Dir = s.DataDir
	peer, err := url.Parse(s.PeerURL(self))
	if err != nil {
		return nil, err
	}
	client, err := url.Parse(s.ClientURL(self))
	if err != nil {
		return nil, err
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.InitialCluster = initialCluster
	cfg.InitialClusterToken = s.Token
	cfg.ClusterState = state
	for _, info := range []*struct {
		cert, key, ca *string
		auth          *bool
	}{
		{&cfg.PeerTLSInfo.CertFile, &cfg.PeerTLSInfo.KeyFile, &cfg.PeerTLSInfo.TrustedCAFile, &cfg.PeerTLSInfo.ClientCertAuth},
		{&cfg.ClientTLSInfo.CertFile, &cfg.ClientTLSInfo.KeyFile, &cfg.ClientTLSInfo.TrustedCAFile, &cfg.ClientTLSInfo.ClientCertAuth},
	} {
		*info.cert, *info.key, *info.ca, *info.auth = tlsf.Cert, tlsf.Key, tlsf.CA, true
	}
	// Agents connect from any private address of the cluster, with a
	// certificate from the same authority: no SAN check on clients.
	cfg.ClientTLSInfo.SkipClientSANVerify = true
	// Raft timing: 250 ms heartbeats, 2.5 s election timeout (etcd's
	// defaults are 100 ms and 1 s). On a server whose CPU PostgreSQL
	// saturates, the defaults let starved members miss heartbeats and
	// elect again and again, and renewals fail meanwhile (the soak saw 10 s
	// of them). A longer election costs failover nothing while etcd's
	// leader stays on the witness, which the holder sees to; the witness's
	// own death does cost one, so the database servers' members elect
	// sooner (DatabaseMemberElectionMs, which SpecFor sets).
	cfg.TickMs, cfg.ElectionMs = 250, 2500
	if s.HeartbeatMs != 0 {
		cfg.TickMs = s.HeartbeatMs
	}
	if s.ElectionMs != 0 {
		cfg.ElectionMs = s.ElectionMs
	}
	cfg.SnapshotCount = 10000
	cfg.AutoCompactionMode = "revision"
	cfg.AutoCompactionRetention = "1000"
	cfg.QuotaBackendBytes = 256 << 20 // a few keys: a small database
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	if s.LogFile != "" {
		cfg.LogOutputs = []string{s.LogFile}
	}
	cfg.PreVote = true
	return cfg, nil
}

// Member is a running embedded etcd member.
type Member struct {
	Etcd *embed.Etcd
	// Joined says how it started: "data" (its data directory), "new"
	// (bootstrap) or "rejoined" (its data was lost: removed and added back).
	Joined string
}

// Close stops the member.
func (m *Member) Close() { m.Etcd.Close() }

// StartMember starts this member. A member whose data directory is empty
// while the other two run a cluster that knows it has lost its data: it
// asks them to remove its old identity and add it back, then joins as a
// new member and catches up (etcd refuses a member that rejoins with an
// empty directory under its old identity).
func StartMember(ctx context.Context, s MemberSpec, secret []byte, dial Dialer) (*Member, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	self, _ := s.self()
	tlsf, err := WriteTLS(filepath.Join(s.DataDir, "tls"), secret, s.Name, []net.IP{net.ParseIP(self.IP)}, time.Now())
	if err != nil {
		return nil, err
	}
	state, initial, joined := "new", s.InitialCluster(), "new"
	if _, err := os.Stat(filepath.Join(s.DataDir, "member", "wal")); err == nil {
		joined = "data"
	} else {
		st, ic, err := rejoinPlan(ctx, s, tlsf, dial, 3*time.Second)
		if err != nil {
			return nil, err
		}
		if st != "" {
			state, initial, joined = st, ic, "rejoined"
		}
	}
	e, err := startEmbed(ctx, s, tlsf, state, initial)
	if err != nil && joined == "new" && strings.Contains(err.Error(), "has already been bootstrapped") {
		// The others did not answer in time (an etcd election after this
		// member's server died, say), but they know this member: it lost
		// its data. Ask again, for longer.
		st, ic, perr := rejoinPlan(ctx, s, tlsf, dial, 20*time.Second)
		if perr != nil {
			return nil, perr
		}
		if st == "" {
			return nil, err
		}
		joined = "rejoined"
		e, err = startEmbed(ctx, s, tlsf, st, ic)
	}
	if err != nil {
		return nil, err
	}
	return &Member{Etcd: e, Joined: joined}, nil
}

func startEmbed(ctx context.Context, s MemberSpec, tlsf TLSFiles, state, initial string) (*embed.Etcd, error) {
	cfg, err := EmbedConfig(s, tlsf, state, initial)
	if err != nil {
		return nil, err
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting etcd member %s: %w", s.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd member %s: %w", s.Name, err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcd member %s did not join a quorum: %w", s.Name, ctx.Err())
	}
}

// rejoinPlan asks the other members, when they answer, whether they know
// this member: "" when they do not answer or it never started (bootstrap
// as new), else "existing" and the initial cluster after remove + add.
func rejoinPlan(ctx context.Context, s MemberSpec, tlsf TLSFiles, dial Dialer, ask time.Duration) (string, string, error) {
	self, _ := s.self()
	var others []string
	for _, m := range s.Members {
		if m.Name != s.Name {
			others = append(others, s.ClientURL(m))
		}
	}
	c, err := NewClient(others, tlsf, dial)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	var list *clientv3.MemberListResponse
	for until := time.Now().Add(ask); ; {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		list, err = c.MemberList(lctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(until) || ctx.Err() != nil {
			return "", "", nil // nobody answers: first start of the cluster
		}
		time.Sleep(200 * time.Millisecond)
	}
	peer := s.PeerURL(self)
	for _, m := range list.Members {
		if !slices.Contains(m.PeerURLs, peer) {
			continue
		}
		if m.Name == "" {
			return "", "", nil // listed but never started: join as new
		}
		if _, err := c.MemberRemove(ctx, m.ID); err != nil {
			return "", "", fmt.Errorf("member %s lost its data; removing its old identity from the cluster failed (both other members must be up): %w", s.Name, err)
		}
	}
	// etcd refuses to add a voting member until the others have been
	// connected for its health interval (5 s): retry for a while.
	var add *clientv3.MemberAddResponse
	for wait := time.Now().Add(30 * time.Second); ; {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		add, err = c.MemberAdd(actx, []string{peer})
		acancel()
		if err == nil {
			break
		}
		if time.Now().After(wait) || ctx.Err() != nil {
			return "", "", fmt.Errorf("member %s lost its data; adding it back failed (both other members must be up): %w", s.Name, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var parts []string
	for _, m := range add.Members {
		name := m.Name
		if m.ID == add.Member.ID {
			name = s.Name
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	return "existing", strings.Join(parts, ","), nil
}

// Dialer opens the TCP connections of an etcd client (nil: the default).
// Tests use it to dial from inside a network namespace.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// NewClient is an etcd client over TLS with a member's certificate. An
// agent gives only its own member's URL: its requests never wait on a
// connection to a member that vanished or froze (with every member's URL,
// a frozen primary's member cost the standby 2 s timeouts, round after
// round: 12 s failovers instead of 6.6 s). Its member reaches etcd's
// leader, which the holder keeps on the witness.
func NewClient(endpoints []string, tlsf TLSFiles, dial Dialer) (*clientv3.Client, error) {
	cert, err := tls.LoadX509KeyPair(tlsf.Cert, tlsf.Key)
	if err != nil {
		return nil, fmt.Errorf("reading the failover certificate: %w", err)
	}
	caPEM, err := os.ReadFile(tlsf.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no certificate", tlsf.CA)
	}
	cfg := clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		TLS:                  &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxUnaryRetries:      1,
		Logger:               nopLogger(),
	}
	if dial != nil {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(dial))
	}
	return clientv3.New(cfg)
}

func nopLogger() *zap.Logger { return zap.NewNop() }
