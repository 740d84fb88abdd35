package debimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func TestFilesLayerIsDeterministicWithParentsFirst(t *testing.T) {
	files := []File{{Path: "/app/writers/b.rb", Mode: 0o644, Body: []byte("b")}, {Path: "/app/bin/x", Mode: 0o755, Body: []byte("x")}}
	one, err := filesLayer(files)
	if err != nil {
		t.Fatal(err)
	}
	two, _ := filesLayer([]File{files[1], files[0]})
	if !bytes.Equal(one, two) {
		t.Error("the same files in another order give another layer")
	}
	var names []string
	tr := tar.NewReader(bytes.NewReader(one))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "app/bin/x" && h.Mode != 0o755 {
			t.Errorf("mode %o", h.Mode)
		}
	}
	want := []string{"app/", "app/bin/", "app/bin/x", "app/writers/", "app/writers/b.rb"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q", names, want)
		}
	}
	if _, err := filesLayer([]File{{Path: "relative", Body: nil}}); err == nil {
		t.Error("a relative path was accepted")
	}
}

func TestKeys(t *testing.T) {
	r := Recipe{Name: "app", Tag: "a:test", Suite: "bookworm", Packages: []string{"ruby", "nodejs"}, Files: []File{{Path: "/a", Body: []byte("1")}}}
	same := r
	same.Packages = []string{"nodejs", "ruby"}
	if r.baseKey() != same.baseKey() || r.imageKey() != same.imageKey() {
		t.Error("package order changes the keys")
	}
	other := r
	other.Files = []File{{Path: "/a", Body: []byte("2")}}
	if other.baseKey() != r.baseKey() || other.imageKey() == r.imageKey() {
		t.Error("a file's content must change the image key and only it")
	}
	suite := r
	suite.Suite = "trixie"
	if suite.baseKey() == r.baseKey() {
		t.Error("the suite must change the base key")
	}
}

// TestArchiveLayout: `docker load`'s input: config, one directory per
// layer named by its diff ID, a manifest naming them in order.
func TestArchiveLayout(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.tar")
	var bb bytes.Buffer
	tw := tar.NewWriter(&bb)
	tw.WriteHeader(&tar.Header{Name: "etc/", Mode: 0o755, Typeflag: tar.TypeDir})
	tw.Close()
	os.WriteFile(base, bb.Bytes(), 0o644)
	top, _ := filesLayer([]File{{Path: "/app/x", Mode: 0o644, Body: []byte("x")}})
	r := Recipe{Tag: "understudy-app:test", Suite: "bookworm", Env: []string{"LANG=C.UTF-8"}, WorkingDir: "/app"}
	out := filepath.Join(dir, "image.tar")
	if err := writeArchive(r, base, top, out); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(out)
	defer f.Close()
	entries := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		entries[h.Name] = b
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(entries["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest: %v %s", err, entries["manifest.json"])
	}
	m := manifest[0]
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	if len(m.Layers) != 2 || m.Layers[0] != sum(bb.Bytes())+"/layer.tar" || m.Layers[1] != sum(top)+"/layer.tar" || m.RepoTags[0] != r.Tag {
		t.Fatalf("manifest %+v", m)
	}
	var cfg struct {
		Config map[string]any
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(entries[m.Config], &cfg); err != nil || m.Config != sum(entries[m.Config])+".json" {
		t.Fatalf("config %s: %v", m.Config, err)
	}
	if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[1] != "sha256:"+sum(top) || cfg.Config["WorkingDir"] != "/app" {
		t.Errorf("config: %+v", cfg)
	}
	if !bytes.Equal(entries[m.Layers[1]], top) {
		t.Error("the top layer is not stored as given")
	}
}

func TestOnceMakesOnceUnderConcurrency(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "thing")
	var made atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := Once(path, func() error {
				made.Add(1)
				return os.WriteFile(path, []byte("x"), 0o644)
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if made.Load() != 1 {
		t.Errorf("made %d times", made.Load())
	}
}
