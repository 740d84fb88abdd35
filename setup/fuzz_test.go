package setup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/kamal"
)

// flatten lists every scalar of a merged config by path; list items by index.
func flatten(v *kamal.Val, path string, out map[string]string) {
	switch {
	case v == nil:
	case v.IsMap():
		// Kamal reads a simple env (no clear:, secret: or tags:) as all
		// clear, the same as env: clear: ..., which is what init writes.
		if strings.HasSuffix(path, "/env") && v.Get("clear") == nil && v.Get("secret") == nil && v.Get("tags") == nil {
			path += "/clear"
		}
		for _, k := range v.Keys() {
			flatten(v.Get(k), path+"/"+k, out)
		}
	case v.IsSeq():
		for i, it := range v.Items() {
			flatten(it, fmt.Sprintf("%s[%d]", path, i), out)
		}
	case v.IsNull():
		// an empty value: init may fill it (env:, options:), which adds
		// and takes nothing away
	default:
		out[path] = v.Node.Tag + ":" + v.Source()
	}
}

// FuzzInit runs the Kamal reader and init's editor on arbitrary deploy.yml
// text. Properties: no panic, no unbounded work (the reader's limits), and
// after a successful init the config Kamal re-reads is the original plus
// understudy's additions: every original value is still there, unchanged,
// except the primary's cmd and stop-timeout, which init sets; a second
// init changes nothing. The corpus is testdata/fuzz/FuzzInit plus the
// fixtures; CI runs it briefly (scripts/test).
func FuzzInit(f *testing.F) {
	for _, name := range []string{"guide-teamyap", "destinations", "erb-and-custom-cmd", "alpine-loopback", "no-postgres", "pg18-old-mount"} {
		if b, err := os.ReadFile(filepath.Join("..", "testdata", "fixtures", name, "config", "deploy.yml")); err == nil {
			f.Add(string(b))
		}
	}
	f.Add(strings.Replace(base, "%IMAGE%", "postgres:16", 1))
	f.Add("service: a\nx: &r [1, *r]\n")
	f.Add("service: a\naccessories:\n  db: &d\n    image: postgres:16\n  other: *d\n")
	// env through merge keys and aliases of anchors (issue 19 item 7)
	f.Add(withAnchors("x-env: &e\n  clear:\n    POSTGRES_DB: app\n  secret:\n    - POSTGRES_PASSWORD\n", "    env:\n      <<: *e\n", "  cache:\n    image: redis:7\n    host: 192.0.2.5\n    env: *e\n")["config/deploy.yml"])
	f.Add(withAnchors("x-pg: &pg {env: {clear: {A: b}}, options: {memory: 1g}}\n", "    <<: *pg\n", "")["config/deploy.yml"])
	f.Fuzz(func(t *testing.T, deploy string) {
		if len(deploy) > 64<<10 {
			return
		}
		src := mapSource{"config/deploy.yml": deploy, ".kamal/secrets": "POSTGRES_PASSWORD=$POSTGRES_PASSWORD\n"}
		o := Options{ReplicaHost: "192.0.2.3", ReplicaIP: "10.0.0.3", Env: func(string) (string, bool) { return "x", true }}
		p, err := Build(src, o)
		if err != nil {
			return // a refusal or an error is an answer
		}
		before, err := kamal.Load(src, "config/deploy.yml", "", o.Env)
		if err != nil {
			t.Fatalf("Build succeeded on a file Load refuses: %v", err)
		}
		after := mapSource{}
		for k, v := range src {
			after[k] = v
		}
		for _, c := range p.Changes {
			after[c.Path] = c.New
		}
		cfg, err := kamal.Load(after, "config/deploy.yml", "", o.Env)
		if err != nil {
			t.Fatalf("init wrote a deploy.yml that does not load: %v\n%s", err, after["config/deploy.yml"])
		}
		old, now := map[string]string{}, map[string]string{}
		flatten(before.Root, "", old)
		flatten(cfg.Root, "", now)
		changeable := map[string]bool{"/accessories/" + p.Primary + "/cmd": true, "/accessories/" + p.Primary + "/options/stop-timeout": true}
		for k, v := range old {
			if changeable[k] {
				continue
			}
			if nv, ok := now[k]; !ok || nv != v {
				t.Fatalf("init changed %s from %q to %q\n--- before\n%s\n--- after\n%s", k, v, nv, deploy, after["config/deploy.yml"])
			}
		}
		again, err := Build(after, o)
		if err != nil {
			t.Fatalf("a second init fails: %v", err)
		}
		if len(again.Changes) != 0 {
			t.Fatalf("a second init changes %s", again.Changes[0].Path)
		}
	})
}
