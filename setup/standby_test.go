package setup

import (
	"reflect"
	"strings"
	"testing"
)

// A later init (to add failover, say) finds the standby where an earlier
// one put it: the same changes as with the flags given again; with no
// earlier init the flags are still required.
func TestLaterInitFindsTheStandby(t *testing.T) {
	if _, err := Build(app("postgres:16", "10.0.0.2:5432:5432", "postgres"), Options{}); err == nil || !strings.Contains(err.Error(), "--replica-host and --replica-ip are required") {
		t.Fatalf("a first init without the standby's flags: %v", err)
	}
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	p, err := Build(src, replica)
	if err != nil {
		t.Fatal(err)
	}
	write(src, p)
	if q, err := Build(src, Options{}); err != nil || len(q.Changes) != 0 {
		t.Fatalf("init again without flags: %v, %d changes", err, len(q.Changes))
	}
	copied := mapSource{}
	for k, v := range src {
		copied[k] = v
	}
	withFlags, err := Build(copied, withFailover(replica, witness))
	if err != nil {
		t.Fatal(err)
	}
	without, err := Build(src, withFailover(Options{}, witness))
	if err != nil {
		t.Fatalf("init --failover without the standby's flags: %v", err)
	}
	if len(without.Changes) == 0 || !reflect.DeepEqual(without.Changes, withFlags.Changes) {
		t.Errorf("init --failover without the standby's flags made other changes than with them")
	}
	// A standby on another server than the flags say is still the flags'.
	other := Options{ReplicaHost: "192.0.2.9", ReplicaIP: "10.0.0.9"}
	if q, err := Build(src, other); err != nil || len(q.Changes) == 0 {
		t.Errorf("init with a new standby server: %v, %d changes", err, len(q.Changes))
	}
}
