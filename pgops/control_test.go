package pgops_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/understudy-dev/understudy/internal/pgtest"
	. "github.com/understudy-dev/understudy/pgops"
)

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]LSN{"0/0": 0, "0/16B3748": 0x16B3748, "1/0": 1 << 32, " A/FF ": 0xA000000FF} {
		got, err := ParseLSN(in)
		if err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "x/1", "1/", "100000000/0", "0/100000000"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) gave no error", bad)
		}
	}
	if s := LSN(0xA000000FF).String(); s != "A/FF" {
		t.Errorf("String() = %q", s)
	}
}

// The binary reader agrees with PostgreSQL's own pg_controldata on a real
// cluster, running and cleanly stopped, and refuses a damaged file.
func TestParseControlFileMatchesPgControldata(t *testing.T) {
	e := pgtest.New(t)
	dir := e.Dir("ctl")
	e.InitDB(dir)
	check := func(wantState string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "global", "pg_control"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseControlFile(b)
		if err != nil {
			t.Fatal(err)
		}
		c := e.Command(filepath.Join(e.Bin, "pg_controldata"), dir)
		c.Env = append(c.Env, "LC_ALL=C")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("pg_controldata: %v\n%s", err, out)
		}
		want, err := ParseControlData(string(out))
		if err != nil {
			t.Fatal(err)
		}
		if got != want || got.State != wantState {
			t.Fatalf("from the file: %+v\npg_controldata:  %+v (want state %q)", got, want, wantState)
		}
		return b
	}
	check("shut down")
	port := pgtest.FreePort(t)
	e.Start(dir, fmt.Sprintf("-c port=%d -c listen_addresses='' -c unix_socket_directories=%s", port, dir))
	check("in production")
	e.Stop(dir)
	b := check("shut down")
	b[33] ^= 0x40 // inside checkPoint
	if _, err := ParseControlFile(b); !errors.Is(err, ErrControlFileCRC) {
		t.Fatalf("a damaged file gave %v, want ErrControlFileCRC", err)
	}
	if _, err := ParseControlFile(b[:40]); err == nil {
		t.Fatal("a truncated file was accepted")
	}
}

// LSNs travel in JSON as PostgreSQL prints them; numbers (what objects
// written before held) are still read.
func TestLSNJSON(t *testing.T) {
	b, err := json.Marshal(struct {
		L LSN `json:"l"`
		Z LSN `json:"z,omitempty"`
	}{L: 0x1_0000_0A28})
	if err != nil || string(b) != `{"l":"1/A28"}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	var v struct{ A, B LSN }
	if err := json.Unmarshal([]byte(`{"A":"1/A28","B":4294969896}`), &v); err != nil || v.A != 0x1_0000_0A28 || v.B != 0x1_0000_0A28 {
		t.Fatalf("unmarshal: %+v %v", v, err)
	}
	for _, bad := range []string{`{"A":"1-A28"}`, `{"A":true}`, `{"A":-1}`} {
		if err := json.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("%s read without an error", bad)
		}
	}
}
