package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Store is object storage, as the backups use it. Keys are relative to the
// store's prefix.
type Store interface {
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	List(ctx context.Context, prefix string) ([]Object, error)
	Delete(ctx context.Context, key string) error
}

// Object is one listed object.
type Object struct {
	Key      string
	Size     int64
	Modified time.Time
}

// ErrNotFound: no object has that key.
var ErrNotFound = errors.New("no such object")

// S3Config says where the bucket is. Credentials are not in it: they come
// from secrets (BACKUP_S3_ACCESS_KEY_ID, BACKUP_S3_SECRET_ACCESS_KEY).
type S3Config struct {
	Endpoint  string `json:"endpoint"` // https://s3.eu-central-1.amazonaws.com, http://10.211.7.1:7070, ...
	Region    string `json:"region,omitempty"`
	Bucket    string `json:"bucket"`
	Prefix    string `json:"prefix,omitempty"`
	PathStyle bool   `json:"path_style,omitempty"` // MinIO, versitygw, Ceph; R2, B2, Hetzner and AWS take either
}

// Validate checks the configuration without contacting anything.
func (c S3Config) Validate() error {
	u, err := url.Parse(c.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("backup endpoint %q: want a URL such as https://s3.us-east-1.amazonaws.com or http://10.0.0.5:9000 (scheme and host, no path)", c.Endpoint)
	}
	if c.Bucket == "" || strings.ContainsAny(c.Bucket, "/ ") {
		return fmt.Errorf("backup bucket %q: want a bucket name (no slashes); the prefix goes in --backup-prefix", c.Bucket)
	}
	if strings.HasPrefix(c.Prefix, "/") || strings.Contains(c.Prefix, "..") {
		return fmt.Errorf("backup prefix %q: want a relative path such as myapp/production", c.Prefix)
	}
	return nil
}

// S3 is a Store on an S3-compatible service, through minio-go.
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
	where  string
	stall  *stallTransport
}

// DefaultStall: a request to the storage that makes no progress this long
// (no response, no byte of its body sent or read) is given up.
const DefaultStall = 30 * time.Second

var _ Store = (*S3)(nil)

// OpenS3 makes a client; it contacts nothing until used.
func OpenS3(cfg S3Config, accessKey, secretKey string) (*S3, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if accessKey == "" || secretKey == "" {
		return nil, errors.New("no storage credentials: set BACKUP_S3_ACCESS_KEY_ID and BACKUP_S3_SECRET_ACCESS_KEY in .kamal/secrets (as references to your password manager)")
	}
	u, _ := url.Parse(cfg.Endpoint)
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	st := &stallTransport{base: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second, MaxIdleConnsPerHost: 8}}
	st.stall.Store(int64(DefaultStall))
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(accessKey, secretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    st,
		// Few retries inside one call: the callers retry on their own
		// schedule, and a call must end within its deadline.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("backup storage %s: %w", cfg.Endpoint, err)
	}
	p := strings.Trim(cfg.Prefix, "/")
	if p != "" {
		p += "/"
	}
	return &S3{c: c, bucket: cfg.Bucket, prefix: p, where: cfg.Endpoint + "/" + cfg.Bucket + "/" + p, stall: st}, nil
}

// SetStall changes how long a request may make no progress (DefaultStall).
func (s *S3) SetStall(d time.Duration) { s.stall.stall.Store(int64(d)) }

// StallError: a request to the storage made no progress for Idle.
type StallError struct {
	What string
	Idle time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("the storage made no progress for %s (%s)", e.Idle, e.What)
}

// stallTransport gives up a request that makes no progress for its stall
// time: no response headers, and no byte of the request body sent or of the
// response body read. A slow but moving transfer goes on; a hung one ends
// with a StallError, whatever the caller's own deadline.
type stallTransport struct {
	base  http.RoundTripper
	stall atomic.Int64
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	d := time.Duration(t.stall.Load())
	ctx, cancel := context.WithCancelCause(req.Context())
	w := &stallWatch{cancel: cancel, err: &StallError{What: "waiting on " + req.Method + " " + req.URL.Path, Idle: d}, d: d}
	w.timer = time.AfterFunc(d, w.fire)
	req = req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &stallBody{rc: req.Body, w: w}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		w.timer.Stop()
		if cause := context.Cause(ctx); cause != nil && errors.As(cause, new(*StallError)) {
			err = cause
		}
		cancel(nil)
		return nil, err
	}
	w.kick()
	resp.Body = &stallBody{rc: resp.Body, w: w, close: func() { w.timer.Stop(); cancel(nil) }}
	return resp, nil
}

