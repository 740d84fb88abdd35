// Package benchmain is what the bench commands share: signal handling that
// still stops the servers, and a two-node lab in a temporary directory.
package benchmain

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/lab"
)

// Run runs a bench. Interrupted, or piped into head, it still returns
// through run's deferred clean-up; an error exits 1.
func Run(run func(ctx context.Context) error) {
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Lab creates a lab (db, db-replica; nothing running) in a temporary
// directory; done stops it and removes the directory.
func Lab(ctx context.Context, walCap string) (l *lab.Lab, done func(), err error) {
	root, err := os.MkdirTemp("", "understudy-bench-")
	if err != nil {
		return nil, nil, err
	}
	os.Chmod(root, 0o755)
	ports, err := netutil.FreePorts(2)
	if err == nil {
		l, err = lab.Create(ctx, filepath.Join(root, "lab"), lab.Config{Names: []string{"db", "db-replica"}, Ports: ports,
			Password: fmt.Sprint("bench-", time.Now().UnixNano()), WALCap: walCap})
	}
	if err != nil {
		os.RemoveAll(root)
		return nil, nil, err
	}
	return l, func() { l.Down(context.WithoutCancel(ctx)); os.RemoveAll(root) }, nil
}

// Pct is the nearest-rank percentile of values (sorted here).
func Pct(values []float64, p float64) float64 {
	if len(values) == 0 {
		return 0
	}
	s := append([]float64(nil), values...)
	sort.Float64s(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
