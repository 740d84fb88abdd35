package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The keys, under /understudy/<cluster token>/:
//
//	leader    the holder's node name, attached to its lease (gone when the
//	          lease expires or is revoked)
//	position  the holder's last published Position (JSON; kept after the
//	          lease ends: the bar a standby must reach to promote)
//	handover  the target of a planned switchover (attached to a short lease)
//	paused    present while failover is paused
//	sync      the standbys recorded as synchronous (JSON list)
type Store struct {
	C      *clientv3.Client
	Prefix string
	TTL    time.Duration
	// Timeout bounds every call (a renewal that takes longer counts as
	// failed; the next one is due soon anyway).
	Timeout time.Duration
	// Dial makes a client for given endpoints (MoveLeader needs one to the
	// leader itself); nil: no leader moves.
	Dial func(endpoints []string) (*clientv3.Client, error)
}

// NewStore is a Store for a cluster's token.
func NewStore(c *clientv3.Client, token string, s Settings) *Store {
	return &Store{C: c, Prefix: "/understudy/" + token + "/", TTL: s.TTL, Timeout: 2 * s.RenewEvery}
}

func (st *Store) key(k string) string { return st.Prefix + k }

// State is one linearizable read of every failover key (a read that only
// succeeds with a quorum).
type State struct {
	Holder      string
	HolderLease clientv3.LeaseID
	Position    Position
	PositionRev int64 // mod revision of the position key (0: none)
	Handover    string
	Paused      bool
	Sync        []string
}

// Read reads the state with a quorum.
func (st *Store) Read(ctx context.Context) (State, error) {
	ctx, cancel := context.WithTimeout(ctx, st.Timeout)
	defer cancel()
	r, err := st.C.Get(ctx, st.Prefix, clientv3.WithPrefix())
	if err != nil {
		return State{}, fmt.Errorf("reading the failover state from etcd: %w", err)
	}
	var s State
	for _, kv := range r.Kvs {
		switch string(kv.Key) {
		case st.key("leader"):
			s.Holder, s.HolderLease = string(kv.Value), clientv3.LeaseID(kv.Lease)
		case st.key("position"):
			if err := json.Unmarshal(kv.Value, &s.Position); err != nil {
				return State{}, fmt.Errorf("etcd key %s: %w", kv.Key, err)
			}
			s.PositionRev = kv.ModRevision
		case st.key("handover"):
			s.Handover = string(kv.Value)
		case st.key("paused"):
			s.Paused = true
		case st.key("sync"):
			if err := json.Unmarshal(kv.Value, &s.Sync); err != nil {
				return State{}, fmt.Errorf("etcd key %s: %w", kv.Key, err)
			}
		}
	}
	return s, nil
}

// Held is a lease this agent holds.
type Held struct {
	ID clientv3.LeaseID
	// Sent: when the last successful grant or renewal was sent.
	Sent time.Time
}

// ErrTaken: the lease was not free, or the position moved since the
// decision (another node took it first).
var ErrTaken = errors.New("the lease was taken by another node first")

// ErrLost: the lease expired or was revoked; this agent no longer holds it.
var ErrLost = errors.New("the lease is gone")

// Acquire takes the free lease in one transaction: the leader key absent
// and the position unchanged since basisRev, then the key attached to a new
// lease and the new position. now is read before the grant is sent.
func (st *Store) Acquire(ctx context.Context, node string, basisRev int64, pos Position, now func() time.Time) (Held, error) {
	ctx, cancel := context.WithTimeout(ctx, st.Timeout)
	defer cancel()
	sent := now()
	g, err := st.C.Grant(ctx, int64(st.TTL/time.Second))
	if err != nil {
		return Held{}, fmt.Errorf("granting a lease: %w", err)
	}
	pj, _ := json.Marshal(pos)
	r, err := st.C.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(st.key("leader")), "=", 0),
		clientv3.Compare(clientv3.ModRevision(st.key("position")), "=", basisRev),
	).Then(
		clientv3.OpPut(st.key("leader"), node, clientv3.WithLease(g.ID)),
		clientv3.OpPut(st.key("position"), string(pj)),
		clientv3.OpDelete(st.key("handover")),
	).Commit()
	if err == nil && !r.Succeeded {
		err = ErrTaken
	}
	if err != nil {
		rctx, rcancel := context.WithTimeout(context.Background(), st.Timeout)
		st.C.Revoke(rctx, g.ID)
		rcancel()
		return Held{}, err
	}
	return Held{ID: g.ID, Sent: sent}, nil
}

