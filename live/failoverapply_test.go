package live

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/pgops"
)

func kindsAt(steps []Step) string {
	var k []string
	for _, s := range steps {
		k = append(k, string(s.Kind)+"@"+s.Node)
	}
	return strings.Join(k, " ")
}

// apply with failover on: a restart of the primary's PostgreSQL is
// wrapped in a pause (resume, then wait for its agent to promote it); a
// restart of the primary's agent comes after a switchover to the standby,
// after the other agent's steps; nothing changes without failover, without
// the lease read or held by the primary, or when neither restarts; a pause
// someone else made refuses.
func TestDecideFailoverApply(t *testing.T) {
	agents := map[string]string{"db-agent": "db", "db-replica-agent": "db-replica"}
	held := &LeaseReading{Holder: "db"}
	facts := func(l *LeaseReading) FailoverApplyFacts {
		return FailoverApplyFacts{Lease: l, Primary: "db", Standby: "db-replica", AgentNode: agents}
	}
	restartPrim := Step{Kind: StepRestart, Node: "db", Primary: true, Consent: true}
	plan := []Step{
		{Kind: StepReload, Node: "db-replica"},
		{Kind: StepRestart, Node: "db-replica", Consent: true},
		restartPrim,
		{Kind: StepEnsureRole, Node: "db"},
		{Kind: StepCheckPrimHBA, Node: "db"},
		{Kind: StepRoutingReboot, Node: "db-witness"},
		{Kind: StepRoutingBinary, Node: "db-agent"},
		{Kind: StepRoutingReboot, Node: "db-agent"},
		{Kind: StepRoutingBinary, Node: "db-replica-agent"},
		{Kind: StepRoutingReboot, Node: "db-replica-agent"},
		{Kind: StepRoutingReboot, Node: "db-router"},
	}
	got, err := DecideFailoverApply(plan, facts(held))
	if err != nil {
		t.Fatal(err)
	}
	want := "reload@db-replica restart@db-replica failover-pause@db restart@db failover-resume@db await-promoted@db ensure-role@db check-hba@db " +
		"routing-reboot@db-witness routing-binary@db-agent routing-binary@db-replica-agent routing-reboot@db-replica-agent " +
		"lease-switchover@db-replica routing-reboot@db-agent routing-reboot@db-router"
	if k := kindsAt(got); k != want {
		t.Errorf("steps\n got %s\nwant %s", k, want)
	}
	for _, s := range got {
		if s.Kind == StepLeaseSwitchover && (!s.Consent || s.Upstream != "db" || !strings.Contains(s.Effect, "db-replica stays the primary") || !strings.Contains(s.Action, "watchdog")) {
			t.Errorf("the switchover step says too little: %+v", s)
		}
		if s.Kind == StepRoutingReboot && s.Node == "db-agent" && strings.Contains(s.Effect, "fences") {
			t.Errorf("after the switchover the old primary's agent restart fences nothing: %+v", s)
		}
	}
	// The input is not changed.
	if plan[7].Kind != StepRoutingReboot || plan[7].Node != "db-agent" {
		t.Errorf("the plan given was changed: %+v", plan[7])
	}

	// Only the primary's PostgreSQL, or only its agent.
	only, _ := DecideFailoverApply([]Step{restartPrim, {Kind: StepCheckPrimHBA, Node: "db"}}, facts(held))
	if k := kindsAt(only); k != "failover-pause@db restart@db failover-resume@db await-promoted@db check-hba@db" {
		t.Errorf("primary restart only: %s", k)
	}
	only, _ = DecideFailoverApply([]Step{{Kind: StepRoutingReboot, Node: "db-agent"}, {Kind: StepRoutingBoot, Node: "db-router"}}, facts(held))
	if k := kindsAt(only); k != "lease-switchover@db-replica routing-reboot@db-agent routing-boot@db-router" {
		t.Errorf("primary agent only: %s", k)
	}

	// Unchanged: failover off; the lease unread, unreadable or held by
	// another; nothing of the primary restarts (the standby's agent and
	// PostgreSQL restart freely).
	standbyOnly := []Step{{Kind: StepRestart, Node: "db-replica"}, {Kind: StepRoutingReboot, Node: "db-replica-agent"}}
	for name, c := range map[string]struct {
		steps []Step
		f     FailoverApplyFacts
	}{
		"failover off":          {plan, FailoverApplyFacts{Primary: "db", Standby: "db-replica", AgentNode: agents}},
		"lease unreadable":      {plan, facts(&LeaseReading{Error: "no quorum"})},
		"nobody holds it":       {plan, facts(&LeaseReading{})},
		"standby restarts only": {standbyOnly, facts(held)},
		"no primary":            {plan, FailoverApplyFacts{Lease: held, AgentNode: agents}},
	} {
		got, err := DecideFailoverApply(c.steps, c.f)
		if err != nil || kindsAt(got) != kindsAt(c.steps) {
			t.Errorf("%s: %s (%v), want the steps unchanged", name, kindsAt(got), err)
		}
	}
	if FailoverGuardNeeded(standbyOnly, facts(nil)) || !FailoverGuardNeeded(plan, facts(nil)) {
		t.Error("FailoverGuardNeeded: the lease is read exactly when the primary or its agent restarts")
	}

	// Paused by someone: refused, with what to do.
	paused := &LeaseReading{Holder: "db", Paused: true}
	if _, err := DecideFailoverApply([]Step{restartPrim}, facts(paused)); err == nil || !strings.Contains(err.Error(), "failover resume") || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("primary restart while paused: %v", err)
	}
	if _, err := DecideFailoverApply([]Step{{Kind: StepRoutingReboot, Node: "db-agent"}}, facts(paused)); err == nil || !strings.Contains(err.Error(), "watchdog would fence db") {
		t.Errorf("primary agent restart while paused: %v", err)
	}
	// The standby's restarts go on while paused.
	if got, err := DecideFailoverApply(standbyOnly, facts(paused)); err != nil || kindsAt(got) != kindsAt(standbyOnly) {
		t.Errorf("standby restarts while paused: %s %v", kindsAt(got), err)
	}
}

