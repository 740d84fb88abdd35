// Package netutil has small network helpers.
package netutil

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FreePorts returns n TCP ports that are free on 127.0.0.1 right now,
// chosen at random below the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range; ip(7)). A port the kernel hands
// out for ":0" is one it also hands to outgoing connections, and on a busy
// machine (HAProxy checks every 100 ms, pgx, etcd) one of those takes it
// between this call and the server's bind: "address already in use".
// Below that range only another listener can take it.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo, hi := portWindow()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("finding a free local port: none free among 1000 tried in %d-%d", lo, hi)
		}
		p := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		ports = append(ports, p)
	}
	return ports, nil
}

// portWindow is [lo, hi): from 10000 up to the start of the ephemeral
// range (32768 by default on Linux), or 10000-30000 when it cannot be read.
func portWindow() (int, int) {
	lo, hi := 10000, 30000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	if start, err := strconv.Atoi(f[0]); err == nil && start > lo+1000 {
		hi = start
	}
	return lo, hi
}

// HostLock takes a machine-wide lock (an flock on a file under /run/lock)
// and returns its release. Tests that plug this host itself into a lab's
// switch take it: each such switch gives the host the same address
// (lab.NetNS.HostAddr), so two at once, in two test processes, would
// collide. The second waits for the first.
func HostLock(ctx context.Context, name string) (func(), error) {
	dir := "/run/lock"
	if _, err := os.Stat(dir); err != nil {
		dir = os.TempDir()
	}
	f, err := os.OpenFile(filepath.Join(dir, "understudy-"+name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("taking the machine-wide %s lock: %w", name, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("taking the machine-wide %s lock: %w", name, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
