package apptest

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Event is something the test did while the writers ran, between Start
// and End (a switchover: from before the command to its return).
// NewPrimary, when set, is the node that is the primary once it is over;
// while it runs either the old or the new primary may acknowledge writes.
type Event struct {
	Name       string
	Start, End time.Time
	NewPrimary string
}

// WriterResult is what one writer left: its log, and how it ended.
type WriterResult struct {
	Name             string // the log's client field
	Client           Client
	Log              []byte
	Stderr           string // the end of its diagnostics
	Started, Stopped time.Time
	// ExitedEarly: it was no longer running when it was told to stop.
	// Hung: it was still running 2 s after SIGTERM and was killed.
	ExitedEarly, Hung bool
	Exit              string // how it ended, in words
}

// Input is everything Verify looks at.
type Input struct {
	Writers []WriterResult
	Events  []Event
	// InitialPrimary is the primary when the writers start. Empty: the
	// nodes' acknowledgements are not checked against primary periods.
	InitialPrimary string
	// Rows are `writes` as the final primary has it; nil: the
	// acknowledged rows are not checked.
	Rows []Row
}

// Report is Verify's answer.
type Report struct {
	Writers []WriterReport
	// Lost: acknowledged, and not on the final primary.
	Lost []Attempt
	// WrongNode: acknowledged by a node at no time it may have been the primary.
	WrongNode []Attempt
	// Overlaps: after a role change, the old primary acknowledged a write
	// that started after the new one had acknowledged one: both were
	// primaries at once.
	Overlaps []Overlap
	// Mismatched: the row on the final primary names another node than
	// the acknowledgement did.
	Mismatched []Attempt
	// Duplicated: rows that are on the final primary more than once.
	Duplicated []Row
	// Unacknowledged counts rows on the final primary whose attempt failed
	// or was never logged (allowed: a commit whose answer was lost).
	Unacknowledged int
	Acknowledged   int
	RowsChecked    bool
	NodesChecked   bool
}

// Overlap is a write the old primary acknowledged after the new primary
// had already acknowledged one.
type Overlap struct {
	Event      string
	Old, First Attempt // the old primary's late ack; the new primary's first
}

// WriterReport is one writer's summary.
type WriterReport struct {
	Name                 string
	Client               Client
	Attempts, OK, Failed int
	ExitedEarly, Hung    bool
	Exit                 string
	Stderr               string
	LogProblems          []string
	Pauses               []Pause
	PauseP50, PauseMax   time.Duration
	FirstOK, LastOK      time.Time
	acks                 []Attempt
}

// Pause is the longest time between two acknowledged writes of one
// writer around an event: the gaps between consecutive acknowledgements
// that overlap the event. Resumed: a write was acknowledged after the
// event ended, in the same process (the harness never restarts one).
type Pause struct {
	Event   string
	Gap     time.Duration
	From    time.Time // the acknowledgement before the gap (or the writer's start)
	To      time.Time // the one after it (or the writer's stop, when it did not resume)
	Resumed bool
	Failed  int    // failed attempts in the gap
	Error   string // the first of them
	// For a role change: when the writer's first write on the new primary
	// was acknowledged (zero: never), and how long after the event's end
	// (negative: before it).
	NewPrimaryAck      time.Time
	NewPrimaryAckAfter time.Duration
}