// fakeLease records pauses and resumes; resumeErr fails the resume.
type fakeLease struct {
	calls     []bool
	resumeErr error
}

func (f *fakeLease) ReadLease(context.Context) (LeaseReading, error) { return LeaseReading{}, nil }
func (f *fakeLease) HandOver(context.Context, string, string) error  { return nil }
func (f *fakeLease) LeaseFor(context.Context, string, pgops.Timeline, pgops.LSN) error {
	return nil
}
func (f *fakeLease) SetPaused(_ context.Context, p bool) error {
	f.calls = append(f.calls, p)
	if !p {
		return f.resumeErr
	}
	return nil
}

// The executor: a failed step after the pause resumes failover (and says
// so when it cannot); a declined restart pauses nothing.
func TestApplyResumesFailoverAfterAFailure(t *testing.T) {
	plan, err := DecideFailoverApply([]Step{{Kind: StepRestart, Node: "db", Primary: true, Consent: true, Settings: []string{"max_connections"}}},
		FailoverApplyFacts{Lease: &LeaseReading{Holder: "db"}, Primary: "db", Standby: "db-replica"})
	if err != nil {
		t.Fatal(err)
	}
	run := func(l *fakeLease, yes bool) error {
		_, err := ExecuteApply(context.Background(), Target{Cluster: decideCluster, Control: &recording{}, Lease: l}, plan,
			ApplyOptions{Yes: yes, Timeout: 300 * time.Millisecond})
		return err
	}
	l := &fakeLease{}
	err = run(l, true)
	if err == nil || !strings.Contains(err.Error(), "did not accept connections") || fmt.Sprint(l.calls) != "[true false]" {
		t.Errorf("a restart that fails: %v; pause calls %v, want [true false]", err, l.calls)
	}
	l = &fakeLease{resumeErr: errors.New("etcd: no quorum")}
	if err := run(l, true); err == nil || !strings.Contains(err.Error(), "could not be resumed") || !strings.Contains(err.Error(), "understudy failover resume") {
		t.Errorf("a resume that fails: %v", err)
	}
	l = &fakeLease{}
	if err := run(l, false); !errors.Is(err, ErrRestartDeclined) || len(l.calls) != 0 {
		t.Errorf("declined: %v, pause calls %v", err, l.calls)
	}
}

