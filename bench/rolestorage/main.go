// Command rolestorage is the bench for role changes while the backup
// storage hangs (issue 19): on a lab with backups, it kills the primary and
// times `promote` of the standby, alternately with the S3 server answering
// and frozen (SIGSTOP), then rejoins the old primary; and it times a
// switchover each way under both. It prints every time and the medians.
// Run it with scripts/bench-role-storage.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/bench/benchmain"
	"github.com/understudy-dev/understudy/lab"
	"github.com/understudy-dev/understudy/live"
)

func main() {
	rounds := flag.Int("rounds", 5, "promotes (and switchovers) per condition")
	flag.Parse()
	benchmain.Run(func(ctx context.Context) error { return run(ctx, *rounds) })
}

func run(ctx context.Context, rounds int) error {
	l, done, err := benchmain.Lab(ctx, "")
	if err != nil {
		return err
	}
	defer done()
	if _, err := live.Apply(ctx, l.Target(), live.ApplyOptions{Yes: true}); err != nil {
		return err
	}
	if _, err := lab.BuildVersityGW(ctx, os.Stderr); err != nil {
		return err
	}
	store, err := l.BackupUp(ctx)
	if err != nil {
		return err
	}
	key, err := l.BackupKey()
	if err != nil {
		return err
	}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() { backup.NewAgent(l.AgentConfig(io.Discard), store, key).Run(agentCtx); close(agentDone) }()
	defer func() { stopAgent(); <-agentDone }()
	storage := l.ServicePID("storage")
	if storage == 0 {
		return fmt.Errorf("the lab's storage server is not running")
	}
	defer syscall.Kill(storage, syscall.SIGCONT)
	fmt.Printf("# understudy role changes with the backup storage answering and frozen: PostgreSQL %d, %d rounds each, %s\n",
		l.Cluster.Major, rounds, time.Now().UTC().Format(time.RFC3339))

	times := map[string][]float64{}
	for i := 0; i < 2*rounds; i++ {
		frozen := i%2 == 1
		cond := "storage answering"
		if frozen {
			cond = "storage frozen"
			if err := syscall.Kill(storage, syscall.SIGSTOP); err != nil {
				return err
			}
		}
		st, err := live.GatherNodes(ctx, l.Target())
		if err != nil {
			return err
		}
		prim, stby := st.Primary, ""
		for _, n := range st.Nodes {
			if n.Name != prim {
				stby = n.Name
			}
		}
		if prim == "" {
			return fmt.Errorf("no single primary before round %d", i+1)
		}
		start := time.Now()
		if _, err := live.Switchover(ctx, l.Target(), stby, live.RoleOptions{}); err != nil {
			return fmt.Errorf("switchover (%s): %w", cond, err)
		}
		sw := time.Since(start)
		if err := l.Kill(stby); err != nil {
			return err
		}
		start = time.Now()
		if _, err := live.Promote(ctx, l.Target(), prim, live.RoleOptions{}); err != nil {
			return fmt.Errorf("promote (%s): %w", cond, err)
		}
		pr := time.Since(start)
		fmt.Printf("%-18s switchover %s → %s %6.0f ms   promote %s after %s was killed %6.0f ms\n", cond, prim, stby, ms(sw), prim, stby, ms(pr))
		times[cond+" switchover"] = append(times[cond+" switchover"], ms(sw))
		times[cond+" promote"] = append(times[cond+" promote"], ms(pr))
		if frozen {
			syscall.Kill(storage, syscall.SIGCONT)
		}
		if _, err := live.Rejoin(ctx, l.Target(), stby, live.RoleOptions{}); err != nil {
			return fmt.Errorf("rejoin: %w", err)
		}
	}
	fmt.Println()
	for _, k := range []string{"storage answering switchover", "storage frozen switchover", "storage answering promote", "storage frozen promote"} {
		v := times[k]
		fmt.Printf("%-30s median %6.0f ms   max %6.0f ms   (n=%d)\n", k, benchmain.Pct(v, 50), benchmain.Pct(v, 100), len(v))
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
