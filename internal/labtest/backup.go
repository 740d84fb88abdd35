package labtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/faultproxy"
	"github.com/understudy-dev/understudy/internal/netutil"
	"github.com/understudy-dev/understudy/lab"
)

var buildGW sync.Mutex

// versityGW is the storage server's binary, built once per machine.
func versityGW(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	buildGW.Lock()
	gw, err := lab.BuildVersityGW(ctx, os.Stderr)
	buildGW.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

func enableBackup(t testing.TB, l *lab.Lab) {
	t.Helper()
	versityGW(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := l.BackupUp(ctx); err != nil {
		t.Fatal(err)
	}
}

// Store opens the lab's bucket.
func Store(t testing.TB, l *lab.Lab) *backup.S3 {
	t.Helper()
	s, err := l.BackupStore()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Key is the lab's backup key.
func Key(t testing.TB, l *lab.Lab) *backup.Key {
	t.Helper()
	k, err := l.BackupKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Agent runs the backup agent in this process until the test ends (its
// log goes to the lab's agent.log, shown when the test fails).
func Agent(t testing.TB, l *lab.Lab, tune func(*backup.AgentConfig)) *backup.Agent {
	t.Helper()
	return AgentOn(t, l, Store(t, l), tune)
}

// WaitBase waits for the archive to hold a base backup finished after since.
func WaitBase(t testing.TB, l *lab.Lab, since time.Time, timeout time.Duration) backup.BaseInfo {
	t.Helper()
	var got backup.BaseInfo
	WaitFor(t, timeout, "a base backup in the archive", func() bool {
		cat, err := backup.ReadCatalog(context.Background(), Store(t, l))
		if err != nil {
			return false
		}
		for _, b := range cat.Bases {
			if b.Finished.After(since) {
				got = b
				return true
			}
		}
		return false
	})
	return got
}

// S3 is an S3-compatible server (versitygw) a test started on its own.
type S3 struct {
	Endpoint, AccessKey, SecretKey, Bucket string
}

// StartS3 starts versitygw on addr (host:port) over a temporary directory,
// with a bucket and fresh credentials (in its environment, never argv), and
// stops it, by its PID, when the test ends.
func StartS3(t testing.TB, addr, bucket string) S3 {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, bucket), 0o700); err != nil {
		t.Fatal(err)
	}
	s := S3{Endpoint: "http://" + addr, AccessKey: "test" + randHex(4), SecretKey: randHex(16), Bucket: bucket}
	startS3(t, addr, dir, s)
	return s
}

func startS3(t testing.TB, addr, dir string, s S3) {
	t.Helper()
	gw := versityGW(t)
	cmd := exec.Command(gw, "--port", addr, "--quiet", "posix", dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("versitygw on %s exited: %s", addr, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not answer on %s within 30 s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// UpWithFaultyStorage is Up with backups whose storage sits behind a fault
// proxy: versitygw listens on a port of its own and the proxy on the lab's
// storage port, so all that reads or writes the lab's bucket (the agent,
// status, check, restore) goes through the proxy. Both stop when the test
// ends.
func UpWithFaultyStorage(t testing.TB, o Options) (*lab.Lab, *faultproxy.Proxy) {
	t.Helper()
	o.Backup = false
	l := Up(t, o)
	ports, err := netutil.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.EnableBackup(ports[0]); err != nil {
		t.Fatal(err)
	}
	ak, sk, err := l.BackupCredentials()
	if err != nil {
		t.Fatal(err)
	}
	cfg := l.S3Config()
	if err := os.MkdirAll(filepath.Join(l.StorageDir(), cfg.Bucket), 0o700); err != nil {
		t.Fatal(err)
	}
	gwAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	startS3(t, gwAddr, l.StorageDir(), S3{Endpoint: "http://" + gwAddr, AccessKey: ak, SecretKey: sk, Bucket: cfg.Bucket})
	p, err := faultproxy.Start(fmt.Sprintf("127.0.0.1:%d", ports[0]), "http://"+gwAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := Store(t, l).EnsureBucket(ctx, cfg.Region); err != nil {
		t.Fatal(err)
	}
	return l, p
}

// AgentOn is Agent with a store of the test's choosing (a shorter stall
// time, say).
func AgentOn(t testing.TB, l *lab.Lab, store backup.Store, tune func(*backup.AgentConfig)) *backup.Agent {
	t.Helper()
	logf, err := os.OpenFile(l.ServiceLog("agent"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cfg := l.AgentConfig(logf)
	if tune != nil {
		tune(&cfg)
	}
	a := backup.NewAgent(cfg, store, Key(t, l))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		logf.Close()
	})
	return a
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
