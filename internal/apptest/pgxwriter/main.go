// Command pgxwriter is the pgx app writer of understudy's tests: a Go app
// writing through pgxpool, built statically at test time.
//
// Configuration: DATABASE_URL (several hosts allowed, with
// target_session_attrs and connect_timeout), APPTEST_QUERY_TIMEOUT_MS (a
// per-write context deadline, as a Go app sets per request; 0 or unset:
// none). APPTEST_CLIENT names the writer in the log, APPTEST_INTERVAL_MS is
// the cadence (default 50).
//
// Reconnect policy, pgxpool's own: a connection that broke is destroyed
// and the next Acquire opens a new one. One JSON line per attempt goes to
// stdout. SIGTERM ends the loop after the write in flight.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

type attempt struct {
	Client string  `json:"client"`
	Seq    int64   `json:"seq"`
	OK     bool    `json:"ok"`
	Node   *string `json:"node"`
	Start  int64   `json:"start"`
	End    int64   `json:"end"`
	Error  string  `json:"error"`
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgx writer: %s=%q is not a number\n", name, v)
			os.Exit(2)
		}
		return n
	}
	return def
}

func main() {
	client := os.Getenv("APPTEST_CLIENT")
	if client == "" {
		client = "pgx"
	}
	interval := time.Duration(envInt("APPTEST_INTERVAL_MS", 50)) * time.Millisecond
	queryTimeout := time.Duration(envInt("APPTEST_QUERY_TIMEOUT_MS", 0)) * time.Millisecond
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		fmt.Fprintln(os.Stderr, "pgx writer: DATABASE_URL is not set")
		os.Exit(2)
	}
	var stop atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; stop.Store(true) }()

	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgx writer: %v\n", err)
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	next := time.Now()
	for seq := int64(1); !stop.Load(); seq++ {
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		if stop.Load() {
			break
		}
		a := attempt{Client: client, Seq: seq, Start: time.Now().UnixMilli()}
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if queryTimeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, queryTimeout)
		}
		var node string
		err := pool.QueryRow(ctx, "INSERT INTO writes (client, seq) VALUES ($1, $2) RETURNING node", client, seq).Scan(&node)
		cancel()
		a.End = time.Now().UnixMilli()
		if err != nil {
			a.Error = strings.Join(strings.Fields(err.Error()), " ")
		} else {
			a.OK, a.Node = true, &node
		}
		enc.Encode(a)
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
	}
	// Closing the pool could wait on a connection that hangs: just exit.
	os.Exit(0)
}