// Renew renews the lease and, with a position, publishes it (only while
// the leader key is still attached to this lease). The Held it returns
// carries the renewal's send time whenever the renewal went through, even
// if the publication then failed.
func (st *Store) Renew(ctx context.Context, h Held, pos *Position, now func() time.Time) (Held, error) {
	h, err := st.KeepAlive(ctx, h, now)
	if err != nil || pos == nil {
		return h, err
	}
	return h, st.Publish(ctx, h, *pos)
}

// KeepAlive renews the lease once.
func (st *Store) KeepAlive(ctx context.Context, h Held, now func() time.Time) (Held, error) {
	kctx, cancel := context.WithTimeout(ctx, st.Timeout)
	defer cancel()
	sent := now()
	if _, err := st.C.KeepAliveOnce(kctx, h.ID); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return h, ErrLost
		}
		return h, fmt.Errorf("renewing the lease: %w", err)
	}
	h.Sent = sent
	return h, nil
}

// Publish writes the holder's position, only while the leader key is
// attached to its lease.
func (st *Store) Publish(ctx context.Context, h Held, pos Position) error {
	pctx, cancel := context.WithTimeout(ctx, st.Timeout)
	defer cancel()
	pj, _ := json.Marshal(pos)
	r, err := st.C.Txn(pctx).If(clientv3.Compare(clientv3.LeaseValue(st.key("leader")), "=", h.ID)).
		Then(clientv3.OpPut(st.key("position"), string(pj))).Commit()
	if err != nil {
		return fmt.Errorf("publishing the position: %w", err)
	}
	if !r.Succeeded {
		return ErrLost
	}
	return nil
}

// Resign gives the lease up at once; with a target, records a planned
// handover to it (for 2×TTL), so no other node takes the lease meanwhile.
func (st *Store) Resign(ctx context.Context, h Held, target string) error {
	ctx, cancel := context.WithTimeout(ctx, st.Timeout)
	defer cancel()
	ops := []clientv3.Op{clientv3.OpDelete(st.key("leader"))}
	if target != "" {
		g, err := st.C.Grant(ctx, int64(2*st.TTL/time.Second))
		if err != nil {
			return fmt.Errorf("granting the handover's lease: %w", err)
		}
		ops = append(ops, clientv3.OpPut(st.key("handover"), target, clientv3.WithLease(g.ID)))
	}
	r, err := st.C.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(st.key("leader")), "=", h.ID)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("giving the lease up: %w", err)
	}
	if !r.Succeeded {
		return ErrLost
	}
	_, err = st.C.Revoke(ctx, h.ID)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("revoking the lease: %w", err)
	}
	return nil
}

// HandOver is a planned switchover's lease handover, done by the
// switchover command (not the holder's agent): once the old primary is
// stopped, the leader key is deleted (only if it still names from) and
// the target recorded, for 2×TTL, as the only node that may take it. The
// target's agent then takes the lease and promotes; the old holder's next
// renewal finds the lease gone.
func (st *Store) HandOver(ctx context.Context, from, to string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*st.Timeout)
	defer cancel()
	g, err := st.C.Grant(ctx, int64(2*st.TTL/time.Second))
	if err != nil {
		return fmt.Errorf("granting the handover's lease: %w", err)
	}
	r, err := st.C.Txn(ctx).If(clientv3.Compare(clientv3.Value(st.key("leader")), "=", from)).
		Then(clientv3.OpDelete(st.key("leader")), clientv3.OpPut(st.key("handover"), to, clientv3.WithLease(g.ID))).Commit()
	if err != nil {
		return fmt.Errorf("handing the lease over to %s: %w", to, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("handing the lease over to %s: %s does not hold it", to, from)
	}
	return nil
}

