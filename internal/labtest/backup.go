package labtest

import (
	"context"

	"os"
	"sync"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/lab"
)

var buildGW sync.Mutex

func enableBackup(t testing.TB, l *lab.Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	buildGW.Lock()
	_, err := lab.BuildVersityGW(ctx, os.Stderr)
	buildGW.Unlock()
	if err != nil {
		t.Fatal(err)
	}
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
	logf, err := os.OpenFile(l.ServiceLog("agent"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cfg := l.AgentConfig(logf)
	if tune != nil {
		tune(&cfg)
	}
	a := backup.NewAgent(cfg, Store(t, l), Key(t, l))
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
