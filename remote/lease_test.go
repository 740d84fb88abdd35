package remote_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/remote"
)

func failoverModel() *pgconf.Failover {
	return &pgconf.Failover{Token: "shop-db", Witness: "db-witness", Members: []pgconf.FailoverMember{
		{Name: "db", Addr: "10.0.0.2"},
		{Name: "db-replica", Addr: "10.0.0.3"},
		{Name: "db-witness", Addr: "10.0.0.4", ClientPort: 12379},
	}}
}

// Each member's client address is dialed through that member's own
// server: a node's through the node's host, the witness's through the
// witness accessory's host; never one server for all (it could be the
// dead one).
func TestMemberRoutes(t *testing.T) {
	got, err := remote.MemberRoutes(failoverModel(), map[string]string{"db": "db.example.com", "db-replica": "203.0.113.7"}, "app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]remote.MemberRoute{
		"10.0.0.2:2379":  {Member: "db", Host: "db.example.com"},
		"10.0.0.3:2379":  {Member: "db-replica", Host: "203.0.113.7"},
		"10.0.0.4:12379": {Member: "db-witness", Host: "app.example.com"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("routes:\n got %v\nwant %v", got, want)
	}

	for _, tc := range []struct {
		name    string
		hosts   map[string]string
		witness string
		want    string
	}{
		{"no witness host", map[string]string{"db": "a", "db-replica": "b"}, "", "the witness accessory db-witness has no host"},
		{"a node without host", map[string]string{"db": "a"}, "c", "node db-replica's accessory has no host"},
	} {
		_, err := remote.MemberRoutes(failoverModel(), tc.hosts, tc.witness)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "understudy init --failover") {
			t.Errorf("%s: %v, want an error saying %q and what to do", tc.name, err, tc.want)
		}
	}
	if _, err := remote.MemberRoutes(nil, nil, ""); err == nil {
		t.Error("no failover: no error")
	}
}

// A FAILOVER_SECRET that does not resolve, or is not one, makes every
// call say what is wrong and what to do, and never carries the value.
func TestLeaseWithoutSecret(t *testing.T) {
	routes, err := remote.MemberRoutes(failoverModel(), map[string]string{"db": "a", "db-replica": "b"}, "c")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	unresolved := &remote.Lease{Failover: failoverModel(), Routes: routes, SecretErr: errors.New("secret FAILOVER_SECRET is not defined in .kamal/secrets")}
	_, err = unresolved.ReadLease(ctx)
	if err == nil || !strings.Contains(err.Error(), "understudy failover secret") || !strings.Contains(err.Error(), "POSTGRES_PASSWORD") || !strings.Contains(err.Error(), "not defined") {
		t.Errorf("unresolved secret: %v", err)
	}
	const bad = "hunter2-not-a-secret"
	wrong := &remote.Lease{Failover: failoverModel(), Routes: routes, Secret: bad}
	for name, call := range map[string]func() error{
		"ReadLease": func() error { _, err := wrong.ReadLease(ctx); return err },
		"SetPaused": func() error { return wrong.SetPaused(ctx, true) },
		"HandOver":  func() error { return wrong.HandOver(ctx, "db", "db-replica") },
		"LeaseFor":  func() error { return wrong.LeaseFor(ctx, "db-replica", 1, 0) },
	} {
		err := call()
		if err == nil || !strings.Contains(err.Error(), "understudy failover secret") || strings.Contains(err.Error(), bad) {
			t.Errorf("%s with a malformed secret: %v", name, err)
		}
	}
	noRoutes := &remote.Lease{Failover: failoverModel(), Err: errors.New("etcd member db has no server")}
	if err := noRoutes.SetPaused(ctx, true); err == nil || !strings.Contains(err.Error(), "no server") {
		t.Errorf("no routes: %v", err)
	}
}
