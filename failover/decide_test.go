package failover

import (
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// holderObs: db is a healthy primary holding the lease, renewed 1 s ago.
func holderObs() Observation {
	return Observation{
		Now: t0, Node: "db", Standbys: []string{"db-replica"},
		PG:        PGView{Role: RolePrimary, Timeline: 1, LSN: 0x3000000, Replicas: []ReplicaView{{Name: "db-replica", Streaming: true}}},
		Lease:     LeaseView{Holder: "db", Mine: true, LastRenew: t0.Add(-time.Second)},
		Etcd:      EtcdView{Quorum: true, Leader: "app", Healthy: []string{"db", "db-replica", "app"}, Witness: "app"},
		Published: Position{Node: "db", Timeline: 1, LSN: 0x3000000, At: t0.Add(-time.Second)},
		Settings:  Defaults(),
	}
}

// standbyObs: db-replica streams, db holds the lease.
func standbyObs() Observation {
	return Observation{
		Now: t0, Node: "db-replica", Standbys: []string{"db"},
		PG:        PGView{Role: RoleStandby, Timeline: 1, LSN: 0x3000000, Streaming: true},
		Lease:     LeaseView{Holder: "db"},
		Etcd:      EtcdView{Quorum: true, Leader: "app", Healthy: []string{"db", "db-replica", "app"}, Witness: "app"},
		Published: Position{Node: "db", Timeline: 1, LSN: 0x3000000, At: t0.Add(-time.Second)},
		Settings:  Defaults(),
	}
}

func kinds(d Decision) string {
	var k []string
	for _, s := range d.Steps {
		k = append(k, string(s.Kind))
	}
	return strings.Join(k, ",")
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name    string
		obs     func() Observation
		steps   string
		refusal RefusalKind
		holds   bool
		reason  string // a part of the first step's reason or the refusal's message
	}{
		// The holder.
		{name: "holder renews and publishes its position", obs: holderObs, steps: "renew", holds: true},
		{name: "holder renewed recently: nothing", obs: func() Observation { o := holderObs(); o.Lease.LastRenew = t0.Add(-300 * time.Millisecond); return o }, steps: "", holds: true},
		{name: "holder that could not renew for TTL-FenceMargin fences", obs: func() Observation {
			o := holderObs()
			o.Lease.LastRenew = t0.Add(-5 * time.Second)
			return o
		}, steps: "fence", reason: "could expire in 1s"},
		{name: "holder just before the fence point still holds", obs: func() Observation {
			o := holderObs()
			o.Lease.LastRenew = t0.Add(-5*time.Second + time.Millisecond)
			return o
		}, steps: "renew", holds: true},
		{name: "paused does not keep a holder that cannot renew", obs: func() Observation {
			o := holderObs()
			o.Paused = true
			o.Lease.LastRenew = t0.Add(-6 * time.Second)
			return o
		}, steps: "fence"},
		{name: "holder without quorum keeps trying until the fence point", obs: func() Observation {
			o := holderObs()
			o.Etcd.Quorum = false
			o.Lease.LastRenew = t0.Add(-3 * time.Second)
			return o
		}, steps: "renew", holds: true},
		{name: "holder whose PostgreSQL is down past the grace fences and resigns", obs: func() Observation {
			o := holderObs()
			o.PG = PGView{Role: RoleDown, DownSince: t0.Add(-3 * time.Second)}
			return o
		}, steps: "fence,resign", reason: "down for 3s"},
		{name: "holder whose PostgreSQL hangs past the grace fences and resigns", obs: func() Observation {
			o := holderObs()
			o.PG = PGView{Role: RoleUnknown, DownSince: t0.Add(-6 * time.Second)}
			return o
		}, steps: "fence,resign"},
		{name: "holder keeps the lease through a short PostgreSQL outage", obs: func() Observation {
			o := holderObs()
			o.PG = PGView{Role: RoleDown, DownSince: t0.Add(-time.Second)}
			return o
		}, steps: "renew", holds: true},
		{name: "paused: holder keeps the lease while PostgreSQL is down", obs: func() Observation {
			o := holderObs()
			o.Paused = true
			o.PG = PGView{Role: RoleDown, DownSince: t0.Add(-time.Minute)}
			return o
		}, steps: "renew", holds: true},
		{name: "holder moves etcd's leader off its own member, to the witness", obs: func() Observation {
			o := holderObs()
			o.Etcd.Leader = "db"
			return o
		}, steps: "renew,move-etcd-leader", holds: true},
		{name: "holder moves etcd's leader off the standby's member, to the witness", obs: func() Observation {
			o := holderObs()
			o.Etcd.Leader = "db-replica"
			return o
		}, steps: "renew,move-etcd-leader", holds: true},
		{name: "witness down, leader on the standby: leave it", obs: func() Observation {
			o := holderObs()
			o.Etcd.Leader = "db-replica"
			o.Etcd.Healthy = []string{"db", "db-replica"}
			return o
		}, steps: "renew", holds: true},
		{name: "witness down, leader beside the primary: move it to the standby", obs: func() Observation {
			o := holderObs()
			o.Etcd.Leader = "db"
			o.Etcd.Healthy = []string{"db", "db-replica"}
			return o
		}, steps: "renew,move-etcd-leader", holds: true},
		{name: "holder alone healthy: no etcd leader move", obs: func() Observation {
			o := holderObs()
			o.Etcd.Leader = "db"
			o.Etcd.Healthy = []string{"db"}
			return o
		}, steps: "renew", holds: true},
		{name: "a standby holding the lease promotes", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{Holder: "db-replica", Mine: true, LastRenew: t0.Add(-100 * time.Millisecond)}
			return o
		}, steps: "promote"},

		// A writable primary without the lease.
		{name: "old primary back as a primary while another holds the lease: fence", obs: func() Observation {
			o := holderObs()
			o.Lease = LeaseView{Holder: "db-replica"}
			o.Published = Position{Node: "db-replica", Timeline: 2, LSN: 0x3100000}
			return o
		}, steps: "fence", reason: "db-replica holds the lease"},
		{name: "primary without the lease and without quorum for a TTL: fence", obs: func() Observation {
			o := holderObs()
			o.Lease = LeaseView{}
			o.Etcd.Quorum, o.Etcd.NoQuorumSince = false, t0.Add(-6*time.Second)
			return o
		}, steps: "fence"},
		{name: "primary without the lease, etcd not answering yet (failover just on, a slow link): wait", obs: func() Observation {
			o := holderObs()
			o.Lease = LeaseView{}
			o.Etcd.Quorum, o.Etcd.NoQuorumSince = false, t0.Add(-2*time.Second)
			return o
		}, steps: ""},
		{name: "failover just turned on: the primary takes the free lease", obs: func() Observation {
			o := holderObs()
			o.Lease = LeaseView{}
			o.Published = Position{}
			return o
		}, steps: "acquire"},
		{name: "agent restarted, lease lapsed, position still ours: re-acquire", obs: func() Observation {
			o := holderObs()
			o.Lease = LeaseView{}
			return o
		}, steps: "acquire"},
		{name: "primary on an old timeline, free lease, another published last: fence", obs: func() Observation {
			o := holderObs()
			o.Lease = LeaseView{}
			o.Published = Position{Node: "db-replica", Timeline: 2, LSN: 0x3100000}
			return o
		}, steps: "fence", reason: "timeline 1"},
		{name: "a fenced node that came back as a primary: fence again", obs: func() Observation {
			o := holderObs()
			o.Lease = LeaseView{}
			o.Fenced = true
			return o
		}, steps: "fence"},

		{name: "primary whose own lease still names it but is not held (agent restarted): wait", obs: func() Observation {
			o := holderObs()
			o.Lease = LeaseView{Holder: "db"}
			return o
		}, steps: ""},

		// The standby.
		{name: "standby following the holder: nothing", obs: standbyObs, steps: ""},
		{name: "fenced old primary without quorum, its stale read names itself: neither rejoin nor promote", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced, o.PG.Streaming = "db", true, false
			o.Etcd.Quorum = false
			o.Lease = LeaseView{Holder: "db"}
			return o
		}, steps: "", refusal: RefuseNoQuorum},
		{name: "fenced old primary with quorum, the key still names it: wait for etcd to free it", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced, o.PG.Streaming = "db", true, false
			o.Lease = LeaseView{Holder: "db"}
			return o
		}, steps: ""},
		{name: "standby without quorum, holder elsewhere: nothing, and says so", obs: func() Observation {
			o := standbyObs()
			o.Etcd.Quorum = false
			return o
		}, steps: "", refusal: RefuseNoQuorum, reason: "last holder read was db"},
		{name: "free lease, quorum, in reach: acquire", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.PG.Streaming = false
			o.PG.LSN = 0x3000000 - 1000
			return o
		}, steps: "acquire", reason: "within 1048576 bytes"},
		{name: "free lease, exactly at the lag limit: acquire", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.PG.LSN = 0x3000000 - 1<<20
			return o
		}, steps: "acquire"},
		{name: "free lease, one byte past the lag limit: refuse", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.PG.LSN = 0x3000000 - 1<<20 - 1
			return o
		}, refusal: RefuseLagging, reason: "1048577 bytes behind"},
		{name: "free lease, no quorum: refuse", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.Etcd.Quorum = false
			return o
		}, refusal: RefuseNoQuorum},
		{name: "free lease, paused: refuse", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.Paused = true
			return o
		}, refusal: RefusePaused},
		{name: "free lease, nobody ever held it: a standby never takes it first", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.Published = Position{}
			return o
		}, refusal: RefuseNeverHeld},
		{name: "free lease, handover to another node: refuse", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.Handover = "db-replica2"
			return o
		}, refusal: RefuseHandover},
		{name: "free lease, handover to this node: acquire", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.Handover = "db-replica"
			return o
		}, steps: "acquire"},
		{name: "free lease, this node on an older timeline: refuse", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.Published.Timeline = 2
			return o
		}, refusal: RefuseOldTimeline},
		{name: "synchronous, recorded as sync: acquire even far behind the published position", obs: func() Observation {
			o := standbyObs()
			o.Settings.Synchronous = true
			o.SyncStandbys = []string{"db-replica"}
			o.Lease = LeaseView{}
			return o
		}, steps: "acquire"},
		{name: "synchronous, not recorded as sync (fell back to async): refuse", obs: func() Observation {
			o := standbyObs()
			o.Settings.Synchronous = true
			o.Lease = LeaseView{}
			return o
		}, refusal: RefuseNotSync},
		{name: "standby whose PostgreSQL is down, free lease: refuse", obs: func() Observation {
			o := standbyObs()
			o.Lease = LeaseView{}
			o.PG = PGView{Role: RoleDown}
			return o
		}, refusal: RefusePGDown},

		{name: "fenced and stopped: start it read-only", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced = "db", true
			o.Lease = LeaseView{Holder: "db-replica"}
			o.PG = PGView{Role: RoleDown, DownSince: t0.Add(-time.Second)}
			return o
		}, steps: "start-read-only"},

		{name: "standby not streaming for RejoinAfter while a primary holds the lease: rejoin", obs: func() Observation {
			o := standbyObs()
			o.PG.Streaming, o.PG.NotStreamingSince = false, t0.Add(-10*time.Second)
			return o
		}, steps: "rejoin"},
		{name: "standby not streaming for a short while: wait", obs: func() Observation {
			o := standbyObs()
			o.PG.Streaming, o.PG.NotStreamingSince = false, t0.Add(-9*time.Second)
			return o
		}, steps: ""},
		{name: "a node down for RejoinAfter while another holds the lease: rejoin it", obs: func() Observation {
			o := standbyObs()
			o.PG = PGView{Role: RoleDown, DownSince: t0.Add(-11 * time.Second)}
			return o
		}, steps: "rejoin"},
		{name: "holder whose PostgreSQL hangs within the hung grace keeps the lease", obs: func() Observation {
			o := holderObs()
			o.PG = PGView{Role: RoleUnknown, DownSince: t0.Add(-5 * time.Second)}
			return o
		}, steps: "renew", holds: true},

		// The old primary once fenced.
		{name: "fenced old primary, holder elsewhere, auto: rejoin", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced, o.PG.Streaming = "db", true, false
			o.Lease = LeaseView{Holder: "db-replica"}
			return o
		}, steps: "rejoin"},
		{name: "fenced old primary, holder elsewhere, wait: wait fenced", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced, o.PG.Streaming = "db", true, false
			o.Settings.Rejoin = RejoinWait
			o.Lease = LeaseView{Holder: "db-replica"}
			return o
		}, steps: "wait-fenced", refusal: RefuseFenced, reason: "understudy rejoin db"},
		{name: "fenced old primary, paused: wait fenced", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced, o.PG.Streaming = "db", true, false
			o.Paused = true
			o.Lease = LeaseView{Holder: "db-replica"}
			return o
		}, steps: "wait-fenced", refusal: RefuseFenced},
		{name: "fenced old primary already streaming from the holder: nothing", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced = "db", true
			o.Lease = LeaseView{Holder: "db-replica"}
			return o
		}, steps: ""},
		{name: "fenced old primary, lease free, nobody took over, its own position: acquire", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced, o.PG.Streaming = "db", true, false
			o.FencedAt = t0.Add(-10 * time.Second)
			o.Lease = LeaseView{}
			o.Published.Node = "db"
			return o
		}, steps: "acquire"},
		{name: "just fenced, lease free, its own position: the standby goes first", obs: func() Observation {
			o := standbyObs()
			o.Node, o.Fenced, o.PG.Streaming = "db", true, false
			o.FencedAt = t0.Add(-2 * time.Second)
			o.Lease = LeaseView{}
			o.Published.Node = "db"
			return o
		}, refusal: RefuseFenced, reason: "the standby goes first"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := c.obs()
			d := Decide(o)
			if got := kinds(d); got != c.steps {
				t.Fatalf("steps %q, want %q (%+v)", got, c.steps, d)
			}
			if c.refusal == "" && d.Refusal != nil {
				t.Fatalf("unexpected refusal %+v", d.Refusal)
			}
			if c.refusal != "" && (d.Refusal == nil || d.Refusal.Kind != c.refusal) {
				t.Fatalf("refusal %+v, want %s", d.Refusal, c.refusal)
			}
			if d.Holds != c.holds {
				t.Fatalf("holds %v, want %v", d.Holds, c.holds)
			}
			if c.reason != "" {
				text := ""
				if len(d.Steps) > 0 {
					text = d.Steps[0].Reason
				}
				if d.Refusal != nil {
					text += " | " + d.Refusal.Message
				}
				if !strings.Contains(text, c.reason) {
					t.Fatalf("reason %q lacks %q", text, c.reason)
				}
			}
			// Whatever else it decides: a node promotes only while it holds
			// the lease, and only the holder's decision may hold.
			for _, s := range d.Steps {
				if s.Kind == StepPromote && !o.Lease.Mine {
					t.Fatal("promote without the lease")
				}
			}
			if d.Holds && !o.Lease.HoldsAt(o.Settings, o.Now) {
				t.Fatal("holds without a valid lease")
			}
			if d.Holds && !d.Watchdog.Before(o.Lease.ValidUntil(o.Settings)) {
				t.Fatalf("watchdog %s not before the lease's expiry %s", d.Watchdog, o.Lease.ValidUntil(o.Settings))
			}
		})
	}
}