type stallWatch struct {
	timer  *time.Timer
	cancel context.CancelCauseFunc
	err    *StallError
	d      time.Duration
}

func (w *stallWatch) fire() { w.cancel(w.err) }
func (w *stallWatch) kick() { w.timer.Reset(w.d) }

type stallBody struct {
	rc    io.ReadCloser
	w     *stallWatch
	close func()
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.w.kick()
	}
	if err != nil && err != io.EOF && !b.w.timer.Stop() {
		// The timer fired: say the storage stalled rather than "canceled".
		return n, b.w.err
	}
	return n, err
}

func (b *stallBody) Close() error {
	err := b.rc.Close()
	if b.close != nil {
		b.close()
	}
	return err
}

// Where names the bucket and prefix, for messages.
func (s *S3) Where() string { return s.where }

func (s *S3) wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "NoSuchKey":
			return fmt.Errorf("%s %s: %w", op, key, ErrNotFound)
		case "NoSuchBucket":
			return fmt.Errorf("%s %s: bucket %s does not exist: create it, or fix --backup-bucket", op, key, s.bucket)
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
			return fmt.Errorf("%s %s: the storage refused the credentials (%s): check BACKUP_S3_ACCESS_KEY_ID and BACKUP_S3_SECRET_ACCESS_KEY, and that the key may write to %s", op, key, er.Code, s.where)
		}
		return fmt.Errorf("%s %s in %s: %s (%s)", op, key, s.where, er.Message, er.Code)
	}
	return fmt.Errorf("%s %s in %s: %w", op, key, s.where, err)
}

// Put stores an object; size -1 streams it in 16 MiB parts (bounded memory).
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	opts := minio.PutObjectOptions{PartSize: 16 << 20, ContentType: "application/octet-stream"}
	if size < 0 { // a stream: two parts in flight, 32 MiB of buffers at most
		opts.ConcurrentStreamParts, opts.NumThreads = true, 2
	}
	_, err := s.c.PutObject(ctx, s.bucket, s.prefix+key, r, size, opts)
	return s.wrap("storing", key, err)
}

// Get opens an object; a missing one is ErrNotFound. It is one GET, so an
// object replaced while it is read (the agent's .partial, every 500 ms) is
// read whole as it was, old or new (the high-level GetObject would stat it
// first and then fail its read with PreconditionFailed).
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, _, _, err := minio.Core{Client: s.c}.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.wrap("reading", key, err)
	}
	return &s3Body{rc: rc, s: s, key: key}, nil
}

// s3Body names the object and the bucket in a read error.
type s3Body struct {
	rc  io.ReadCloser
	s   *S3
	key string
}

func (b *s3Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = b.s.wrap("reading", b.key, err)
	}
	return n, err
}

func (b *s3Body) Close() error { return b.rc.Close() }

// List lists every object under prefix, keys relative to the store's prefix.
func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, s.wrap("listing", prefix, o.Err)
		}
		out = append(out, Object{Key: strings.TrimPrefix(o.Key, s.prefix), Size: o.Size, Modified: o.LastModified})
	}
	return out, nil
}

// Delete removes an object (a missing one is fine).
func (s *S3) Delete(ctx context.Context, key string) error {
	return s.wrap("deleting", key, s.c.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{}))
}

// EnsureBucket creates the bucket when it is missing (the lab's storage).
func (s *S3) EnsureBucket(ctx context.Context, region string) error {
	ok, err := s.c.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.wrap("checking bucket", s.bucket, err)
	}
	if ok {
		return nil
	}
	return s.wrap("creating bucket", s.bucket, s.c.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: region}))
}

// Object keys. Sealed (compressed, encrypted) objects: wal/ and base/*/data.
const (
	walDir    = "wal/"
	baseDir   = "base/"
	statusKey = "agent/status.json"
	drillDir  = "drills/"
)

func walKey(name string) string    { return walDir + name }
func baseDataKey(id string) string { return path.Join(baseDir, id, "data.tar.zst.age") }
func baseInfoKey(id string) string { return path.Join(baseDir, id, "info.json") }
func drillKey(id string) string    { return drillDir + id + ".json" }

const partialSuffix = ".partial"
