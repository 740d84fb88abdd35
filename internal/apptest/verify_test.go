package apptest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// t0 is the made-up runs' start; times below are ms after it.
var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

func at(ms int64) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// ok and fail are log lines of a made-up writer.
func ok(client string, seq int64, node string, start, end int64) Attempt {
	return Attempt{Client: client, Seq: seq, OK: true, Node: node, Start: at(start).UnixMilli(), End: at(end).UnixMilli()}
}

func fail(client string, seq int64, start, end int64, msg string) Attempt {
	return Attempt{Client: client, Seq: seq, Start: at(start).UnixMilli(), End: at(end).UnixMilli(), Error: msg}
}

func logOf(as ...Attempt) []byte {
	var b []byte
	for _, a := range as {
		j, _ := json.Marshal(a)
		b = append(append(b, j...), '\n')
	}
	return b
}

// steady writes every 50 ms on node from..to (ms), seq from seq0.
func steady(client, node string, seq0, from, to int64) []Attempt {
	var out []Attempt
	for t := from; t < to; t += 50 {
		out = append(out, ok(client, seq0, node, t, t+5))
		seq0++
	}
	return out
}

func rowsOf(as []Attempt) []Row {
	var out []Row
	for _, a := range as {
		if a.OK {
			out = append(out, Row{Client: a.Client, Seq: a.Seq, Node: a.Node})
		}
	}
	return out
}

func writer(name string, as []Attempt) WriterResult {
	return WriterResult{Name: name, Client: Client(name), Log: logOf(as...), Started: at(0), Stopped: at(10_000), Exit: "exit status 0"}
}

// switchover is a clean run: db until 3000, no acks 3000-3300 (errors), db-replica after.
func switchoverRun(client string) []Attempt {
	as := steady(client, "db", 1, 0, 3000)
	n := int64(len(as)) + 1
	as = append(as, fail(client, n, 3000, 3100, "session is read-only"), fail(client, n+1, 3150, 3250, "Connection refused"))
	return append(as, steady(client, "db-replica", n+2, 3300, 9000)...)
}

var switchoverEvent = Event{Name: "switchover 1", Start: at(2950), End: at(3280), NewPrimary: "db-replica"}