// LeaseFor is an emergency promote's override, done by `understudy
// promote` (a person accepting the loss): while nobody holds the lease,
// the position becomes to's own and to is recorded (for 2×TTL) as the
// only node that may take the lease. to's agent then takes it and
// promotes although it had refused (lagging, not synchronous): its own
// position is the bar now.
func (st *Store) LeaseFor(ctx context.Context, to string, pos Position) error {
	ctx, cancel := context.WithTimeout(ctx, 3*st.Timeout)
	defer cancel()
	g, err := st.C.Grant(ctx, int64(2*st.TTL/time.Second))
	if err != nil {
		return fmt.Errorf("granting the handover's lease: %w", err)
	}
	pj, _ := json.Marshal(pos)
	r, err := st.C.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(st.key("leader")), "=", 0)).
		Then(clientv3.OpPut(st.key("position"), string(pj)), clientv3.OpPut(st.key("handover"), to, clientv3.WithLease(g.ID))).Commit()
	if err != nil {
		return fmt.Errorf("letting %s take the lease: %w", to, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("letting %s take the lease: %w", to, ErrTaken)
	}
	return nil
}

// RecordSync records the synchronous standbys, only while holding the lease.
func (st *Store) RecordSync(ctx context.Context, h Held, names []string) error {
	ctx, cancel := context.WithTimeout(ctx, st.Timeout)
	defer cancel()
	if names == nil {
		names = []string{}
	}
	j, _ := json.Marshal(names)
	r, err := st.C.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(st.key("leader")), "=", h.ID)).
		Then(clientv3.OpPut(st.key("sync"), string(j))).Commit()
	if err != nil {
		return fmt.Errorf("recording the synchronous standbys: %w", err)
	}
	if !r.Succeeded {
		return ErrLost
	}
	return nil
}

// SetPaused pauses or resumes failover.
func (st *Store) SetPaused(ctx context.Context, paused bool) error {
	ctx, cancel := context.WithTimeout(ctx, st.Timeout)
	defer cancel()
	var err error
	if paused {
		_, err = st.C.Put(ctx, st.key("paused"), time.Now().UTC().Format(time.RFC3339))
	} else {
		_, err = st.C.Delete(ctx, st.key("paused"))
	}
	if err != nil {
		return fmt.Errorf("setting failover pause in etcd: %w", err)
	}
	return nil
}

// MemberHealth is one member as seen from here.
type MemberHealth struct {
	Name    string `json:"name"`
	URL     string `json:"url"`
	Healthy bool   `json:"healthy"`
	Leader  bool   `json:"leader"`
	Error   string `json:"error,omitempty"`
}

// Members asks every member for its status (each under the timeout).
func (st *Store) Members(ctx context.Context, s MemberSpec) []MemberHealth {
	var out []MemberHealth
	for _, m := range s.Members {
		h := MemberHealth{Name: m.Name, URL: s.ClientURL(m)}
		cctx, cancel := context.WithTimeout(ctx, st.Timeout)
		r, err := st.C.Status(cctx, h.URL)
		cancel()
		if err != nil {
			h.Error = err.Error()
		} else {
			h.Healthy = len(r.Errors) == 0
			h.Leader = r.Leader == r.Header.MemberId
			if !h.Healthy {
				h.Error = fmt.Sprint(r.Errors)
			}
		}
		out = append(out, h)
	}
	return out
}

// MoveLeader asks etcd to move its raft leadership to the named member.
// The request must reach the current leader, so it goes to the leader's
// own URL through a client of its own (st.Dial makes it).
func (st *Store) MoveLeader(ctx context.Context, s MemberSpec, to string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*st.Timeout)
	defer cancel()
	if st.Dial == nil {
		return errors.New("moving etcd's leadership needs a client per member")
	}
	list, err := st.C.MemberList(ctx)
	if err != nil {
		return err
	}
	var target uint64
	for _, m := range list.Members {
		if m.Name == to {
			target = m.ID
		}
	}
	if target == 0 {
		return fmt.Errorf("etcd has no member %s", to)
	}
	for _, m := range s.Members {
		url := s.ClientURL(m)
		r, err := st.C.Status(ctx, url)
		if err != nil || r.Leader != r.Header.MemberId {
			continue
		}
		if r.Header.MemberId == target {
			return nil // already there
		}
		lc, err := st.Dial([]string{url})
		if err != nil {
			return err
		}
		defer lc.Close()
		if _, err := lc.MoveLeader(ctx, target); err != nil {
			return fmt.Errorf("moving etcd's leadership to %s: %w", to, err)
		}
		return nil
	}
	return errors.New("moving etcd's leadership: no member says it leads")
}
