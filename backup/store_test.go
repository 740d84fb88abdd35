package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/internal/labtest"
	"github.com/understudy-dev/understudy/internal/netutil"
)

// One contract for every Store: what the agent, the catalogue and restore
// rely on. It runs against the in-memory store and against a real S3
// server (versitygw).
func TestStoreContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		storeContract(t, backup.NewMemStore())
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		storeContract(t, s3Store(t, "contract/run"))
	})
}

// s3Store is a fresh versitygw with a bucket, as a Store under prefix.
func s3Store(t *testing.T, prefix string) *backup.S3 {
	t.Helper()
	ports, err := netutil.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	srv := labtest.StartS3(t, fmt.Sprintf("127.0.0.1:%d", ports[0]), "contract")
	s, err := backup.OpenS3(backup.S3Config{Endpoint: srv.Endpoint, Region: "us-east-1", Bucket: srv.Bucket, Prefix: prefix, PathStyle: true}, srv.AccessKey, srv.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.EnsureBucket(ctx, "us-east-1"); err != nil {
		t.Fatal(err)
	}
	return s
}

func storeContract(t *testing.T, s backup.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	get := func(key string) ([]byte, error) {
		t.Helper()
		r, err := s.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	put := func(key, v string) {
		t.Helper()
		if err := s.Put(ctx, key, strings.NewReader(v), int64(len(v))); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
	}
	keys := func(prefix string) []string {
		t.Helper()
		objs, err := s.List(ctx, prefix)
		if err != nil {
			t.Fatalf("List %s: %v", prefix, err)
		}
		var out []string
		for _, o := range objs {
			out = append(out, o.Key)
		}
		return out
	}

	// Nothing there: Get is ErrNotFound, Delete is fine, List is empty.
	if _, err := get("wal/missing"); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Get of a missing key: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "wal/missing"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	if got := keys(""); len(got) != 0 {
		t.Errorf("a new store lists %v", got)
	}

	// Put then Get gives the bytes back; List gives size and a time.
	before := time.Now().Add(-time.Minute)
	put("base/1/info.json", `{"id":"1"}`)
	if b, err := get("base/1/info.json"); err != nil || string(b) != `{"id":"1"}` {
		t.Errorf("Get after Put: %q, %v", b, err)
	}
	objs, err := s.List(ctx, "base/")
	if err != nil || len(objs) != 1 || objs[0].Key != "base/1/info.json" || objs[0].Size != 10 || objs[0].Modified.Before(before) || objs[0].Modified.After(time.Now().Add(time.Minute)) {
		t.Errorf("List after Put: %+v, %v", objs, err)
	}
	// An overwrite replaces the object.
	put("base/1/info.json", `{"id":"1","v":2}`)
	if b, _ := get("base/1/info.json"); string(b) != `{"id":"1","v":2}` {
		t.Errorf("Get after an overwrite: %q", b)
	}
	if got := keys("base/"); len(got) != 1 {
		t.Errorf("an overwrite lists %v", got)
	}

	// A stream of unknown size (a base backup), larger than one part.
	big := make([]byte, 20<<20+17)
	rand.Read(big)
	if err := s.Put(ctx, "base/1/data.tar.zst.age", bytes.NewReader(big), -1); err != nil {
		t.Fatalf("Put of a stream: %v", err)
	}
	if b, err := get("base/1/data.tar.zst.age"); err != nil || !bytes.Equal(b, big) {
		t.Errorf("Get of the stream: %d bytes (want %d), equal %v, %v", len(b), len(big), bytes.Equal(b, big), err)
	}

	// An object replaced while it is read (the agent's .partial) reads
	// whole: all of the old bytes or all of the new, never a mix or an error.
	old, repl := bytes.Repeat([]byte("a"), 8<<20), bytes.Repeat([]byte("b"), 8<<20)
	if err := s.Put(ctx, "wal/p.partial", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	r, err := s.Get(ctx, "wal/p.partial")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "wal/p.partial", bytes.NewReader(repl), int64(len(repl))); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !(bytes.Equal(got, old) || bytes.Equal(got, repl)) {
		t.Errorf("reading an object replaced meanwhile: %d bytes, %v", len(got), err)
	}

	// List is by prefix, in key order, keys as they were given.
	for _, k := range []string{"wal/a/2", "wal/a/1", "wal/ab/3", "wal/b/4"} {
		put(k, k)
	}
	if got := strings.Join(keys("wal/a/"), " "); got != "wal/a/1 wal/a/2" {
		t.Errorf("List wal/a/: %s", got)
	}
	if got := strings.Join(keys("wal/a"), " "); got != "wal/a/1 wal/a/2 wal/ab/3" {
		t.Errorf("List wal/a: %s", got)
	}
	// More objects than one page of a listing (S3 pages at 1000).
	for i := 0; i < 1001; i++ {
		put(fmt.Sprintf("many/%04d", i), "x")
	}
	if got := keys("many/"); len(got) != 1001 || got[0] != "many/0000" || got[1000] != "many/1000" {
		t.Errorf("List many/: %d keys", len(got))
	}

	// Delete removes it from Get and List.
	if err := s.Delete(ctx, "wal/a/1"); err != nil {
		t.Fatal(err)
	}
	if _, err := get("wal/a/1"); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	if got := strings.Join(keys("wal/a/"), " "); got != "wal/a/2" {
		t.Errorf("List after Delete: %s", got)
	}

	// A call whose context has ended fails and stores nothing.
	done, stop := context.WithCancel(ctx)
	stop()
	if err := s.Put(done, "wal/late", strings.NewReader("x"), 1); err == nil {
		t.Errorf("Put with an ended context: no error")
	}
	if _, err := get("wal/late"); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Put with an ended context stored something: %v", err)
	}
}

// A storage that accepts connections and never answers: a call ends with
// the stall error (what it waited for), not when the caller's patience
// runs out, and well before a caller's longer deadline.
func TestS3GivesUpAHungStorage(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // read nothing, answer nothing
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for _, c := range held {
			c.Close()
		}
	})
	s, err := backup.OpenS3(backup.S3Config{Endpoint: "http://" + ln.Addr().String(), Region: "us-east-1", Bucket: "hung", PathStyle: true}, "ak", "sk")
	if err != nil {
		t.Fatal(err)
	}
	s.SetStall(time.Second)
	for name, call := range map[string]func(ctx context.Context) error{
		"put": func(ctx context.Context) error {
			return s.Put(ctx, "wal/x", bytes.NewReader(make([]byte, 4<<20)), 4<<20)
		},
		"list": func(ctx context.Context) error { _, err := s.List(ctx, "wal/"); return err },
		"get":  func(ctx context.Context) error { _, err := s.Get(ctx, "wal/x"); return err },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			err := call(ctx)
			took := time.Since(start)
			var se *backup.StallError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), "no progress for 1s") {
				t.Errorf("%s on a hung storage: %v, want the stall error", name, err)
			}
			// A few attempts of a second each (minio-go retries), never
			// the caller's minute.
			if took > 15*time.Second {
				t.Errorf("%s on a hung storage took %s", name, took)
			}
			t.Logf("%s: %s after %.1f s", name, err, took.Seconds())
		})
	}
}