func TestVerify(t *testing.T) {
	clean := switchoverRun("pgx")
	cases := []struct {
		name   string
		in     func() Input
		want   []string // substrings of Problems, in order; none: no problems
		report func(t *testing.T, r Report)
	}{
		{
			name: "clean switchover",
			in: func() Input {
				return Input{Writers: []WriterResult{writer("pgx", clean)}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rowsOf(clean)}
			},
			report: func(t *testing.T, r Report) {
				w := r.Writers[0]
				if w.OK != len(clean)-2 || w.Failed != 2 || r.Acknowledged != w.OK {
					t.Errorf("counts: %+v", w)
				}
				// last ack before: the one started at 2950, ended 2955; first after: 3305.
				p := w.Pauses[0]
				if p.Gap != 350*time.Millisecond || !p.Resumed || p.Failed != 2 || p.Error != "session is read-only" {
					t.Errorf("pause: %+v", p)
				}
				if !p.NewPrimaryAck.Equal(at(3305)) || p.NewPrimaryAckAfter != 25*time.Millisecond {
					t.Errorf("first write on the new primary: %v, %v after the end", p.NewPrimaryAck, p.NewPrimaryAckAfter)
				}
				if w.PauseP50 != 350*time.Millisecond || w.PauseMax != 350*time.Millisecond {
					t.Errorf("p50/max: %v %v", w.PauseP50, w.PauseMax)
				}
				if !r.RowsChecked || !r.NodesChecked {
					t.Errorf("checks not run: %+v", r)
				}
			},
		},
		{
			name: "an acknowledged row missing from the final primary",
			in: func() Input {
				rows := rowsOf(clean)
				rows = append(rows[:10], rows[11:]...)
				return Input{Writers: []WriterResult{writer("pgx", clean)}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rows}
			},
			want: []string{"lost: pgx #11 acknowledged by db"},
		},
		{
			name: "a standby acknowledges before the switchover began",
			in: func() Input {
				as := append([]Attempt(nil), clean...)
				as[5].Node = "db-replica"
				return Input{Writers: []WriterResult{writer("pgx", as)}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rowsOf(as)}
			},
			want: []string{"wrong node: pgx #6 acknowledged by db-replica"},
		},
		{
			name: "the old primary acknowledges long after the switchover ended",
			in: func() Input {
				as := append([]Attempt(nil), clean...)
				as[len(as)-5].Node = "db"
				return Input{Writers: []WriterResult{writer("pgx", as)}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rowsOf(as)}
			},
			want: []string{"wrong node: pgx #", "two primaries (switchover 1): pgx #"},
		},
		{
			name: "two primaries inside the switchover's window",
			in: func() Input {
				// psycopg2 reaches db-replica at 3000-3010; pgx still gets db at 3100-3110.
				a := steady("psycopg2", "db", 1, 0, 2950)
				a = append(a, ok("psycopg2", 100, "db-replica", 3000, 3010))
				a = append(a, steady("psycopg2", "db-replica", 101, 3300, 5000)...)
				b := steady("pgx", "db", 1, 0, 2950)
				b = append(b, ok("pgx", 100, "db", 3100, 3110))
				b = append(b, steady("pgx", "db-replica", 101, 3300, 5000)...)
				rows := append(rowsOf(a), rowsOf(b)...)
				return Input{Writers: []WriterResult{writer("psycopg2", a), writer("pgx", b)}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rows}
			},
			want: []string{"two primaries (switchover 1): pgx #100 acknowledged by db (10:00:03.100–10:00:03.110), after psycopg2 #100 acknowledged by db-replica"},
		},
		{
			name: "switchover and back: the same node is primary twice, no overlap",
			in: func() Input {
				as := steady("pgx", "db", 1, 0, 2950)
				as = append(as, steady("pgx", "db-replica", 100, 3300, 6000)...)
				as = append(as, steady("pgx", "db", 200, 6400, 9000)...)
				back := Event{Name: "switchover back", Start: at(6000), End: at(6350), NewPrimary: "db"}
				return Input{Writers: []WriterResult{writer("pgx", as)}, Events: []Event{switchoverEvent, back}, InitialPrimary: "db", Rows: rowsOf(as)}
			},
			report: func(t *testing.T, r Report) {
				w := r.Writers[0]
				if len(w.Pauses) != 2 || w.Pauses[0].Gap != 400*time.Millisecond || w.Pauses[1].Gap != 450*time.Millisecond {
					t.Errorf("pauses: %+v", w.Pauses)
				}
				if w.PauseP50 != 400*time.Millisecond || w.PauseMax != 450*time.Millisecond {
					t.Errorf("p50 %v max %v", w.PauseP50, w.PauseMax)
				}
			},
		},
		{
			name: "a writer that never resumes after the event",
			in: func() Input {
				as := steady("node-postgres", "db", 1, 0, 2950)
				for i := int64(0); i < 20; i++ {
					as = append(as, fail("node-postgres", 100+i, 3000+i*300, 3000+i*300+250, "cannot execute INSERT in a read-only transaction"))
				}
				return Input{Writers: []WriterResult{writer("node-postgres", as)}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rowsOf(as)}
			},
			want: []string{`node-postgres did not resume after "switchover 1": no write acknowledged after it (last 10:00:02.905); 20 failed attempts, the first: cannot execute INSERT in a read-only transaction`},
			report: func(t *testing.T, r Report) {
				if p := r.Writers[0].Pauses[0]; p.Resumed || p.Gap != 7095*time.Millisecond {
					t.Errorf("an open pause runs to the writer's stop: %+v", p)
				}
			},
		},
		{
			name: "hung at the stop, and one that died early",
			in: func() Input {
				h := writer("activerecord", clean)
				h.Name, h.Log, h.Hung, h.Exit = "activerecord", logOf(relabel(clean, "activerecord")...), true, "killed after 2s"
				d := writer("psycopg2", relabel(clean, "psycopg2"))
				d.ExitedEarly, d.Exit, d.Stderr = true, "exit status 1", "Traceback: boom"
				rows := append(rowsOf(relabel(clean, "activerecord")), rowsOf(relabel(clean, "psycopg2"))...)
				return Input{Writers: []WriterResult{h, d}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rows}
			},
			want: []string{"activerecord hung: still running 2 s after SIGTERM", "psycopg2 exited before it was stopped (exit status 1): Traceback: boom"},
		},
		{
			name: "a row names another node than the acknowledgement; a row twice",
			in: func() Input {
				rows := rowsOf(clean)
				rows[3].Node = "db-replica"
				rows = append(rows, rows[7])
				return Input{Writers: []WriterResult{writer("pgx", clean)}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rows}
			},
			want: []string{"mismatch: pgx #4", "duplicate: pgx #8"},
		},
		{
			name: "rows of failed attempts are allowed, and counted",
			in: func() Input {
				rows := append(rowsOf(clean), Row{Client: "pgx", Seq: clean[len(steady("pgx", "db", 1, 0, 3000))].Seq, Node: "db"}, Row{Client: "other", Seq: 1, Node: "db"})
				return Input{Writers: []WriterResult{writer("pgx", clean)}, Events: []Event{switchoverEvent}, InitialPrimary: "db", Rows: rows}
			},
			report: func(t *testing.T, r Report) {
				if r.Unacknowledged != 1 {
					t.Errorf("unacknowledged = %d, want 1 (the other writer's row is not ours)", r.Unacknowledged)
				}
			},
		},
		{
			name: "a bad log line, a wrong client, a sequence going back, a cut-off end",
			in: func() Input {
				log := logOf(ok("pgx", 1, "db", 0, 5), ok("pgx", 2, "db", 50, 55))
				log = append(log, "not json\n"...)
				log = append(log, logOf(ok("psycopg2", 3, "db", 100, 105), ok("pgx", 2, "db", 150, 155), Attempt{Client: "pgx", Seq: 9, OK: true, Start: at(200).UnixMilli(), End: at(205).UnixMilli()})...)
				log = append(log, logOf(ok("pgx", 10, "db", 250, 255))...)
				log = append(log, `{"client":"pgx","seq":11,"ok":tr`...)
				w := writer("pgx", nil)
				w.Log = log
				return Input{Writers: []WriterResult{w}, InitialPrimary: "db", Rows: rowsOf([]Attempt{ok("pgx", 1, "db", 0, 5), ok("pgx", 2, "db", 50, 55), ok("pgx", 10, "db", 250, 255)})}
			},
			want: []string{"pgx log line 3: not a JSON attempt", `pgx log line 4: client "psycopg2", expected "pgx"`, "pgx log line 5: sequence 2 after 2",
				"pgx log line 6: acknowledged with no node", "pgx log line 8: not a JSON attempt", "pgx log: the last line is cut off"},
		},
		{
			name: "a writer that never got a write in",
			in: func() Input {
				as := []Attempt{fail("activerecord", 1, 0, 2000, "URI::InvalidURIError: bad URI"), fail("activerecord", 2, 2050, 4000, "URI::InvalidURIError: bad URI")}
				return Input{Writers: []WriterResult{writer("activerecord", as)}, InitialPrimary: "db", Rows: []Row{}}
			},
			want: []string{"activerecord never had a write acknowledged (2 attempts)"},
		},
		{
			name: "without an initial primary or rows nothing is claimed about them",
			in: func() Input {
				as := append([]Attempt(nil), clean...)
				as[5].Node = "db-replica"
				return Input{Writers: []WriterResult{writer("pgx", as)}, Events: []Event{switchoverEvent}}
			},
			report: func(t *testing.T, r Report) {
				if r.RowsChecked || r.NodesChecked || !strings.Contains(r.String(), "lost not checked, wrong node not checked") {
					t.Errorf("claims checks it did not run:\n%s", r)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Verify(c.in())
			got := r.Problems()
			if len(got) != len(c.want) {
				t.Fatalf("problems:\n  %s\nwant %d: %q", strings.Join(got, "\n  "), len(c.want), c.want)
			}
			for i, w := range c.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, got[i], w)
				}
			}
			if (r.Err() == nil) != (len(c.want) == 0) {
				t.Errorf("Err() = %v with %d problems", r.Err(), len(c.want))
			}
			if c.report != nil {
				c.report(t, r)
			}
		})
	}
}

func relabel(as []Attempt, client string) []Attempt {
	out := make([]Attempt, len(as))
	for i, a := range as {
		a.Client = client
		out[i] = a
	}
	return out
}

func TestPrimarySpans(t *testing.T) {
	evs := []Event{
		{Name: "noise", Start: at(100), End: at(200)},
		{Name: "back", Start: at(5000), End: at(5300), NewPrimary: "db"},
		{Name: "over", Start: at(1000), End: at(1300), NewPrimary: "db-replica"},
	}
	got := primarySpans("db", evs)
	if len(got) != 3 || got[0].node != "db" || got[0].to != at(1300).UnixMilli() ||
		got[1].node != "db-replica" || got[1].from != at(1000).UnixMilli() || got[1].to != at(5300).UnixMilli() ||
		got[2].node != "db" || got[2].from != at(5000).UnixMilli() {
		t.Errorf("spans: %+v", got)
	}
}
