package faultproxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Each fault as a client sees it, in front of a server that echoes what it
// is sent; and with the fault cleared, requests pass unchanged.
func TestFaults(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Host", r.Host)
		w.Write(append([]byte(r.Method+" "+r.URL.Path+" "), b...))
	}))
	defer echo.Close()
	p, err := Start("127.0.0.1:0", echo.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	base := "http://" + p.Addr()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	do := func(method, path string, body []byte) (*http.Response, string, error) {
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}

	resp, body, err := do("PUT", "/bucket/key", []byte("hello"))
	if err != nil || resp.StatusCode != 200 || body != "PUT /bucket/key hello" || resp.Header.Get("X-Host") != p.Addr() {
		t.Fatalf("no fault: %v %v %q (host %q)", err, resp, body, resp.Header.Get("X-Host"))
	}

	p.Set(Fault{Kind: Slow, Delay: 300 * time.Millisecond})
	start := time.Now()
	if _, body, err := do("GET", "/bucket/key", nil); err != nil || body != "GET /bucket/key " || time.Since(start) < 300*time.Millisecond {
		t.Errorf("slow: %v %q after %s", err, body, time.Since(start))
	}

	p.Set(Fault{Kind: Status, Code: 503})
	if resp, body, err := do("PUT", "/bucket/key", []byte("x")); err != nil || resp.StatusCode != 503 || !strings.Contains(body, "<Code>ServiceUnavailable</Code>") {
		t.Errorf("503: %v %v %q", err, resp, body)
	}
	p.Set(Fault{Kind: Status, Code: 500})
	if resp, body, err := do("GET", "/bucket/key", nil); err != nil || resp.StatusCode != 500 || !strings.Contains(body, "<Code>InternalError</Code>") {
		t.Errorf("500: %v %v %q", err, resp, body)
	}
	p.Set(Fault{Kind: Deny})
	if resp, body, err := do("GET", "/bucket/key", nil); err != nil || resp.StatusCode != 403 || !strings.Contains(body, "<Code>InvalidAccessKeyId</Code>") {
		t.Errorf("deny: %v %v %q", err, resp, body)
	}

	p.Set(Fault{Kind: Reset})
	if _, _, err := do("GET", "/bucket/key", nil); err == nil || !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "EOF") {
		t.Errorf("reset: %v", err)
	}

	// A small request passes a hang; a large upload is held, unanswered,
	// until the fault is lifted, and then its connection closes.
	p.Set(Fault{Kind: Hang, HangAfter: 1024})
	if _, body, err := do("PUT", "/bucket/small", []byte("tiny")); err != nil || body != "PUT /bucket/small tiny" {
		t.Errorf("a small upload under hang: %v %q", err, body)
	}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "PUT", base+"/bucket/big", bytes.NewReader(make([]byte, 8<<20)))
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		got <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for p.Hanging() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-got:
		t.Fatalf("the large upload ended under hang: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	p.Clear()
	select {
	case err := <-got:
		if err == nil {
			t.Errorf("the hung upload got an answer once lifted; want its connection closed")
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the hung upload did not end when the fault was lifted")
	}
	// Frozen: even a small read is held, unanswered, until lifted.
	p.Set(Fault{Kind: Freeze})
	frozen := make(chan error, 1)
	go func() { _, _, err := do("GET", "/bucket/key", nil); frozen <- err }()
	select {
	case err := <-frozen:
		t.Fatalf("a read answered while frozen: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	p.Clear()
	select {
	case err := <-frozen:
		if err == nil {
			t.Errorf("the frozen read got an answer once lifted; want its connection closed")
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the frozen read did not end when the fault was lifted")
	}
	if _, body, err := do("PUT", "/bucket/key", []byte("again")); err != nil || body != "PUT /bucket/key again" {
		t.Errorf("cleared: %v %q", err, body)
	}
	if p.Faulted() < 7 {
		t.Errorf("faulted count %d", p.Faulted())
	}
}