// Failover turned on over a running cluster (the witness boots, no lease
// can be read yet): PostgreSQL is not restarted (a primary restarted
// read-only now would wait for a lease nobody may take first: its restart
// is left to the next apply); the standby's agent restarts before the
// primary's, whose restart asks first and says that writes pause and why;
// then apply waits for the primary's agent to hold the lease.
func TestDecideFailoverTurnOn(t *testing.T) {
	f := FailoverApplyFacts{Lease: &LeaseReading{Error: "no etcd member answers"}, Primary: "db", Standby: "db-replica",
		AgentNode: map[string]string{"db-agent": "db", "db-replica-agent": "db-replica"}, Witness: "db-witness"}
	plan := []Step{
		{Kind: StepRefreshBoot, Node: "db"},
		{Kind: StepRefreshBoot, Node: "db-replica"},
		{Kind: StepRoutingBinary, Node: "db-witness"},
		{Kind: StepRoutingBoot, Node: "db-witness"},
		{Kind: StepRoutingReboot, Node: "db-agent"},
		{Kind: StepRoutingReboot, Node: "db-replica-agent"},
		{Kind: StepRoutingReboot, Node: "db-router"},
	}
	got, err := DecideFailoverApply(plan, f)
	if err != nil {
		t.Fatal(err)
	}
	want := "refresh-boot@db refresh-boot@db-replica routing-binary@db-witness routing-boot@db-witness routing-reboot@db-replica-agent " +
		"routing-reboot@db-agent await-lease@db routing-reboot@db-router"
	if k := kindsAt(got); k != want {
		t.Errorf("steps\n got %s\nwant %s", k, want)
	}
	for _, s := range got {
		if s.Kind == StepRoutingReboot && s.Node == "db-replica-agent" && (s.Consent || strings.Contains(s.Effect, "fences")) {
			t.Errorf("the standby agent's restart fences nothing and interrupts nothing: %+v", s)
		}
		if s.Kind == StepRoutingReboot && s.Node == "db-agent" && (!s.Consent || !strings.Contains(s.Effect, "writes through the router pause") || !strings.Contains(s.Effect, "holds the lease")) {
			t.Errorf("the primary agent's restart says too little: %+v", s)
		}
	}
	if plan[4].Node != "db-agent" || plan[4].Consent {
		t.Errorf("the plan given was changed: %+v", plan[4])
	}

	// A restart of the primary planned too: left to the next apply.
	withRestart := append([]Step{{Kind: StepRestart, Node: "db", Primary: true, Consent: true, Action: "restart for: max_connections → 200"}}, plan...)
	got, err = DecideFailoverApply(withRestart, f)
	if err != nil || kindsAt(got) != want {
		t.Fatalf("with a restart of the primary: %s (%v)", kindsAt(got), err)
	}
	if a := got[6].Action; !strings.Contains(a, "max_connections") || !strings.Contains(a, "next `understudy apply`") {
		t.Errorf("the deferred restart is not said: %q", a)
	}

	// Not turning on (the witness runs already, the lease unreadable): as before.
	running := slices.DeleteFunc(slices.Clone(plan), func(s Step) bool { return s.Node == "db-witness" })
	if got, _ := DecideFailoverApply(running, f); kindsAt(got) != kindsAt(running) {
		t.Errorf("witness running, lease unreadable: %s", kindsAt(got))
	}
}
