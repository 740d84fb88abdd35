// Package ledger is a write load that remembers every commit the server
// acknowledged, so tests and benches can prove none was lost across a role
// change and measure how long writes were refused.
package ledger

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Table is created by Prepare and written by Run.
const Table = "understudy_ledger"

// Load is a running write load.
type Load struct {
	mu    sync.Mutex
	acked []int64     // ids whose COMMIT the server acknowledged
	times []time.Time // when, in the same order
	errs  int
	wg    sync.WaitGroup
	stop  context.CancelFunc
}

// Prepare creates the ledger table on the primary.
func Prepare(ctx context.Context, conn string) error {
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+Table+` (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`)
	return err
}

// Start runs workers that each insert rows with their own ids as fast as
// the primary takes them. conn should name every node with
// target_session_attrs=read-write, as an app's DATABASE_URL does, so the
// workers find the new primary after a role change.
func Start(ctx context.Context, conn string, workers int) *Load {
	ctx, cancel := context.WithCancel(ctx)
	l := &Load{stop: cancel}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go l.worker(ctx, conn, int64(w), int64(workers))
	}
	return l
}

func (l *Load) worker(ctx context.Context, conn string, id, step int64) {
	defer l.wg.Done()
	var c *pgx.Conn
	defer func() {
		if c != nil {
			c.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var err error
			c, err = pgx.Connect(cctx, conn)
			cancel()
			if err != nil {
				c = nil
				l.fail()
				// Like a pool with a short backoff: hammering a node that is
				// being promoted with connection attempts (each one a fork)
				// would slow the promotion down.
				time.Sleep(20 * time.Millisecond)
				continue
			}
		}
		_, err := c.Exec(ctx, `INSERT INTO `+Table+` (id) VALUES ($1)`, id)
		if err != nil {
			c.Close(context.Background())
			c = nil
			l.fail()
			continue
		}
		now := time.Now()
		l.mu.Lock()
		l.acked = append(l.acked, id)
		l.times = append(l.times, now)
		l.mu.Unlock()
		id += step
	}
}

func (l *Load) fail() {
	l.mu.Lock()
	l.errs++
	l.mu.Unlock()
}

// Stop ends the load and waits for the workers.
func (l *Load) Stop() {
	l.stop()
	l.wg.Wait()
}

// Acked returns how many commits were acknowledged and how many attempts failed.
func (l *Load) Acked() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked), l.errs
}

// LongestGap is the longest time between two acknowledged commits (by any
// worker) that overlaps [from, to]: the write outage of a role change
// that ran in that window.
func (l *Load) LongestGap(from, to time.Time) time.Duration {
	l.mu.Lock()
	ts := append([]time.Time(nil), l.times...)
	l.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	var worst time.Duration
	for i := 1; i < len(ts); i++ {
		if ts[i].Before(from) || ts[i-1].After(to) {
			continue
		}
		worst = max(worst, ts[i].Sub(ts[i-1]))
	}
	return worst
}

// Lost counts acknowledged ids that the primary behind conn does not have.
func (l *Load) Lost(ctx context.Context, conn string) (int, error) {
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	l.mu.Lock()
	ids := append([]int64(nil), l.acked...)
	l.mu.Unlock()
	var missing int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM unnest($1::bigint[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM `+Table+` t WHERE t.id = a.id)`, ids).Scan(&missing); err != nil {
		return 0, fmt.Errorf("counting lost commits: %w", err)
	}
	return missing, nil
}

// AckedBefore is every id whose commit was acknowledged before t.
func (l *Load) AckedBefore(t time.Time) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []int64
	for i, at := range l.times {
		if at.Before(t) {
			ids = append(ids, l.acked[i])
		}
	}
	return ids
}

// Missing counts which of ids the server behind conn does not have.
func Missing(ctx context.Context, conn string, ids []int64) (int, error) {
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var missing int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM unnest($1::bigint[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM `+Table+` t WHERE t.id = a.id)`, ids).Scan(&missing); err != nil {
		return 0, fmt.Errorf("counting missing commits: %w", err)
	}
	return missing, nil
}

// Acks is every acknowledged id with its acknowledgement time, in order.
func (l *Load) Acks() ([]int64, []time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.acked...), append([]time.Time(nil), l.times...)
}

// Present reports which of ids the server behind conn has.
func Present(ctx context.Context, conn string, ids []int64) (map[int64]bool, error) {
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT t.id FROM `+Table+` t WHERE t.id = ANY($1::bigint[])`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	have := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		have[id] = true
	}
	return have, rows.Err()
}
