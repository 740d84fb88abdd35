// Package apptest runs real app clients against a cluster and checks what
// they saw: each writer is a small program on a real driver and framework
// (ActiveRecord 6.1 + ruby-pg, node-postgres, psycopg2, pgx; also psycopg
// 3, postgres.js and PHP PDO), configured as the app would be told to
// configure it, inserting into `writes` every 50 ms and logging one JSON
// line per attempt: which node took the write, when it started and ended,
// or the error.
//
// The writers run as local processes (ProcessRunner: for a lab) or as
// containers of the understudy-app:test image, built here from Debian's
// packages (ContainerRunner: on a test server's dockerd). A Harness starts
// them, marks events (a switchover's start and end), stops them (SIGTERM,
// SIGKILL after 2 s: a hang) and hands their logs to Verify, a pure
// function that says whether any acknowledged row is missing from the
// final primary, whether a node acknowledged a write outside the time it
// was the primary, whether two nodes acknowledged writes in overlapping
// periods, and how long each client's writes paused around each event.
//
// A test on real Docker (the app container on the app server's Kamal
// network, reaching the router accessory by name) goes:
//
//	tar, err := apptest.ImageTar(ctx, t.Logf)          // cached per machine
//	appServer.Docker(t, "load", "-q", "-i", tar)        // a dockertest.Server
//	s := apptest.AppSettings(apptest.Endpoint{Host: "shop-router", Port: 5432})
//	err = apptest.Prepare(ctx, superuserConnToPrimary, s) // role, database, table
//	h := apptest.New(t, &apptest.ContainerRunner{DockerHost: appServer.DockerHost(), Network: "kamal", Dir: t.TempDir()})
//	err = h.Start(ctx, apptest.Writer{Client: apptest.ActiveRecord, Settings: s}, ...) // one per apptest.Core
//	err = h.WaitAcknowledged(ctx, 5, begun, 2*time.Minute)
//	end := h.Begin("switchover 1", "db-replica")        // the primary once it is over
//	... understudy switchover db-replica ...
//	end()
//	err = h.WaitAcknowledged(ctx, 5, time.Now(), time.Minute)
//	h.Stop(ctx)
//	rows, err := apptest.ReadRows(ctx, superuserConnToFinalPrimary, s)
//	rep := h.Verify(ctx, "db", rows)                    // "db": the primary at the start
//	t.Log(rep); if err := rep.Err(); err != nil { t.Fatal(err) }
//
// On a lab, PrepareHost and a ProcessRunner take the container's place
// (see TestLabWritersFollowSwitchovers). A node names itself in `writes`
// by cluster_name, which understudy's boot script sets to the node's name.
package apptest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Client is an app stack with its driver.
type Client string

// The clients there are writers for.
const (
	ActiveRecord Client = "activerecord"  // ActiveRecord 6.1 + ruby-pg (Debian's ruby-activerecord, ruby-pg)
	NodePostgres Client = "node-postgres" // npm pg: one host only, so it needs the router
	Psycopg2     Client = "psycopg2"      // Debian's python3-psycopg2
	PGX          Client = "pgx"           // pgx v5 pgxpool, a static Go program
	Psycopg3     Client = "psycopg3"      // Debian's python3-psycopg (3.1)
	PostgresJS   Client = "postgresjs"    // npm postgres
	PDO          Client = "pdo"           // PHP PDO, Debian's php-pgsql
)

// Core are the clients every app-level test runs (issue 17's list).
var Core = []Client{ActiveRecord, NodePostgres, Psycopg2, PGX}

// All is every client there is a writer for.
var All = []Client{ActiveRecord, NodePostgres, Psycopg2, PGX, Psycopg3, PostgresJS, PDO}

// Attempt is one line of a writer's log: one INSERT, acknowledged (OK, with
// the node that took it, as the server recorded it) or failed (Error).
// Start and End are milliseconds since the Unix epoch on the writer's clock.
type Attempt struct {
	Client string `json:"client"`
	Seq    int64  `json:"seq"`
	OK     bool   `json:"ok"`
	Node   string `json:"node"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
	Error  string `json:"error"`
}

// StartTime and EndTime are the attempt's times.
func (a Attempt) StartTime() time.Time { return time.UnixMilli(a.Start) }
func (a Attempt) EndTime() time.Time   { return time.UnixMilli(a.End) }

func (a Attempt) String() string {
	if a.OK {
		return fmt.Sprintf("%s #%d acknowledged by %s (%s–%s)", a.Client, a.Seq, a.Node, clock(a.Start), clock(a.End))
	}
	return fmt.Sprintf("%s #%d failed (%s–%s): %s", a.Client, a.Seq, clock(a.Start), clock(a.End), a.Error)
}

func clock(ms int64) string { return time.UnixMilli(ms).Format("15:04:05.000") }

// ParseLog reads a writer's log. Every line must be a well-formed attempt
// of this client, with sequence numbers rising; each line that is not is
// returned as a problem (with its line number), and skipped.
func ParseLog(client string, log []byte) ([]Attempt, []string) {
	var out []Attempt
	var problems []string
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	var last int64
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var a Attempt
		bad := func(format string, args ...any) {
			problems = append(problems, fmt.Sprintf("%s log line %d: %s: %.200s", client, line, fmt.Sprintf(format, args...), text))
		}
		switch err := json.Unmarshal(text, &a); {
		case err != nil:
			bad("not a JSON attempt (%v)", err)
		case a.Client != client:
			bad("client %q, expected %q", a.Client, client)
		case a.Seq <= last:
			bad("sequence %d after %d", a.Seq, last)
		case a.Start <= 0 || a.End < a.Start:
			bad("times start=%d end=%d", a.Start, a.End)
		case a.OK && a.Node == "":
			bad("acknowledged with no node")
		case !a.OK && a.Error == "":
			bad("failed with no error text")
		default:
			out = append(out, a)
			last = a.Seq
		}
	}
	if err := sc.Err(); err != nil {
		problems = append(problems, fmt.Sprintf("%s log: %v", client, err))
	}
	if n := len(log); n > 0 && log[n-1] != '\n' {
		problems = append(problems, fmt.Sprintf("%s log: the last line is cut off (the writer died while writing it)", client))
	}
	return out, problems
}