// Verify checks the writers' logs against the events and the final
// primary's rows. Pure.
func Verify(in Input) Report {
	var r Report
	var acks []Attempt
	byKey := map[string][]Attempt{}
	for _, w := range in.Writers {
		atts, problems := ParseLog(w.Name, w.Log)
		wr := WriterReport{Name: w.Name, Client: w.Client, Attempts: len(atts), ExitedEarly: w.ExitedEarly, Hung: w.Hung,
			Exit: w.Exit, Stderr: w.Stderr, LogProblems: problems}
		for _, a := range atts {
			if a.OK {
				wr.OK++
				wr.acks = append(wr.acks, a)
				acks = append(acks, a)
			} else {
				wr.Failed++
			}
			key := rowKey(a.Client, a.Seq)
			byKey[key] = append(byKey[key], a)
		}
		sort.Slice(wr.acks, func(i, j int) bool { return wr.acks[i].End < wr.acks[j].End })
		if len(wr.acks) > 0 {
			wr.FirstOK, wr.LastOK = wr.acks[0].EndTime(), wr.acks[len(wr.acks)-1].EndTime()
		}
		wr.Pauses = pauses(wr.acks, atts, in.Events, w.Started, w.Stopped)
		var gaps []time.Duration
		for _, p := range wr.Pauses {
			gaps = append(gaps, p.Gap)
		}
		wr.PauseP50, wr.PauseMax = median(gaps), maxOf(gaps)
		r.Writers = append(r.Writers, wr)
	}
	r.Acknowledged = len(acks)
	sort.Slice(acks, func(i, j int) bool { return acks[i].End < acks[j].End })

	if in.InitialPrimary != "" {
		r.NodesChecked = true
		spans := primarySpans(in.InitialPrimary, in.Events)
		for _, a := range acks {
			if !mayBePrimary(spans, a) {
				r.WrongNode = append(r.WrongNode, a)
			}
		}
		r.Overlaps = overlaps(in.InitialPrimary, in.Events, acks)
	}

	if in.Rows != nil {
		r.RowsChecked = true
		rows := map[string][]Row{}
		for _, row := range in.Rows {
			k := rowKey(row.Client, row.Seq)
			rows[k] = append(rows[k], row)
			if len(rows[k]) == 2 {
				r.Duplicated = append(r.Duplicated, row)
			}
		}
		logged := map[string]bool{}
		for _, w := range in.Writers {
			logged[w.Name] = true
		}
		for _, a := range acks {
			got := rows[rowKey(a.Client, a.Seq)]
			switch {
			case len(got) == 0:
				r.Lost = append(r.Lost, a)
			case got[0].Node != a.Node:
				r.Mismatched = append(r.Mismatched, a)
			}
		}
		for k, got := range rows {
			if !logged[got[0].Client] {
				continue // another writer's rows
			}
			acked := false
			for _, a := range byKey[k] {
				acked = acked || a.OK
			}
			if !acked {
				r.Unacknowledged++
			}
		}
	}
	return r
}

func rowKey(client string, seq int64) string { return fmt.Sprintf("%s\x00%d", client, seq) }

// span is a time (ms, inclusive) during which node may have been the primary.
type span struct {
	node     string
	from, to int64
}

// primarySpans: the initial primary until the first role change ends;
// each new primary from the start of its role change until the next one
// ends (during a role change both may be).
func primarySpans(initial string, events []Event) []span {
	cur := span{node: initial, from: math.MinInt64}
	var out []span
	for _, e := range roleChanges(events) {
		cur.to = e.End.UnixMilli()
		out = append(out, cur)
		cur = span{node: e.NewPrimary, from: e.Start.UnixMilli()}
	}
	cur.to = math.MaxInt64
	return append(out, cur)
}

