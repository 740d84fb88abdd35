package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Harness runs a set of writers through a test: Start, Begin/end around
// each event, Stop, Verify.
type Harness struct {
	t       testing.TB
	runner  Runner
	mu      sync.Mutex
	writers []*running
	events  []Event
	stopped bool
}

type running struct {
	w       Writer
	proc    Proc
	started time.Time
	stopped time.Time
	res     StopResult
	// Read so far (Acknowledged reads only what is new): the offset of
	// the first byte not yet parsed, and the end times of the
	// acknowledged writes, rising (a writer writes one at a time).
	mu      sync.Mutex
	offset  int64
	ackEnds []int64
}

// acknowledgedSince reads what the writer logged since the last call and
// counts its acknowledged writes that ended at or after since.
func (r *running) acknowledgedSince(ctx context.Context, since time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, _ := r.proc.Log(ctx, r.offset)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		for _, line := range bytes.Split(b[:i], []byte("\n")) {
			var a Attempt
			if json.Unmarshal(line, &a) == nil && a.OK && a.Client == r.w.name() {
				r.ackEnds = append(r.ackEnds, a.End)
			}
		}
		r.offset += int64(i + 1)
	}
	ms := since.UnixMilli()
	return len(r.ackEnds) - sort.Search(len(r.ackEnds), func(i int) bool { return r.ackEnds[i] >= ms })
}

// New makes a harness for runner. Writers still running when the test
// ends are stopped then.
func New(t testing.TB, runner Runner) *Harness {
	h := &Harness{t: t, runner: runner}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		h.Stop(ctx)
	})
	return h
}

// Start starts writers. Start them before the first event: a pause is
// only measured from a writer's start.
func (h *Harness) Start(ctx context.Context, ws ...Writer) error {
	seen := map[string]bool{}
	for _, r := range h.writers {
		seen[r.w.name()] = true
	}
	for _, w := range ws {
		if seen[w.name()] {
			return fmt.Errorf("two writers named %q: give one a Name", w.name())
		}
		seen[w.name()] = true
		started := time.Now()
		p, err := h.runner.Start(ctx, w)
		if err != nil {
			return fmt.Errorf("starting the %s writer: %w", w.name(), err)
		}
		h.mu.Lock()
		h.writers = append(h.writers, &running{w: w, proc: p, started: started})
		h.mu.Unlock()
	}
	return nil
}

// Acknowledged counts each writer's acknowledged writes that ended after
// since, reading the logs as they are now.
func (h *Harness) Acknowledged(ctx context.Context, since time.Time) map[string]int {
	out := map[string]int{}
	for _, r := range h.list() {
		out[r.w.name()] = r.acknowledgedSince(ctx, since)
	}
	return out
}

// WaitAcknowledged waits until every writer has had at least n writes
// acknowledged since the given time (the writers are up; after an event:
// every one has resumed), or says which have not.
func (h *Harness) WaitAcknowledged(ctx context.Context, n int, since time.Time, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		counts := h.Acknowledged(ctx, since)
		var behind []string
		for _, r := range h.list() {
			if c := counts[r.w.name()]; c < n {
				behind = append(behind, fmt.Sprintf("%s (%d)", r.w.name(), c))
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, r := range h.list() {
				if counts[r.w.name()] < n {
					log, _ := r.proc.Log(ctx, 0)
					fmt.Fprintf(&b, "\n--- %s: last attempts:\n%s\n--- %s: stderr:\n%s", r.w.name(), tailBytes(string(log), 600), r.w.name(), r.proc.Stderr(ctx))
				}
			}
			return fmt.Errorf("after %s, writers with fewer than %d acknowledged writes since %s: %s%s", timeout, n,
				since.Format("15:04:05.000"), strings.Join(behind, ", "), b.String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Begin marks the start of an event; the returned func marks its end.
// newPrimary is the node that is the primary once the event is over (""
// when the event changes no role).
func (h *Harness) Begin(name, newPrimary string) (end func()) {
	start := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.events = append(h.events, Event{Name: name, Start: start, End: time.Now(), NewPrimary: newPrimary})
			h.mu.Unlock()
		})
	}
}

// Events are the events marked so far.
func (h *Harness) Events() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...)
}

func (h *Harness) list() []*running {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*running(nil), h.writers...)
}

// Stop stops every writer at once (SIGTERM, SIGKILL StopGrace later) and
// returns what each left. Calling it again returns the same.
func (h *Harness) Stop(ctx context.Context) []WriterResult {
	h.mu.Lock()
	first := !h.stopped
	h.stopped = true
	h.mu.Unlock()
	rs := h.list()
	if first {
		var wg sync.WaitGroup
		for _, r := range rs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := r.proc.Stop(ctx)
				if err != nil {
					res.Exit = "stopping it failed: " + err.Error()
				}
				r.res, r.stopped = res, time.Now()
			}()
		}
		wg.Wait()
	}
	var out []WriterResult
	for _, r := range rs {
		log, err := r.proc.Log(ctx, 0)
		stderr := r.proc.Stderr(ctx)
		if err != nil {
			stderr += "\n(reading its log: " + err.Error() + ")"
		}
		out = append(out, WriterResult{Name: r.w.name(), Client: r.w.Client, Log: log, Stderr: stderr, Started: r.started,
			Stopped: r.stopped, ExitedEarly: r.res.ExitedEarly, Hung: r.res.Hung, Exit: r.res.Exit})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Verify stops the writers (if they still run) and checks what they saw
// against the marked events and rows, the final primary's `writes` (nil:
// not checked). initialPrimary is the primary when they started.
func (h *Harness) Verify(ctx context.Context, initialPrimary string, rows []Row) Report {
	return Verify(Input{Writers: h.Stop(ctx), Events: h.Events(), InitialPrimary: initialPrimary, Rows: rows})
}
