// Command appwriter runs pgxwriter clients in a container, as an app
// would, and prints every attempt as one JSON line on stdout; it stops on
// SIGTERM. The real-Docker test runs it on the app server's Kamal network.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/internal/pgxwriter"
)

func main() {
	conn := flag.String("conn", "", "libpq connection string (pgx reads the password from $PGPASSWORD)")
	clients := flag.Int("clients", 3, "writers")
	every := flag.Duration("every", 50*time.Millisecond, "one INSERT per writer this often")
	timeout := flag.Duration("timeout", 5*time.Second, "each attempt's deadline")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var ws []*pgxwriter.Writer
	for i := 0; i < *clients; i++ {
		ws = append(ws, pgxwriter.Start(ctx, fmt.Sprintf("pgx-%d", i), *conn, *every, *timeout))
	}
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	seen := make([]int, len(ws))
	flush := func() {
		mu.Lock()
		defer mu.Unlock()
		for i, w := range ws {
			log := w.Log()
			for _, a := range log[seen[i]:] {
				enc.Encode(a)
			}
			seen[i] = len(log)
		}
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, w := range ws {
				w.Stop()
			}
			flush()
			return
		case <-t.C:
			flush()
		}
	}
}
