package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

// DefaultPort is the agent's HTTP port: Patroni's REST port, which HAProxy
// users know.
const DefaultPort = 8008

// Defaults of Config.
const (
	DefaultInterval    = 100 * time.Millisecond
	DefaultDeadline    = 10 * time.Second
	DefaultPeerEvery   = 500 * time.Millisecond
	DefaultDetailEvery = 2 * time.Second
)

// Peer is another node's agent.
type Peer struct {
	Name string
	Addr string // host:port of its HTTP listener
}

// Config is what an agent runs with.
type Config struct {
	Node        string
	PG          PGSource
	Peers       []Peer
	Interval    time.Duration // between observations
	Deadline    time.Duration // an observation gets this long (two attempts of half each), a peer's /status half
	PeerEvery   time.Duration // between reads of the peers' /status
	DetailEvery time.Duration // between reads of walsenders and slots (metrics)
	// BackupReport is the backup agent's local report (agent-status.json)
	// when it runs on this server, for /metrics; "" otherwise.
	BackupReport string
	// Lease reports the failover lease; nil is "failover off".
	Lease func() LeaseState
	// Failover is the failover loop this agent runs (nil: failover off).
	// When set, /primary is 200 only while it holds the lease (asked at
	// every check), /status carries its report, /metrics its metrics.
	Failover FailoverSource
	Log      io.Writer
}

// FailoverSource is the agent's view of its failover loop
// (*failover.Runner; this package does not import it, which imports the
// lab that imports this).
type FailoverSource interface {
	// Holder is the lease's holder at now: this node only while it holds
	// a lease valid for writes, "" when nobody does.
	Holder(now time.Time) string
	// ReportJSON is its report (failover.Report) for /status.
	ReportJSON() json.RawMessage
	// MetricsText is its part of /metrics (Prometheus text format).
	MetricsText() string
}

func (c *Config) defaults() {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Deadline == 0 {
		c.Deadline = DefaultDeadline
	}
	if c.PeerEvery == 0 {
		c.PeerEvery = DefaultPeerEvery
	}
	if c.DetailEvery == 0 {
		c.DetailEvery = DefaultDetailEvery
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Details are the slower readings behind /metrics and /status.
type Details struct {
	At              time.Time           `json:"observed_at"`
	Error           string              `json:"error,omitempty"`
	Replication     []pgops.Replication `json:"replication,omitempty"`
	Slots           []pgops.Slot        `json:"slots,omitempty"`
	TimelineStarted time.Time           `json:"timeline_started,omitzero"`
}

// Agent observes the local PostgreSQL and serves the answers.
type Agent struct {
	cfg  Config
	obs  *Observer // the fast loop's connection
	slow *Observer // the slow loop's

	mu       sync.Mutex
	view     NodeView
	started  time.Time     // when the observation behind view began
	observed chan struct{} // closed and replaced after every observation
	details  Details
	files    pgops.NodeFiles
	filesAt  time.Time // when files were last read (zero: never)
	peers    []PeerView
	counts   counters

	wake       chan struct{}
	slowLogged time.Time // the observe loop's own: when a slow probe was last logged
}

type counters struct {
	Observations, Failures, Checks int64
}

// New makes an agent.
func New(cfg Config) *Agent {
	cfg.defaults()
	a := &Agent{cfg: cfg, obs: NewObserver(cfg.PG), slow: NewObserver(cfg.PG), observed: make(chan struct{}), wake: make(chan struct{}, 1)}
	a.view = NodeView{Node: cfg.Node, Role: RoleDown, ValidFor: a.validFor()}
	for _, p := range cfg.Peers {
		a.peers = append(a.peers, PeerView{Node: p.Name, Error: "not read yet"})
	}
	return a
}

// validFor is how long an observation stands: a loop that has not
// finished one in this long is stuck.
func (a *Agent) validFor() time.Duration { return 2*a.cfg.Deadline + a.cfg.Interval }

// Listen binds the agent's address: exactly the one given, never a
// wildcard the caller did not ask for.
func Listen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("the agent's listen address %q is not host:port: %w", addr, err)
	}
	if host == "" {
		return nil, fmt.Errorf("the agent's listen address %q names no host: give the server's private address (the agent never listens on every interface by default)", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("the agent cannot listen on %s: %w", addr, err)
	}
	return l, nil
}

// Run observes and serves on l until ctx ends.
func (a *Agent) Run(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
	a.logf("listening on %s; PostgreSQL at %s:%d as %s; peers %v", l.Addr(), a.cfg.PG.Host, a.cfg.PG.Port, a.cfg.PG.User, peerNames(a.cfg.Peers))
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); a.observeLoop(ctx) }()
	go func() { defer wg.Done(); a.slowLoop(ctx) }()
	go func() { defer wg.Done(); a.peerLoop(ctx) }()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	srv.Shutdown(sctx)
	cancel()
	wg.Wait()
	a.obs.Close()
	a.slow.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func peerNames(ps []Peer) []string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name+"@"+p.Addr)
	}
	return n
}

