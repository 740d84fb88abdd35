package setup

import (
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/kamal"
)

// withAnchors builds a deploy.yml from the test app: head goes before
// accessories:, dbEnv replaces the primary's env entry (indented as under
// db:), and more is appended to the accessories.
func withAnchors(head, dbEnv, more string) mapSource {
	d := app("postgres:16", "10.0.0.2:5432:5432", "postgres")["config/deploy.yml"]
	d = strings.Replace(d, "accessories:\n", head+"accessories:\n", 1)
	d = strings.Replace(d, "    env:\n      secret:\n        - POSTGRES_PASSWORD\n", dbEnv, 1)
	return mapSource{"config/deploy.yml": d + more, ".kamal/secrets": "POSTGRES_PASSWORD=$POSTGRES_PASSWORD\n"}
}

// Issue 19 item 7: env given through a YAML merge key (or an alias) from
// an anchor is edited, as Kamal reads it, by writing the inherited part
// out in full at the one place that changes. The anchor's text stays as it
// was, every other accessory reads the same as before, every value Kamal
// saw is still there, and a second init changes nothing.
func TestEnvFromAnAnchorIsEditedInPlace(t *testing.T) {
	complexEnv := "x-env: &default_env\n  clear:\n    POSTGRES_DB: app\n  secret:\n    - POSTGRES_PASSWORD\n"
	cache := "  cache:\n    image: redis:7\n    host: 192.0.2.5\n    env: *default_env\n"
	cases := []struct {
		name              string
		head, dbEnv, more string
		clear             map[string]string // what the primary's env clear must hold afterwards
		keep              string            // text that must be in the edited file
	}{
		{"accessory merges an anchor that holds env",
			"x-pg: &pg\n  env:\n    secret:\n      - POSTGRES_PASSWORD\n", "    <<: *pg\n", "  cache:\n    <<: *pg\n    image: redis:7\n    host: 192.0.2.5\n",
			nil, "    <<: *pg\n"},
		{"env merges a complex-form anchor",
			complexEnv, "    env:\n      <<: *default_env\n", cache,
			map[string]string{"POSTGRES_DB": "app"}, "    env:\n      <<: *default_env\n      clear:\n"},
		{"env merges a flow-style anchor",
			"x-env: &default_env {clear: {POSTGRES_DB: app, POSTGRES_USER: \"me\"}, secret: [POSTGRES_PASSWORD]}\n", "    env:\n      <<: *default_env\n", cache,
			map[string]string{"POSTGRES_DB": "app", "POSTGRES_USER": "me"}, ""},
		{"env merges an anchor and adds its own secret list",
			"x-env: &default_env\n  clear:\n    POSTGRES_DB: app\n", "    env:\n      <<: *default_env\n      secret:\n        - POSTGRES_PASSWORD\n", "  cache:\n    image: redis:7\n    host: 192.0.2.5\n    env:\n      <<: *default_env\n",
			map[string]string{"POSTGRES_DB": "app"}, ""},
		{"env merges a simple-form anchor plus keys",
			"x-env: &shared\n  POSTGRES_USER: app\n", "    env:\n      <<: *shared\n      POSTGRES_DB: app\n      POSTGRES_PASSWORD: literal\n", "",
			map[string]string{"POSTGRES_USER": "app", "POSTGRES_DB": "app"}, ""},
		{"env is an alias of an anchor",
			complexEnv, "    env: *default_env # as the cache's\n", cache,
			map[string]string{"POSTGRES_DB": "app"}, "    env: # as the cache's\n      clear:\n"},
		{"env merges a list of anchors, the first one winning",
			"x-a: &a\n  clear:\n    POSTGRES_DB: first\nx-b: &b\n  clear:\n    POSTGRES_DB: second\n  secret:\n    - POSTGRES_PASSWORD\n", "    env:\n      <<: [*a, *b]\n", "",
			map[string]string{"POSTGRES_DB": "first"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := withAnchors(c.head, c.dbEnv, c.more)
			p, err := Build(src, replica)
			if err != nil {
				t.Fatalf("%v\n%s", err, src["config/deploy.yml"])
			}
			after := mapSource{}
			for k, v := range src {
				after[k] = v
			}
			for _, ch := range p.Changes {
				after[ch.Path] = ch.New
			}
			text := after["config/deploy.yml"]
			if !strings.Contains(text, c.head) {
				t.Errorf("the anchors were changed:\n%s", text)
			}
			if !strings.Contains(text, c.keep) {
				t.Errorf("the edited file lacks %q:\n%s", c.keep, text)
			}
			before, err := kamal.Load(src, "config/deploy.yml", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			now, err := kamal.Load(after, "config/deploy.yml", "", nil)
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			if err := ValidateKamal(now); err != nil {
				t.Fatal(err)
			}
			old, cur := map[string]string{}, map[string]string{}
			flatten(before.Root, "", old)
			flatten(now.Root, "", cur)
			for k, v := range old {
				if k == "/accessories/db/cmd" {
					continue
				}
				if cur[k] != v {
					t.Errorf("%s was %q, now %q\n%s", k, v, cur[k], text)
				}
			}
			for k, v := range cur {
				if strings.HasPrefix(k, "/accessories/cache/") && old[k] != v {
					t.Errorf("the other accessory changed: %s is now %q (was %q)\n%s", k, v, old[k], text)
				}
			}
			for _, name := range []string{"db", "db-replica"} {
				env := now.Accessory(name).Env()
				if v, _ := now.Str(env.Clear[NodeEnv]); v != name {
					t.Errorf("%s: %s = %q\n%s", name, NodeEnv, v, text)
				}
				for k, want := range c.clear {
					if v, _ := now.Str(env.Clear[k]); v != want {
						t.Errorf("%s: %s = %q, want %q\n%s", name, k, v, want, text)
					}
				}
				n := 0
				for _, s := range env.Secret {
					if s.Name == PasswordSecret {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%s: secret %s listed %d times\n%s", name, PasswordSecret, n, text)
				}
			}
			again, err := Build(after, replica)
			if err != nil {
				t.Fatalf("second init: %v\n%s", err, text)
			}
			for _, ch := range again.Changes {
				t.Errorf("a second init changes %s", ch.Path)
			}
		})
	}
}

// Where the edit would have to change an anchor that other places use, or
// where the key understudy must change is hidden by a later merge key, init
// refuses at the line, saying why and what to do.
func TestEnvFromAnAnchorRefusedOnlyWhereItCannotBeEdited(t *testing.T) {
	cases := []struct {
		name, head, dbEnv, more string
		where                   string
		want                    []string
	}{
		{"the db's env is an anchor another accessory merges",
			"", "    env: &dbenv\n      secret:\n        - POSTGRES_PASSWORD\n", "  cache:\n    image: redis:7\n    host: 192.0.2.5\n    env:\n      <<: *dbenv\n",
			"config/deploy.yml:17:", []string{"anchor &dbenv", "give accessories/db/env its own copy"}},
		{"a key hidden by a later merge key",
			"x-env: &default_env\n  clear:\n    POSTGRES_DB: app\n  secret:\n    - POSTGRES_PASSWORD\n", "    env:\n      clear:\n        POSTGRES_DB: mine\n      <<: *default_env\n", "",
			"config/deploy.yml:23:", []string{"hidden by the merge key (<<) at line 25", "remove"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := withAnchors(c.head, c.dbEnv, c.more)
			_, err := Build(src, replica)
			if err == nil || !strings.HasPrefix(err.Error(), c.where) {
				t.Fatalf("got %v, want an error at %s\n%s", err, c.where, src["config/deploy.yml"])
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\ndoes not say %q", err, w)
				}
			}
		})
	}
}
