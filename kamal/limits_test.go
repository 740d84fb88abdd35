package kamal

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func loadRaw(t *testing.T, text string) (*Config, error) {
	t.Helper()
	src := &Overlay{Base: DirSource(t.TempDir()), Files: map[string]string{"config/deploy.yml": text}}
	return Load(src, "config/deploy.yml", "", nil)
}

// Hostile YAML that Kamal's own loader accepts: understudy answers each
// with an error naming the line, at once and in bounded memory, never a
// crash or an endless expansion.
func TestHostileYAMLIsRefusedPromptly(t *testing.T) {
	// Nine nested anchors, each a list of nine aliases of the one before:
	// 9^9 (387 million) values when expanded.
	var bomb strings.Builder
	bomb.WriteString("service: shop\na0: &a0 [x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&bomb, "a%d: &a%d [", i, i)
		for j := 0; j < 9; j++ {
			if j > 0 {
				bomb.WriteString(", ")
			}
			fmt.Fprintf(&bomb, "*a%d", i-1)
		}
		bomb.WriteString("]\n")
	}
	cases := []struct{ name, text, want string }{
		{"alias bomb", bomb.String(), "expand to more than"},
		{"recursive list", "service: shop\nx: &r [1, *r]\n", "contains it"},
		{"recursive map", "service: shop\nm: &m\n  self: *m\n", "contains it"},
		{"second accessories key", "service: shop\naccessories:\n  db:\n    image: postgres:17\nimage: x\naccessories:\n  redis:\n    image: redis\n", "accessories: appears twice in this mapping (first at line 2)"},
		{"duplicate accessory", "service: shop\naccessories:\n  db:\n    image: postgres:16\n  db:\n    image: postgres:17\n", "db: appears twice in this mapping (first at line 3)"},
		{"deep nesting", "service: shop\nx: " + strings.Repeat("[", 150) + strings.Repeat("]", 150) + "\n", "nested more than"},
		{"huge file", "service: shop\n" + strings.Repeat("# padding\n", MaxConfigBytes/10+1), "reads at most"},
	}
	for _, c := range cases {
		start := time.Now()
		_, err := loadRaw(t, c.text)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), "config/deploy.yml") {
			t.Errorf("%s: the error does not name the file: %v", c.name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: took %s", c.name, d)
		}
	}
	// Aliases used the ordinary way still load.
	if _, err := loadRaw(t, "service: shop\nx: &e {A: 1}\ny: *e\nz:\n  <<: *e\n  B: 2\n"); err != nil {
		t.Errorf("ordinary aliases refused: %v", err)
	}
}

// Issue 10 item 10: an underscore right after an ERB tag is the user's
// text, and text that looks like understudy's placeholders is left alone.
func TestERBPlaceholdersAreExact(t *testing.T) {
	text := "service: <%= ENV[\"APP\"] %>_production\nimage: ERB1____x\nlabel: ERB0_\n"
	cfg, err := Load(&Overlay{Base: DirSource(t.TempDir()), Files: map[string]string{"config/deploy.yml": text}}, "config/deploy.yml", "",
		func(k string) (string, bool) { return map[string]string{"APP": "shop"}[k], k == "APP" })
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Service(); s != "shop_production" {
		t.Errorf("service = %q, want shop_production", s)
	}
	for key, want := range map[string]string{"image": "ERB1____x", "label": "ERB0_"} {
		if got, _ := cfg.Str(cfg.Root.Get(key)); got != want {
			t.Errorf("%s = %q, want the literal %q", key, got, want)
		}
		if cfg.Root.Get(key).HasERB() {
			t.Errorf("%s is taken for ERB", key)
		}
	}
}

// Merge keys read the way Kamal's YAML loader (Ruby's Psych, YAML.unsafe_load)
// reads them: entries apply in file order, so a key written before a <<
// is replaced by the merged one and a key written after it wins; in a list
// of merged mappings the first one that has a key gives it. Checked
// against Psych 4.0.3 (Debian 12's ruby) and the revive_hash of Psych 5.
func TestMergeKeysReadAsKamalReadsThem(t *testing.T) {
	c, err := loadRaw(t, "service: shop\n"+
		"x: &x {a: 1, b: 2}\n"+
		"y: &y {a: 3, c: 4}\n"+
		"before:\n  a: 9\n  <<: *x\n"+
		"after:\n  <<: *x\n  a: 9\n"+
		"list:\n  <<: [*y, *x]\n")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"before/a": "1", "before/b": "2",
		"after/a": "9", "after/b": "2",
		"list/a": "3", "list/b": "2", "list/c": "4",
	} {
		got := c.Root.Get(strings.Split(path, "/")...)
		if got == nil {
			t.Errorf("%s is missing, want %s", path, want)
		} else if got.Node.Value != want {
			t.Errorf("%s = %s, want %s", path, got.Node.Value, want)
		}
	}
}