func (a *Agent) logf(format string, args ...any) {
	fmt.Fprintf(a.cfg.Log, "%s understudy agent %s: %s\n", time.Now().UTC().Format("2006-01-02 15:04:05.000"), a.cfg.Node, fmt.Sprintf(format, args...))
}

// observeLoop observes every Interval, or at once when woken (a fresh
// answer was asked for), never two at a time.
func (a *Agent) observeLoop(ctx context.Context) {
	for ctx.Err() == nil {
		start := time.Now()
		v, _, _ := a.observeOnce(ctx, start)
		a.publish(v, start)
		wait := a.cfg.Interval - time.Since(start)
		t := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-a.wake:
		}
		t.Stop()
	}
}

// slowLoop reads, every DetailEvery on a connection of its own, what needs
// a file (the control file, the fence note) and what /metrics and /status
// show beyond the role. A slow disk delays it, never the role answers.
func (a *Agent) slowLoop(ctx context.Context) {
	for ctx.Err() == nil {
		a.mu.Lock()
		tl := a.view.Timeline
		a.mu.Unlock()
		sctx, cancel := context.WithTimeout(ctx, a.cfg.Deadline)
		f, d, err := a.slow.Slow(sctx, tl)
		cancel()
		d.At = time.Now()
		a.mu.Lock()
		if err != nil {
			a.details.Error, a.details.At = err.Error(), d.At
		} else {
			a.files, a.filesAt, a.details = f, d.At, d
		}
		a.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(a.cfg.DetailEvery):
		}
	}
}

// observeOnce reads the local server under the deadline.
func (a *Agent) observeOnce(ctx context.Context, start time.Time) (NodeView, pgops.RoleProbe, bool) {
	// Two attempts of half the deadline each: a server that stalls for a
	// moment (a busy machine) is asked again on a fresh connection before
	// it is reported as not answering; one that does not answer within the
	// whole deadline is reported then.
	var p pgops.RoleProbe
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		octx, cancel := context.WithTimeout(ctx, a.cfg.Deadline/2)
		t := time.Now()
		p, err = a.obs.Probe(octx)
		cancel()
		if took := time.Since(t); took > a.cfg.Deadline/8 && time.Since(a.slowLogged) > 10*time.Second {
			a.slowLogged = time.Now() // at most one line in 10 s
			a.logf("a slow probe: %s (attempt %d, %v)", took.Round(time.Millisecond), attempt+1, err)
		}
		if !errors.Is(err, ErrNoAnswer) || ctx.Err() != nil {
			break
		}
	}
	v := NodeView{Node: a.cfg.Node, At: time.Now(), Took: time.Since(start), ValidFor: a.validFor()}
	if err != nil {
		v.Role = RoleDown
		v.Error = err.Error()
		if errors.Is(err, ErrNoAnswer) {
			v.Error = fmt.Sprintf("no answer within %s", a.cfg.Deadline)
		}
		return v, p, false
	}
	v.Role = RolePrimary
	if p.InRecovery {
		v.Role = RoleStandby
	}
	v.Timeline, v.WriteLSN, v.ReceiveLSN, v.ReplayLSN = p.Timeline, LSN(p.WriteLSN), LSN(p.ReceiveLSN), LSN(p.ReplayLSN)
	v.LagSeconds, v.Receiver, v.Sender, v.Draining = p.LagSeconds, p.Receiver, p.Sender, p.Draining
	a.mu.Lock()
	v.SystemID, v.Fenced, v.FilesAt = a.files.SystemID, a.files.Fenced, a.filesAt
	if v.Timeline == 0 {
		v.Timeline = a.files.CheckpointTimeline // a standby without a walreceiver
	}
	a.mu.Unlock()
	return v, p, true
}

