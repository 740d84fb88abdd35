// Package faultproxy is an HTTP proxy for tests: it stands in front of a
// real S3 server and breaks it on demand, the way object storage breaks in
// production: answers that take seconds, 500 and 503 errors, credentials
// refused, uploads that hang halfway, connections reset.
//
// It works at the HTTP level (net/http and httputil.ReverseProxy, nothing
// else), so it can answer with an S3 error document, which a TCP-level
// proxy (toxiproxy, tc/iptables) cannot; and it needs no root and no
// network namespace. See docs/backups.md.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a kind of fault.
type Kind int

const (
	None   Kind = iota
	Slow        // each request waits Delay before it is passed on
	Status      // each request is answered with Code (500, 503) and an S3 error document
	Deny        // each request is refused: 403 InvalidAccessKeyId, as for a revoked key
	Hang        // an upload larger than HangAfter stops being read after HangAfter bytes, and is never answered
	Reset       // each connection is reset (TCP RST) as soon as a request arrives
	Freeze      // no request is answered (a storage stopped with SIGSTOP, or a black hole) until lifted
)

func (k Kind) String() string {
	return [...]string{"none", "slow", "status", "deny", "hang", "reset", "freeze"}[k]
}

// Fault is what the proxy does to the requests it sees.
type Fault struct {
	Kind      Kind
	Delay     time.Duration // Slow
	Code      int           // Status: 500 or 503
	HangAfter int64         // Hang: bytes of an upload read before it hangs
}

func (f Fault) String() string {
	switch f.Kind {
	case Slow:
		return fmt.Sprintf("slow (%s per request)", f.Delay)
	case Status:
		return fmt.Sprintf("answering %d", f.Code)
	case Deny:
		return "refusing the credentials"
	case Hang:
		return fmt.Sprintf("hanging uploads after %d bytes", f.HangAfter)
	case Reset:
		return "resetting connections"
	case Freeze:
		return "answering nothing"
	}
	return "no fault"
}

// Proxy is a running fault proxy.
type Proxy struct {
	ln   net.Listener
	srv  *http.Server
	rp   *httputil.ReverseProxy
	done chan struct{}

	mu       sync.Mutex
	fault    Fault
	lifted   chan struct{} // closed when the fault is replaced: hung requests end
	seen     atomic.Int64
	faulted  atomic.Int64
	hanging  atomic.Int64
	nextID   int64
	inflight map[int64]string // request id → "METHOD /path"
}

// Start listens on addr (host:port) and passes requests to target (an
// http:// URL).
func Start(addr, target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("fault proxy target %q: want http://host:port", target)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fault proxy: %w", err)
	}
	p := &Proxy{ln: ln, lifted: make(chan struct{}), done: make(chan struct{}), inflight: map[int64]string{}}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // the request's signature covers the Host it was sent to
		},
		// Bodies as they are: no gzip added or taken off.
		Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 16},
		// Stream uploads and downloads through without buffering.
		FlushInterval: -1,
		// A client that gives up mid-request is what the faults are for.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go func() { p.srv.Serve(ln); close(p.done) }()
	return p, nil
}

// Addr is where the proxy listens.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set replaces the fault. Requests held by the previous one (Hang, Slow)
// end: a hung upload's connection is closed.
func (p *Proxy) Set(f Fault) {
	p.mu.Lock()
	p.fault = f
	close(p.lifted)
	p.lifted = make(chan struct{})
	p.mu.Unlock()
}

// Clear lifts the fault.
func (p *Proxy) Clear() { p.Set(Fault{}) }

// Seen is how many requests reached the proxy; Faulted how many a fault
// touched; Hanging how many uploads are being held now.
func (p *Proxy) Seen() int64    { return p.seen.Load() }
func (p *Proxy) Faulted() int64 { return p.faulted.Load() }
func (p *Proxy) Hanging() int64 { return p.hanging.Load() }

// InFlight lists the requests being served now ("PUT /bucket/key").
func (p *Proxy) InFlight() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.inflight {
		out = append(out, r)
	}
	return out
}

// Close stops the proxy and every request it holds.
func (p *Proxy) Close() error {
	p.Set(Fault{})
	err := p.srv.Close()
	<-p.done
	return err
}

func (p *Proxy) current() (Fault, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault, p.lifted
}

// s3Error writes an error document as S3 does (the REST error responses
// of the Amazon S3 API reference).
func s3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-amz-request-id", "faultproxy")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>`, code, msg, r.URL.Path)
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.seen.Add(1)
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	p.inflight[id] = r.Method + " " + r.URL.Path
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.inflight, id)
		p.mu.Unlock()
	}()
	f, lifted := p.current()
	switch f.Kind {
	case Slow:
		p.faulted.Add(1)
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-lifted:
			t.Stop()
		case <-r.Context().Done():
			t.Stop()
			return
		}
	case Status:
		p.faulted.Add(1)
		io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		switch f.Code {
		case http.StatusServiceUnavailable:
			s3Error(w, r, f.Code, "ServiceUnavailable", "Please reduce your request rate.")
		default:
			s3Error(w, r, f.Code, "InternalError", "We encountered an internal error. Please try again.")
		}
		return
	case Deny:
		p.faulted.Add(1)
		io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		s3Error(w, r, http.StatusForbidden, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
		return
	case Hang:
		if r.ContentLength > f.HangAfter || r.ContentLength < 0 && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
			p.faulted.Add(1)
			p.hanging.Add(1)
			defer p.hanging.Add(-1)
			io.CopyN(io.Discard, r.Body, f.HangAfter)
			<-lifted // read no more and answer nothing until the fault goes
			closeConn(w, false)
			return
		}
	case Reset:
		p.faulted.Add(1)
		closeConn(w, true)
		return
	case Freeze:
		p.faulted.Add(1)
		p.hanging.Add(1)
		defer p.hanging.Add(-1)
		<-lifted // read nothing more and answer nothing until the fault goes
		closeConn(w, false)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// closeConn closes the request's connection without an answer; with
// reset, as a TCP RST (SO_LINGER 0).
func closeConn(w http.ResponseWriter, reset bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(errors.New("faultproxy: the server does not allow hijacking"))
	}
	c, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok && reset {
		tc.SetLinger(0)
	}
	c.Close()
}
