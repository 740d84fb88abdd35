package netutil

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The ports are distinct, bindable, and outside the ephemeral range the
// kernel gives outgoing connections (so none of those can take one).
func TestFreePortsBelowTheEphemeralRange(t *testing.T) {
	lo, hi := portWindow()
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < lo || p >= hi || seen[p] {
			t.Errorf("port %d: outside [%d, %d) or given twice (%v)", p, lo, hi, ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		l.Close()
	}
	// The window ends where the kernel's ephemeral range starts.
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		f := strings.Fields(string(b))
		if start, _ := strconv.Atoi(f[0]); hi > start {
			t.Errorf("window [%d, %d) reaches into the ephemeral range from %d", lo, hi, start)
		}
	}
}
