package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/understudy-dev/understudy/internal/version"
)

// Status is /status: the agent's last observation, what it makes of it,
// and what it sees of its peers. It carries no secret.
type Status struct {
	View    NodeView            `json:"view"`
	Checks  map[string]CheckOut `json:"checks"`
	Lease   LeaseState          `json:"lease"`
	Peers   []PeerView          `json:"peers"`
	Details Details             `json:"details"`
	// Understudy is the agent's build (check warns when it is not the
	// operator's: `understudy apply` installs the operator's).
	Understudy version.Build `json:"understudy"`
	// Failover is the failover loop's report when the agent runs one.
	// (failover.Report as JSON).
	Failover json.RawMessage `json:"failover,omitempty"`
}

// CheckOut is one check's verdict in a body.
type CheckOut struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason"`
}

// checkBody is the body of /primary, /replica and /health.
type checkBody struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason"`
	RoleAnswer
	Understudy version.Build `json:"understudy"`
}

// Handler serves the agent's endpoints. Every check is answered from the
// last observation; `?fresh` (the switchover's drain and announce steps)
// first waits, up to the deadline, for an observation that began after
// the request arrived.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	check := func(name string, pick func(RoleAnswer, *http.Request) (Verdict, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !readOnly(w, r) {
				return
			}
			if r.URL.Query().Has("fresh") {
				a.fresh(r.Context())
			}
			a.mu.Lock()
			a.counts.Checks++
			a.mu.Unlock()
			ans := a.Answer()
			v, err := pick(ans, r)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			code := http.StatusServiceUnavailable
			if v.OK {
				code = http.StatusOK
			}
			writeJSON(w, code, checkBody{Check: name, OK: v.OK, Reason: v.Reason, RoleAnswer: ans, Understudy: version.Info()})
		}
	}
	mux.HandleFunc("/primary", check("primary", func(a RoleAnswer, _ *http.Request) (Verdict, error) { return a.Primary, nil }))
	mux.HandleFunc("/health", check("health", func(a RoleAnswer, _ *http.Request) (Verdict, error) { return a.Health, nil }))
	mux.HandleFunc("/replica", check("replica", func(a RoleAnswer, r *http.Request) (Verdict, error) {
		q := r.URL.Query()
		if len(q["lag"]) > 1 {
			return Verdict{}, fmt.Errorf("lag= is given %d times: give it once", len(q["lag"]))
		}
		var lim *LagLimit
		if q.Has("lag") {
			var err error
			if lim, err = ParseLagLimit(q.Get("lag")); err != nil {
				return Verdict{}, err
			}
		}
		return ReplicaWithin(a, lim), nil
	}))
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		if r.URL.Query().Has("fresh") {
			a.fresh(r.Context())
		}
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(a.Metrics(time.Now())))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no such endpoint %q: the agent serves GET /primary, /replica[?lag=16MB|10s], /health, /status and /metrics", r.URL.Path)})
	})
	return mux
}

// readOnly refuses every method but GET and HEAD.
func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": r.Method + " is not served: the agent's endpoints are read-only (GET, HEAD)"})
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // reasons say "2 > 1"; the body is never HTML
	enc.SetIndent("", "  ")
	enc.Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// Status is the agent's /status now.
func (a *Agent) Status() Status {
	v, peers, d, _ := a.snapshot()
	ans := Answer(v, peers, a.lease(), time.Now())
	st := Status{View: v, Lease: a.lease(), Peers: peers, Details: d, Understudy: version.Info(), Checks: map[string]CheckOut{
		"primary": {ans.Primary.OK, ans.Primary.Reason},
		"replica": {ans.Replica.OK, ans.Replica.Reason},
		"health":  {ans.Health.OK, ans.Health.Reason},
	}}
	if a.cfg.Failover != nil {
		st.Failover = a.cfg.Failover.ReportJSON()
	}
	return st
}

// FreshPrimary asks the agent at base (http://host:port) for a fresh
// /primary answer: whether it is 200, and its reason.
func FreshPrimary(ctx context.Context, client *http.Client, base string) (bool, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/primary?fresh", nil)
	if err != nil {
		return false, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	var body checkBody
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return false, "", fmt.Errorf("%s/primary answered %s, not a check", base, resp.Status)
	}
	return resp.StatusCode == http.StatusOK, body.Reason, nil
}