func TestRenewPublishesPosition(t *testing.T) {
	d := Decide(holderObs())
	p := d.Steps[0].Publish
	if p == nil || p.Node != "db" || p.Timeline != 1 || p.LSN != pgops.LSN(0x3000000) {
		t.Fatalf("published %+v", p)
	}
	if want := t0.Add(5*time.Second - 500*time.Millisecond); !d.Watchdog.Equal(want) {
		t.Fatalf("watchdog %s, want %s (last renewal + TTL - watchdog margin)", d.Watchdog, want)
	}
}

func TestSyncSteps(t *testing.T) {
	sync := func(mod func(*Observation)) Observation {
		o := holderObs()
		o.Settings.Synchronous = true
		o.Lease.LastRenew = t0 // no renew due
		mod(&o)
		return o
	}
	want := `ANY 1 ("db-replica")`
	cases := []struct {
		name  string
		obs   Observation
		steps string
		names string
		sync  []string
	}{
		{"standby streams, not yet waited for: set the names first", sync(func(o *Observation) {}), "set-sync-names", want, nil},
		{"commits wait for it: record it in etcd", sync(func(o *Observation) {
			o.PG.SyncNames = want
			o.PG.Replicas[0].Sync = true
		}), "record-sync", "", []string{"db-replica"}},
		{"steady synchronous state: nothing", sync(func(o *Observation) {
			o.PG.SyncNames = want
			o.PG.Replicas[0].Sync = true
			o.SyncStandbys = []string{"db-replica"}
		}), "", "", nil},
		{"standby away: unrecord in etcd, then stop waiting", sync(func(o *Observation) {
			o.PG.SyncNames = want
			o.PG.Replicas = nil
			o.SyncStandbys = []string{"db-replica"}
		}), "record-sync,set-sync-names", "", []string{}},
		{"standby streams but not yet in sync: not recorded", sync(func(o *Observation) {
			o.PG.SyncNames = want
		}), "", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.obs)
			if got := kinds(d); got != c.steps {
				t.Fatalf("steps %q, want %q", got, c.steps)
			}
			for _, s := range d.Steps {
				if s.Kind == StepSetSyncNames && s.SyncNames != c.names {
					t.Fatalf("names %q, want %q", s.SyncNames, c.names)
				}
				if s.Kind == StepRecordSync && strings.Join(s.Sync, ",") != strings.Join(c.sync, ",") {
					t.Fatalf("record %v, want %v", s.Sync, c.sync)
				}
			}
		})
	}
}

func TestSettingsValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Settings){
		func(s *Settings) { s.TTL = 1500 * time.Millisecond },
		func(s *Settings) { s.RenewEvery = 3 * time.Second },
		func(s *Settings) { s.WatchdogMargin = s.FenceMargin },
		func(s *Settings) { s.FenceMargin = 4 * time.Second },
		func(s *Settings) { s.Rejoin = "sometimes" },
	}
	for i, f := range bad {
		s := Defaults()
		f(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, s)
		}
	}
}