func roleChanges(events []Event) []Event {
	var out []Event
	for _, e := range events {
		if e.NewPrimary != "" {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// mayBePrimary: the acknowledgement's interval meets a span of its node
// (the commit happened somewhere between the attempt's start and end).
func mayBePrimary(spans []span, a Attempt) bool {
	for _, s := range spans {
		if s.node == a.Node && a.Start <= s.to && a.End >= s.from {
			return true
		}
	}
	return false
}

// overlaps finds, for each role change from old to new, the old primary's
// acknowledgements of writes that started after the new primary's first
// acknowledgement ended (before the next role change began): the old
// commit came after the new one, so both nodes were primaries at once.
func overlaps(initial string, events []Event, acks []Attempt) []Overlap {
	var out []Overlap
	changes := roleChanges(events)
	old := initial
	for i, e := range changes {
		next := int64(math.MaxInt64)
		if i+1 < len(changes) {
			next = changes[i+1].Start.UnixMilli()
		}
		if e.NewPrimary != old {
			var first *Attempt
			for j := range acks { // sorted by End
				if acks[j].Node == e.NewPrimary && acks[j].End >= e.Start.UnixMilli() {
					first = &acks[j]
					break
				}
			}
			if first != nil {
				for _, a := range acks {
					if a.Node == old && a.Start > first.End && a.Start < next {
						out = append(out, Overlap{Event: e.Name, Old: a, First: *first})
					}
				}
			}
		}
		old = e.NewPrimary
	}
	return out
}

// pauses measures, per event, the longest gap between consecutive
// acknowledgements that overlaps the event. Without an acknowledgement
// before, the gap starts at the writer's start; without one after, it
// runs to the writer's stop and the writer did not resume.
func pauses(acks, all []Attempt, events []Event, started, stopped time.Time) []Pause {
	var out []Pause
	for _, e := range events {
		es, ee := e.Start.UnixMilli(), e.End.UnixMilli()
		p := Pause{Event: e.Name}
		consider := func(from, to int64) {
			if to < es || from > ee {
				return
			}
			if gap := time.Duration(to-from) * time.Millisecond; gap > p.Gap || (p.From.IsZero() && p.To.IsZero()) {
				p.Gap, p.From, p.To = gap, time.UnixMilli(from), time.UnixMilli(to)
				p.Failed, p.Error = 0, ""
				for _, a := range all {
					if !a.OK && a.Start >= from && a.End <= to {
						if p.Failed == 0 {
							p.Error = a.Error
						}
						p.Failed++
					}
				}
			}
		}
		prev := started.UnixMilli()
		for _, a := range acks {
			consider(prev, a.End)
			prev = a.End
		}
		last := prev
		if len(acks) == 0 || last < ee {
			consider(last, max(stopped.UnixMilli(), ee))
		}
		p.Resumed = len(acks) > 0 && acks[len(acks)-1].End > ee
		if e.NewPrimary != "" {
			for _, a := range acks {
				if a.Node == e.NewPrimary && a.End >= es {
					p.NewPrimaryAck, p.NewPrimaryAckAfter = a.EndTime(), time.Duration(a.End-ee)*time.Millisecond
					break
				}
			}
		}
		out = append(out, p)
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)/2]
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// Problems lists, in words, everything that is wrong: lost or wrong-node
// acknowledgements, overlaps, duplicates, writers that hung, died, wrote a
// bad log, never wrote, or did not resume after an event.
func (r Report) Problems() []string {
	var p []string
	for _, w := range r.Writers {
		if w.ExitedEarly {
			p = append(p, fmt.Sprintf("%s exited before it was stopped (%s)%s", w.Name, w.Exit, stderrTail(w.Stderr)))
		}
		if w.Hung {
			p = append(p, fmt.Sprintf("%s hung: still running 2 s after SIGTERM, killed (last acknowledgement %s)", w.Name, stamp(w.LastOK)))
		}
		p = append(p, w.LogProblems...)
		if w.OK == 0 {
			p = append(p, fmt.Sprintf("%s never had a write acknowledged (%d attempts)%s", w.Name, w.Attempts, stderrTail(w.Stderr)))
			continue
		}
		for _, ps := range w.Pauses {
			if !ps.Resumed {
				msg := fmt.Sprintf("%s did not resume after %q: no write acknowledged after it (last %s)", w.Name, ps.Event, stamp(w.LastOK))
				if ps.Error != "" {
					msg += fmt.Sprintf("; %d failed attempts, the first: %s", ps.Failed, ps.Error)
				}
				p = append(p, msg)
			}
		}
	}
	for _, a := range r.Lost {
		p = append(p, "lost: "+a.String()+", and not on the final primary")
	}
	for _, a := range r.WrongNode {
		p = append(p, "wrong node: "+a.String()+", a time "+a.Node+" was not the primary")
	}
	for _, o := range r.Overlaps {
		p = append(p, fmt.Sprintf("two primaries (%s): %s, after %s", o.Event, o.Old, o.First))
	}
	for _, a := range r.Mismatched {
		p = append(p, "mismatch: "+a.String()+", but the final primary's row names another node")
	}
	for _, row := range r.Duplicated {
		p = append(p, fmt.Sprintf("duplicate: %s #%d is on the final primary more than once", row.Client, row.Seq))
	}
	return p
}

// Err is nil when there are no Problems.
func (r Report) Err() error {
	p := r.Problems()
	if len(p) == 0 {
		return nil
	}
	if len(p) > 40 {
		p = append(p[:40], fmt.Sprintf("... and %d more", len(p)-40))
	}
	return fmt.Errorf("app writers: %d problems:\n  %s", len(r.Problems()), strings.Join(p, "\n  "))
}

// String is a table: per writer, its counts and its pause per event.
func (r Report) String() string {
	var b strings.Builder
	checked := func(ok bool, n int) string {
		if !ok {
			return "not checked"
		}
		return fmt.Sprint(n)
	}
	fmt.Fprintf(&b, "%d acknowledged writes; lost %s, wrong node %s, two primaries %s\n", r.Acknowledged,
		checked(r.RowsChecked, len(r.Lost)), checked(r.NodesChecked, len(r.WrongNode)), checked(r.NodesChecked, len(r.Overlaps)))
	for _, w := range r.Writers {
		fmt.Fprintf(&b, "  %-16s %5d ok %4d failed", w.Name, w.OK, w.Failed)
		if len(w.Pauses) > 0 {
			fmt.Fprintf(&b, "  pause p50 %4d ms max %4d ms:", w.PauseP50.Milliseconds(), w.PauseMax.Milliseconds())
			for _, p := range w.Pauses {
				mark := ""
				if !p.NewPrimaryAck.IsZero() {
					mark = fmt.Sprintf(" (first on the new primary: end %+d ms)", p.NewPrimaryAckAfter.Milliseconds())
				}
				if !p.Resumed {
					mark = " (did not resume)"
				}
				fmt.Fprintf(&b, " %s %d ms%s;", p.Event, p.Gap.Milliseconds(), mark)
			}
		}
		if w.Hung {
			b.WriteString("  HUNG")
		}
		if w.ExitedEarly {
			b.WriteString("  EXITED EARLY")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format("15:04:05.000")
}

func stderrTail(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return ": " + s
}
