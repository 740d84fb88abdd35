package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"
)

// debootstrap is told sid's script for every suite (bookworm's has none
// for forky), and always a mirror, since the script comes after it.
func TestDebootstrapArgs(t *testing.T) {
	got := strings.Join(debootstrapArgs("forky", "/r", ""), " ")
	if !strings.HasPrefix(got, "--variant=minbase forky /r http://deb.debian.org/debian") {
		t.Errorf("debootstrap %s", got)
	}
	if got := strings.Join(debootstrapArgs("trixie", "/r", "http://mirror.example/debian"), " "); !strings.HasPrefix(got, "--variant=minbase trixie /r http://mirror.example/debian") {
		t.Errorf("debootstrap %s", got)
	}
	if _, err := ImageFor(16); err == nil {
		t.Error("an image for 16, which no Debian release ships")
	}
	for _, m := range Majors() {
		a, _ := ImageFor(m)
		if a.cacheName() == "" || !strings.HasPrefix(a.cacheName(), "postgres"+strconv.Itoa(m)+"-") {
			t.Errorf("cache name %q", a.cacheName())
		}
	}
	if l := LoaderScript("/c/ld.so", "/c/lib", "/c/bin.real/postgres"); !strings.Contains(l, `exec '/c/ld.so' --library-path '/c/lib' --argv0 "$0" '/c/bin.real/postgres' "$@"`) {
		t.Errorf("loader script:\n%s", l)
	}
}

// The test image of the major the tests run on (UNDERSTUDY_TEST_MAJOR,
// default 17) has the official image's shape: the postgres user as uid and
// gid 999, the en_US.utf8 locale every cluster gets, PGDATA and the
// VOLUME where that major's official image has them, SIGINT to stop, and
// an entrypoint that initialises an empty volume as the official one does.
// On 18 it refuses to initialise with a volume at the old path, as the
// official image does.
func TestImageShape(t *testing.T) {
	Skip(t)
	major, err := TestMajor()
	if err != nil {
		t.Fatal(err)
	}
	img, _ := ImageFor(major)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tar, err := ImageTar(ctx, img, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	ns := "understudy-img-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	s := StartServer(t, "img", "/run/netns/"+ns, 0, tar)

	var inspect []struct {
		Config struct {
			Env        []string
			Entrypoint []string
			Cmd        []string
			StopSignal string
			Volumes    map[string]any
		}
	}
	if err := json.Unmarshal([]byte(s.Docker(t, "image", "inspect", img.Tag)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("image inspect %s: %v", img.Tag, err)
	}
	cfg := inspect[0].Config
	env := strings.Join(cfg.Env, " ")
	for _, want := range []string{"PGDATA=" + img.PGDATA, "PG_MAJOR=" + strconv.Itoa(major), "LANG=en_US.utf8", "/usr/lib/postgresql/" + strconv.Itoa(major) + "/bin"} {
		if !strings.Contains(env, want) {
			t.Errorf("the image's env lacks %s: %v", want, cfg.Env)
		}
	}
	if _, ok := cfg.Volumes[img.Volume]; !ok || len(cfg.Volumes) != 1 {
		t.Errorf("volumes %v, want %s", cfg.Volumes, img.Volume)
	}
	if strings.Join(cfg.Entrypoint, " ") != "docker-entrypoint.sh" || strings.Join(cfg.Cmd, " ") != "postgres" || cfg.StopSignal != "SIGINT" {
		t.Errorf("entrypoint %v, cmd %v, stop signal %s", cfg.Entrypoint, cfg.Cmd, cfg.StopSignal)
	}
	if got := s.Docker(t, "run", "--rm", img.Tag, "id", "postgres"); !strings.HasPrefix(got, "uid=999(postgres) gid=999(postgres) ") {
		t.Errorf("id postgres: %s", got)
	}
	if got := s.Docker(t, "run", "--rm", img.Tag, "postgres", "--version"); !strings.Contains(got, "(PostgreSQL) "+strconv.Itoa(major)+".") {
		t.Errorf("postgres --version: %s", got)
	}
	if got := s.Docker(t, "run", "--rm", img.Tag, "locale", "-a"); !strings.Contains(got, "en_US.utf8") {
		t.Errorf("locales: %s", got)
	}

	// An empty volume: initdb as postgres, then postgres as PID 1.
	id := s.Docker(t, "run", "-d", "-e", "POSTGRES_PASSWORD=shape-test", "-v", "pgdata:"+img.Volume, img.Tag)
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(s.Docker(t, "logs", id), "database system is ready to accept connections") || !strings.Contains(s.Docker(t, "logs", id), "init process complete") {
		if st := s.Docker(t, "inspect", "-f", "{{.State.Status}}", id); time.Now().After(deadline) || st == "exited" {
			t.Fatalf("the server did not start (%s):\n%s", st, s.Docker(t, "logs", id))
		}
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(time.Second) // the temporary server has stopped; the real one is up
	q := func(sql string) string {
		return s.Docker(t, "exec", "-u", "postgres", id, "psql", "-XtAc", sql)
	}
	if got := q("SHOW data_directory"); got != img.PGDATA {
		t.Errorf("data_directory %s, want %s", got, img.PGDATA)
	}
	if got := q("SELECT datcollate FROM pg_database WHERE datname = 'postgres'"); got != "en_US.utf8" {
		t.Errorf("the cluster's collation is %s, want the image's en_US.utf8", got)
	}
	if got := s.Docker(t, "exec", id, "cat", "/proc/1/comm"); got != "postgres" {
		t.Errorf("PID 1 is %s, not postgres", got)
	}
	s.Docker(t, "stop", "-t", "30", id)
	// The cluster lies on the volume where the official image puts it.
	rel := strings.TrimPrefix(strings.TrimPrefix(img.PGDATA, img.Volume), "/")
	if got := s.Docker(t, "run", "--rm", "-v", "pgdata:/mnt", img.Tag, "cat", path.Join("/mnt", rel, "PG_VERSION")); got != strconv.Itoa(major) {
		t.Errorf("PG_VERSION on the volume at %s: %s", rel, got)
	}

	if major >= 18 {
		// A volume at the old path: the image refuses, and says where to mount.
		out, err := exec.Command("docker", "-H", s.DockerHost(), "run", "--rm", "-e", "POSTGRES_PASSWORD=x", "-v", "old:/var/lib/postgresql/data", img.Tag).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "/var/lib/postgresql/data") || !strings.Contains(string(out), "the volume is /var/lib/postgresql") {
			t.Errorf("postgres:%d with a volume at /var/lib/postgresql/data: %v\n%s", major, err, out)
		}
	}
}
