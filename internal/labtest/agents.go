package labtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/agent"
	"github.com/understudy-dev/understudy/lab"
)

// NodeAgents runs every node's agent in the test's own process (a test
// binary cannot be started as `understudy agent`), logging to the lab's
// agent-<node>.log, until the test ends. tune adjusts each config.
func NodeAgents(t testing.TB, l *lab.Lab, tune func(*agent.Config)) map[string]*agent.Agent {
	t.Helper()
	if l.NetNS != nil {
		t.Fatal("NodeAgents runs agents in this process, which cannot bind addresses inside a netns lab's namespaces: use a loopback lab")
	}
	ctx, cancel := context.WithCancel(context.Background())
	agents := map[string]*agent.Agent{}
	var done []chan struct{}
	for _, n := range l.Cluster.Nodes {
		logf, err := os.OpenFile(l.ServiceLog("agent-"+n.Name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := l.NodeAgentConfig(n.Name, logf)
		if err != nil {
			t.Fatal(err)
		}
		if tune != nil {
			tune(&cfg)
		}
		ln, err := agent.Listen(n.Agent())
		if err != nil {
			t.Fatal(err)
		}
		a := agent.New(cfg)
		agents[n.Name] = a
		ch := make(chan struct{})
		done = append(done, ch)
		go func() { a.Run(ctx, ln); logf.Close(); close(ch) }()
	}
	t.Cleanup(func() {
		cancel()
		for _, ch := range done {
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				t.Errorf("a node agent did not stop within 10 s")
			}
		}
	})
	return agents
}

// Router starts the lab's HAProxy (skipping the test when haproxy is not
// installed); lab down stops it.
func Router(t testing.TB, l *lab.Lab) {
	t.Helper()
	if _, err := lab.FindHAProxy(); err != nil {
		t.Skip(err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.StartRouter(ctx); err != nil {
		t.Fatal(err)
	}
}
