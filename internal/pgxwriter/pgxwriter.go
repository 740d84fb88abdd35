// Package pgxwriter is an app writer in Go with pgx, as an app would run
// it: one connection, an INSERT every few tens of milliseconds, a new
// connection after any error. It remembers every attempt (which node took
// each acknowledged row, when), so tests, benches and the demo can prove
// that no acknowledged row was lost, that no node acknowledged writes
// while another was the primary, and how long the app saw writes pause.
package pgxwriter

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Table is what the writers insert into.
const Table = "understudy_writes"

// CreateSQL makes the table (on the primary, before the writers start).
const CreateSQL = `CREATE TABLE IF NOT EXISTS ` + Table + ` (client text NOT NULL, seq bigint NOT NULL,
	node text NOT NULL DEFAULT host(inet_server_addr()) || ':' || inet_server_port()::text,
	at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (client, seq))`

// Attempt is one write.
type Attempt struct {
	Client     string
	Seq        int64
	OK         bool
	Node       string // the server that acknowledged it (address:port)
	Start, End time.Time
	Err        string
}

// Writer is one running client.
type Writer struct {
	Name string
	mu   sync.Mutex
	log  []Attempt
	done chan struct{}
	stop context.CancelFunc
}

// Start runs a writer until Stop: an INSERT every `every` over conn (a
// libpq connection string), each attempt under a deadline of timeout.
func Start(ctx context.Context, name, conn string, every, timeout time.Duration) *Writer {
	ctx, cancel := context.WithCancel(ctx)
	w := &Writer{Name: name, done: make(chan struct{}), stop: cancel}
	go w.run(ctx, conn, every, timeout)
	return w
}

func (w *Writer) run(ctx context.Context, conn string, every, timeout time.Duration) {
	defer close(w.done)
	var c *pgx.Conn
	defer func() {
		if c != nil {
			c.Close(context.Background())
		}
	}()
	seq := int64(0)
	next := time.Now()
	for ctx.Err() == nil {
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		next = time.Now().Add(every)
		seq++
		a := Attempt{Client: w.Name, Seq: seq, Start: time.Now()}
		actx, cancel := context.WithTimeout(ctx, timeout)
		var err error
		if c == nil || c.IsClosed() {
			c, err = pgx.Connect(actx, conn)
		}
		if err == nil {
			err = c.QueryRow(actx, `INSERT INTO `+Table+` (client, seq) VALUES ($1, $2) RETURNING node`, w.Name, seq).Scan(&a.Node)
		}
		cancel()
		a.End = time.Now()
		if ctx.Err() != nil && err != nil {
			return // stopped mid-attempt: neither acknowledged nor failed
		}
		if err != nil {
			a.Err = err.Error()
			if c != nil {
				c.Close(context.Background())
			}
			c = nil
		} else {
			a.OK = true
		}
		w.mu.Lock()
		w.log = append(w.log, a)
		w.mu.Unlock()
	}
}

// Stop ends the writer and waits for it.
func (w *Writer) Stop() {
	w.stop()
	<-w.done
}

// Log is every attempt so far.
func (w *Writer) Log() []Attempt {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Attempt(nil), w.log...)
}

// Acked is the acknowledged attempts.
func Acked(log []Attempt) []Attempt {
	var out []Attempt
	for _, a := range log {
		if a.OK {
			out = append(out, a)
		}
	}
	return out
}

// LongestPause is the longest time between two acknowledged writes that
// overlaps [from, to] (the app-seen write pause of what ran then), and
// when it ended.
func LongestPause(log []Attempt, from, to time.Time) time.Duration {
	acks := Acked(log)
	var worst time.Duration
	for i := 1; i < len(acks); i++ {
		if acks[i].End.Before(from) || acks[i-1].End.After(to) {
			continue
		}
		worst = max(worst, acks[i].End.Sub(acks[i-1].End))
	}
	return worst
}

// FirstAckAfter is the first acknowledgement that started after t.
func FirstAckAfter(log []Attempt, t time.Time) (Attempt, bool) {
	for _, a := range log {
		if a.OK && a.Start.After(t) {
			return a, true
		}
	}
	return Attempt{}, false
}

// Lost lists the acknowledged rows that the server behind conn (the final
// primary) does not have.
func Lost(ctx context.Context, conn string, logs ...[]Attempt) ([]Attempt, error) {
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT client, seq FROM `+Table)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", Table, err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var cl string
		var seq int64
		if err := rows.Scan(&cl, &seq); err != nil {
			return nil, err
		}
		have[fmt.Sprintf("%s/%d", cl, seq)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var lost []Attempt
	for _, log := range logs {
		for _, a := range Acked(log) {
			if !have[fmt.Sprintf("%s/%d", a.Client, a.Seq)] {
				lost = append(lost, a)
			}
		}
	}
	return lost, nil
}

// Run is a stretch of acknowledgements by one node, across every client.
type Run struct {
	Node        string
	First, Last time.Time // acknowledgement times
	Acks        int
}

// Runs merges every client's acknowledgements in time order and groups
// them by node. Writes that went to two nodes at once show as more runs
// than role changes (a node's run interleaved with another's).
func Runs(logs ...[]Attempt) []Run {
	var all []Attempt
	for _, l := range logs {
		all = append(all, Acked(l)...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].End.Before(all[j].End) })
	var runs []Run
	for _, a := range all {
		if n := len(runs); n > 0 && runs[n-1].Node == a.Node {
			runs[n-1].Last = a.End
			runs[n-1].Acks++
			continue
		}
		runs = append(runs, Run{Node: a.Node, First: a.End, Last: a.End, Acks: 1})
	}
	return runs
}

// Change is a role change's window: from when it began to when it
// returned.
type Change struct{ From, To time.Time }

// WrongNode lists acknowledgements by a node outside its primary
// interval: primaries[i] was the primary from changes[i-1].From (or the
// start) to changes[i].To (or the end). An acknowledgement is wrong when
// its whole attempt lies outside the interval of the node that took it. A
// node names a server as the writers' node column does (address:port).
// Within a change's window either node may acknowledge; Runs tells
// whether they ever did so in turns.
func WrongNode(primaries []string, changes []Change, logs ...[]Attempt) []Attempt {
	var wrong []Attempt
	for _, l := range logs {
		for _, a := range Acked(l) {
			ok := false
			for i, p := range primaries {
				if p != a.Node {
					continue
				}
				from, to := time.Time{}, time.Now().Add(time.Hour)
				if i > 0 {
					from = changes[i-1].From
				}
				if i < len(changes) {
					to = changes[i].To
				}
				if !a.End.Before(from) && !a.Start.After(to) {
					ok = true
				}
			}
			if !ok {
				wrong = append(wrong, a)
			}
		}
	}
	return wrong
}

// Interleaved reports whether the acknowledgements, in time order, went
// to the nodes in any other order than primaries (each stretch by one
// node, in that order): writes taken by two nodes in turns.
func Interleaved(primaries []string, logs ...[]Attempt) (bool, []Run) {
	runs := Runs(logs...)
	j := 0
	for _, r := range runs {
		for j < len(primaries) && primaries[j] != r.Node {
			j++
		}
		if j == len(primaries) {
			return true, runs
		}
		j++
	}
	return false, runs
}