func (a *Agent) publish(v NodeView, start time.Time) {
	a.mu.Lock()
	old := a.view
	a.view, a.started = v, start
	a.counts.Observations++
	if v.Role == RoleDown {
		a.counts.Failures++
	}
	close(a.observed)
	a.observed = make(chan struct{})
	a.mu.Unlock()
	if old.Role != v.Role || old.Fenced != v.Fenced || old.Draining != v.Draining || old.Timeline != v.Timeline || (v.Role == RoleDown && old.Error != v.Error) {
		what := string(v.Role)
		if v.Role == RoleDown {
			what += ": " + v.Error
		} else {
			what += fmt.Sprintf(" on timeline %d", v.Timeline)
		}
		if v.Fenced {
			what += ", fenced"
		}
		if v.Draining {
			what += ", draining for a switchover"
		}
		a.logf("PostgreSQL is %s", what)
	}
}

// fresh waits (up to the deadline and one interval) for an observation
// that began after now, waking the loop for it.
func (a *Agent) fresh(ctx context.Context) {
	asked := time.Now()
	limit := time.NewTimer(a.cfg.Deadline + a.cfg.Interval)
	defer limit.Stop()
	for {
		a.mu.Lock()
		if !a.started.Before(asked) {
			a.mu.Unlock()
			return
		}
		ch := a.observed
		a.mu.Unlock()
		select {
		case a.wake <- struct{}{}:
		default:
		}
		select {
		case <-ch:
		case <-limit.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// peerLoop reads every peer's /status every PeerEvery.
func (a *Agent) peerLoop(ctx context.Context) {
	client := &http.Client{Timeout: a.cfg.Deadline / 2, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: a.cfg.Deadline / 2}).DialContext,
		MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second, DisableCompression: true,
	}}
	for ctx.Err() == nil {
		var wg sync.WaitGroup
		views := make([]PeerView, len(a.cfg.Peers))
		for i, p := range a.cfg.Peers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				views[i] = FetchPeer(ctx, client, p)
			}()
		}
		wg.Wait()
		a.mu.Lock()
		old := a.peers
		a.peers = views
		a.mu.Unlock()
		for i, v := range views {
			if i < len(old) && (old[i].Error == "") != (v.Error == "") {
				if v.Error != "" {
					a.logf("peer %s's agent: %s", v.Node, v.Error)
				} else {
					a.logf("peer %s's agent answers again", v.Node)
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(a.cfg.PeerEvery):
		}
	}
}

// FetchPeer reads one agent's /status.
func FetchPeer(ctx context.Context, client *http.Client, p Peer) PeerView {
	pv := PeerView{Node: p.Name}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Addr+"/status", nil)
	if err != nil {
		pv.Error = err.Error()
		return pv
	}
	resp, err := client.Do(req)
	if err != nil {
		pv.Error = "no answer from its agent at " + p.Addr
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) {
			pv.Error += ": " + errors.Unwrap(err).Error()
		}
		return pv
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		pv.Error = fmt.Sprintf("its agent at %s answered %s, not a status", p.Addr, resp.Status)
		return pv
	}
	if st.View.Node != p.Name {
		pv.Error = fmt.Sprintf("the agent at %s is %q's, not %s's", p.Addr, st.View.Node, p.Name)
		return pv
	}
	pv.Fetched, pv.View = time.Now(), &st.View
	return pv
}

// snapshot is everything an answer is made from, at one instant.
func (a *Agent) snapshot() (NodeView, []PeerView, Details, counters) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.view, append([]PeerView(nil), a.peers...), a.details, a.counts
}

func (a *Agent) lease() LeaseState {
	if a.cfg.Failover != nil {
		return LeaseState{Failover: true, Holder: a.cfg.Failover.Holder(time.Now())}
	}
	if a.cfg.Lease == nil {
		return LeaseState{}
	}
	return a.cfg.Lease()
}

// Answer is the agent's answer now.
func (a *Agent) Answer() RoleAnswer {
	v, peers, _, _ := a.snapshot()
	return Answer(v, peers, a.lease(), time.Now())
}
