package backup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// MemStore is a Store in memory: for tests of what runs on a Store, held to
// the same contract as S3 (store_test.go runs one suite against both).
type MemStore struct {
	mu   sync.Mutex
	objs map[string]memObject
	now  func() time.Time
}

type memObject struct {
	data     []byte
	modified time.Time
}

var _ Store = (*MemStore)(nil)

// NewMemStore makes an empty store.
func NewMemStore() *MemStore { return &MemStore{objs: map[string]memObject{}, now: time.Now} }

// Put stores a copy of what r gives (size -1: until EOF; otherwise exactly
// size bytes, as S3 wants).
func (m *MemStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	if size >= 0 && int64(buf.Len()) != size {
		return fmt.Errorf("storing %s: %d bytes given for a size of %d", key, buf.Len(), size)
	}
	m.mu.Lock()
	m.objs[key] = memObject{data: buf.Bytes(), modified: m.now().UTC()}
	m.mu.Unlock()
	return nil
}

// Get opens a copy of an object; a missing one is ErrNotFound.
func (m *MemStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	m.mu.Lock()
	o, ok := m.objs[key]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("reading %s: %w", key, ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(o.data)), nil
}

// List lists the objects under prefix, by key.
func (m *MemStore) List(ctx context.Context, prefix string) ([]Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listing %s: %w", prefix, err)
	}
	m.mu.Lock()
	var out []Object
	for k, o := range m.objs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, Object{Key: k, Size: int64(len(o.data)), Modified: o.modified})
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes an object (a missing one is fine).
func (m *MemStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	m.mu.Lock()
	delete(m.objs, key)
	m.mu.Unlock()
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
