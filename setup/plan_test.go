package setup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/kamal"
)

// mapSource is an in-memory app directory.
type mapSource map[string]string

func (m mapSource) ReadFile(rel string) (string, error) {
	if s, ok := m[rel]; ok {
		return s, nil
	}
	return "", fs.ErrNotExist
}

func fixture(t *testing.T, name string) mapSource {
	t.Helper()
	root := filepath.Join("..", "testdata", "fixtures", name)
	m := mapSource{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(root, p)
			m[rel] = string(b)
		}
		return nil
	})
	if len(m) == 0 {
		t.Fatalf("fixture %s not found", name)
	}
	return m
}

func envOf(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

var planning = []struct {
	fixture string
	o       Options
}{
	{"guide-teamyap", Options{ReplicaHost: "123.123.123.125", ReplicaIP: "10.0.1.3"}},
	{"destinations", Options{Destination: "production", ReplicaHost: "198.51.100.31", ReplicaIP: "10.10.0.31"}},
	{"erb-and-custom-cmd", Options{ReplicaHost: "192.0.2.60", ReplicaIP: "10.0.0.60",
		Env: envOf(map[string]string{"DB_HOST": "192.0.2.59", "DB_PRIVATE_IP": "10.0.0.59"})}},
}

// buildFixture plans a fixture app and fails the test on an error.
func buildFixture(t *testing.T, name string, o Options) (mapSource, *Plan) {
	t.Helper()
	src := fixture(t, name)
	p, err := Build(src, o)
	if err != nil {
		t.Fatal(err)
	}
	return src, p
}

// Every line of the original deploy files is still there, in order, except
// the cmd line understudy rewrites.
func TestUntouchedLinesStayByteIdentical(t *testing.T) {
	for _, tc := range planning {
		t.Run(tc.fixture, func(t *testing.T) {
			_, p := buildFixture(t, tc.fixture, tc.o)
			for _, c := range p.Changes {
				if !c.Exists {
					continue
				}
				oldLines := strings.Split(c.Old, "\n")
				newLines := strings.Split(c.New, "\n")
				j := 0
				for _, l := range oldLines {
					for j < len(newLines) && newLines[j] != l {
						j++
					}
					if j == len(newLines) {
						if strings.HasPrefix(strings.TrimSpace(l), "cmd:") {
							j = 0
							continue
						}
						t.Fatalf("%s: original line %q is gone or moved", c.Path, l)
					}
				}
			}
		})
	}
}

// Writing the plan and planning again gives no change, and the edited
// configuration loads and passes Kamal's accessory checks.
func TestPlanThenInitIsIdempotentAndValid(t *testing.T) {
	for _, tc := range planning {
		t.Run(tc.fixture, func(t *testing.T) {
			src, p := buildFixture(t, tc.fixture, tc.o)
			if len(p.Changes) == 0 {
				t.Fatal("first plan changes nothing")
			}
			for _, c := range p.Changes {
				src[c.Path] = c.New
			}
			again, err := Build(src, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range again.Changes {
				t.Errorf("second plan changes %s", c.Path)
			}
			cfg, err := kamal.Load(src, "config/deploy.yml", tc.o.Destination, tc.o.Env)
			if err != nil {
				t.Fatal(err)
			}
			if err := ValidateKamal(cfg); err != nil {
				t.Fatal(err)
			}
			sb := cfg.Accessory(p.Standby)
			if sb == nil {
				t.Fatalf("no standby accessory %s", p.Standby)
			}
			if h, _ := sb.Str("host"); h != tc.o.ReplicaHost {
				t.Errorf("standby host %q", h)
			}
			if port, _ := sb.Str("port"); !strings.HasPrefix(port, tc.o.ReplicaIP+":") {
				t.Errorf("standby port %q", port)
			}
			for _, name := range []string{p.Primary, p.Standby} {
				a := cfg.Accessory(name)
				cmd, _ := a.Str("cmd")
				if !strings.HasPrefix(cmd, BootPath+" postgres -c config_file="+ConfPath) {
					t.Errorf("%s cmd %q", name, cmd)
				}
				if v, _ := cfg.Str(a.Env().Clear[NodeEnv]); v != name {
					t.Errorf("%s %s = %q", name, NodeEnv, v)
				}
				remotes := map[string]bool{}
				for _, m := range a.Mounts() {
					remotes[m.Remote] = true
				}
				for _, r := range []string{BootPath, ConfPath, HBAPath, RoleScriptPath} {
					if !remotes[r] {
						t.Errorf("%s does not mount %s", name, r)
					}
				}
				found := false
				for _, s := range a.Env().Secret {
					found = found || s.Name == PasswordSecret
				}
				if !found {
					t.Errorf("%s lacks secret %s", name, PasswordSecret)
				}
			}
		})
	}
}

const base = `service: app
image: acme/app
servers:
  - 192.0.2.1
builder:
  arch: amd64
registry:
  username: acme
  password:
    - KAMAL_REGISTRY_PASSWORD
accessories:
  db:
    image: %IMAGE%
    host: 192.0.2.2
    port: "%PORT%"
    cmd: %CMD%
    env:
      secret:
        - POSTGRES_PASSWORD
    directories:
      - data:/var/lib/postgresql/data
`

func app(image, port, cmd string) mapSource {
	s := strings.NewReplacer("%IMAGE%", image, "%PORT%", port, "%CMD%", cmd).Replace(base)
	return mapSource{"config/deploy.yml": s, ".kamal/secrets": "POSTGRES_PASSWORD=$POSTGRES_PASSWORD\n"}
}

var replica = Options{ReplicaHost: "192.0.2.3", ReplicaIP: "10.0.0.3"}

func TestRefusals(t *testing.T) {
	ok := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	several := strings.Replace(ok["config/deploy.yml"], "    host: 192.0.2.2\n", "    hosts:\n      - 192.0.2.2\n      - 192.0.2.4\n", 1)
	twoPG := ok["config/deploy.yml"] + "  analytics:\n    image: postgis/postgis:16-3.4\n    host: 192.0.2.5\n    port: 10.0.0.5:5432:5432\n    directories:\n      - pg:/var/lib/postgresql/data\n"
	cases := []struct {
		name  string
		src   mapSource
		o     Options
		where string
		want  []string
	}{
		{"bind all interfaces", app("postgres:16", "0.0.0.0:5432:5432", "postgres"), replica, "config/deploy.yml:15", []string{"every interface", "private IP"}},
		{"bare port", app("postgres:16", "5432", "postgres"), replica, "config/deploy.yml:15", []string{"every interface"}},
		{"several hosts", mapSource{"config/deploy.yml": several}, replica, "config/deploy.yml:14", []string{"2 servers", "independent primaries"}},
		{"same host", ok, Options{ReplicaHost: "192.0.2.2", ReplicaIP: "10.0.0.9"}, "--replica-host", []string{"same server"}},
		{"same ip", ok, Options{ReplicaHost: "192.0.2.9", ReplicaIP: "10.0.0.2"}, "--replica-host", []string{"same server"}},
		{"loopback replica ip", ok, Options{ReplicaHost: "192.0.2.9", ReplicaIP: "127.0.0.1"}, "--replica-ip", []string{"not a usable private IP"}},
		{"missing flags", ok, Options{}, "flags", []string{"--replica-host and --replica-ip are required"}},
		{"unknown version", app("postgres:latest", "10.0.0.2:5432:5432", "postgres"), replica, "config/deploy.yml:13", []string{"--pg-version"}},
		{"too old", app("postgres:12", "10.0.0.2:5432:5432", "postgres"), replica, "config/deploy.yml:13", []string{"not supported"}},
		{"custom entrypoint cmd", app("postgres:16", "10.0.0.2:5432:5432", "/start.sh"), replica, "config/deploy.yml:16", []string{"does not start postgres"}},
		{"two candidates", mapSource{"config/deploy.yml": twoPG}, replica, "config/deploy.yml", []string{"--accessory"}},
		{"unknown accessory", ok, Options{Accessory: "nope", ReplicaHost: "192.0.2.3", ReplicaIP: "10.0.0.3"}, "config/deploy.yml", []string{"no accessory named"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.src, tc.o)
			var r *Refusal
			if !errors.As(err, &r) {
				t.Fatalf("want a refusal, got %v", err)
			}
			if r.Where != tc.where {
				t.Errorf("where = %q, want %q (%v)", r.Where, tc.where, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.Error(), w) {
					t.Errorf("%q lacks %q", r.Error(), w)
				}
			}
			if r.Fix == "" {
				t.Error("a refusal must say how to fix it")
			}
		})
	}
}

func TestErrorsNameFileAndLine(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"bad yaml", "service: app\naccessories:\n  db:\n    image: postgres:16\n   host: x\n", "config/deploy.yml:5: not valid YAML"},
		{"erb control flow", "<% if ENV['X'] %>\nservice: a\n<% end %>\n", "config/deploy.yml:1: ERB control flow"},
		{"unclosed erb", "service: <%= ENV['X']\n", "config/deploy.yml:1: an ERB tag"},
		{"erb cmd", strings.Replace(app("postgres:16", "10.0.0.2:5432:5432", "x")["config/deploy.yml"], "cmd: x", `cmd: <%= ENV["CMD"] %>`, 1), "config/deploy.yml:16: accessory db's cmd comes from ERB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(mapSource{"config/deploy.yml": tc.yaml}, replica)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %q, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestPGVersionFlagAndManagedFlagsDropped(t *testing.T) {
	src := app("postgres:latest", "10.0.0.2:5432:5432", "postgres -c max_wal_senders=5 -c wal_keep_size=64 -c shared_buffers=1GB -c wal_level=replica")
	o := replica
	o.PGVersion = 16
	p, err := Build(src, o)
	if err != nil {
		t.Fatal(err)
	}
	deploy := changed(p, "config/deploy.yml")
	want := "cmd: /understudy/boot.sh postgres -c config_file=/understudy/postgresql.conf -c wal_keep_size=64 -c shared_buffers=1GB\n"
	if !strings.Contains(deploy, want) {
		t.Fatalf("want %q in:\n%s", want, deploy)
	}
	notes := strings.Join(p.Notes, "\n")
	for _, d := range []string{"-c max_wal_senders=5", "-c wal_level=replica"} {
		if !strings.Contains(notes, d) {
			t.Errorf("notes do not mention dropping %q", d)
		}
	}
}

func TestSecretFollowsHowThePasswordIsFetched(t *testing.T) {
	cases := []struct{ secrets, wantLine, wantHow string }{
		{"POSTGRES_PASSWORD=$POSTGRES_PASSWORD\n", "REPLICATION_PASSWORD=$REPLICATION_PASSWORD\n", "export it as REPLICATION_PASSWORD"},
		{"POSTGRES_PASSWORD=$(op read op://Vault/db/password)\n", "REPLICATION_PASSWORD=$(op read op://Vault/db/replication-password)\n", "1Password"},
		{"SECRETS=$(kamal secrets fetch --adapter bitwarden --account a POSTGRES_PASSWORD KAMAL_REGISTRY_PASSWORD)\nPOSTGRES_PASSWORD=$(kamal secrets extract POSTGRES_PASSWORD $SECRETS)\n",
			"SECRETS=$(kamal secrets fetch --adapter bitwarden --account a POSTGRES_PASSWORD REPLICATION_PASSWORD MONITOR_PASSWORD KAMAL_REGISTRY_PASSWORD)\nPOSTGRES_PASSWORD=$(kamal secrets extract POSTGRES_PASSWORD $SECRETS)\nREPLICATION_PASSWORD=$(kamal secrets extract REPLICATION_PASSWORD $SECRETS)\nMONITOR_PASSWORD=$(kamal secrets extract MONITOR_PASSWORD $SECRETS)\n", "same store"},
	}
	for _, tc := range cases {
		src := app("postgres:17", "10.0.0.2:5432:5432", "postgres")
		src[".kamal/secrets"] = tc.secrets
		p, err := Build(src, replica)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, c := range p.Changes {
			if c.Path == ".kamal/secrets" {
				got = c.New
			}
		}
		if !strings.Contains(got, tc.wantLine) {
			t.Errorf("secrets:\n%s\nwant to contain:\n%s", got, tc.wantLine)
		}
		if !strings.Contains(p.SecretHowTo, tc.wantHow) {
			t.Errorf("how-to %q lacks %q", p.SecretHowTo, tc.wantHow)
		}
	}
	// A plain-text password in the committed file is called out.
	src := app("postgres:17", "10.0.0.2:5432:5432", "postgres")
	src[".kamal/secrets"] = "POSTGRES_PASSWORD=hunter2\n"
	p, err := Build(src, replica)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(p.Warnings, "\n"); !strings.Contains(w, "plain text") || strings.Contains(w, "hunter2") {
		t.Errorf("warnings should flag the plain-text password without repeating it: %q", w)
	}
}

// Issue 10, items 3-7: files whose meaning init cannot keep while editing
// them. Each gives an error naming the file and line and the fix; none
// panics, and none is written (Build only reads).
func TestRefusesEditsThatWouldChangeWhatKamalSees(t *testing.T) {
	ok := app("postgres:16", "10.0.0.2:5432:5432", "postgres")["config/deploy.yml"]
	withSecrets := func(deploy string) mapSource {
		return mapSource{"config/deploy.yml": deploy, ".kamal/secrets": "POSTGRES_PASSWORD=$POSTGRES_PASSWORD\n"}
	}
	sharedList := strings.Replace(ok, "      secret:\n        - POSTGRES_PASSWORD\n", "      secret: &secrets\n        - POSTGRES_PASSWORD\n", 1) +
		"  cache:\n    image: redis:7\n    host: 192.0.2.5\n    env:\n      secret: *secrets\n"
	stringSecret := strings.Replace(ok, "      secret:\n        - POSTGRES_PASSWORD\n", "      secret: POSTGRES_PASSWORD\n", 1)
	cases := []struct{ name, deploy, want string }{
		{"second accessories key", ok + "accessories:\n  redis:\n    image: redis:7\n", "config/deploy.yml:22: accessories: appears twice in this mapping (first at line 11)"},
		{"duplicate accessory", strings.Replace(ok, "accessories:\n", "accessories:\n  db:\n    image: postgres:15\n", 1), "config/deploy.yml:14: db: appears twice in this mapping (first at line 12)"},
		{"secret list shared by an anchor", sharedList, "is the anchor &secrets, which other places use through *secrets"},
		{"env.secret as a string", stringSecret, `must be a list, not a scalar (Kamal refuses it: "should be an array")`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(withSecrets(c.deploy), replica)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "config/deploy.yml:") {
				t.Errorf("the error does not start with file:line: %v", err)
			}
		})
	}
}

// Issue 10 item 8: a user's cmd that asks for more than replication needs
// keeps it (logical decoding, more senders); a cmd with its own config
// file is refused, since understudy's config_file would replace it.
func TestUserCmdSettingsThatMeanMoreAreKept(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres -c wal_level=logical -c max_wal_senders=20 -c max_replication_slots=4")
	p, err := Build(src, replica)
	if err != nil {
		t.Fatal(err)
	}
	deploy := changed(p, "config/deploy.yml")
	want := "cmd: /understudy/boot.sh postgres -c config_file=/understudy/postgresql.conf -c wal_level=logical -c max_wal_senders=20\n"
	if !strings.Contains(deploy, want) {
		t.Fatalf("want %q in:\n%s", want, deploy)
	}
	if notes := strings.Join(p.Notes, "\n"); !strings.Contains(notes, "-c max_replication_slots=4") {
		t.Errorf("the weaker max_replication_slots=4 is not reported as dropped:\n%s", notes)
	}
	_, err = Build(app("postgres:16", "10.0.0.2:5432:5432", "postgres -c config_file=/etc/postgresql/mine.conf"), replica)
	var r *Refusal
	if !errors.As(err, &r) || r.Where != "config/deploy.yml:16" || !strings.Contains(r.Error(), "its own file") {
		t.Fatalf("own config_file: %v", err)
	}
}

// Issue 10 items 11 and 12: an absolute secrets_path is read where it is;
// IPv6 nodes get brackets in the DATABASE_URL, as libpq needs.
func TestAbsoluteSecretsPathAndIPv6URL(t *testing.T) {
	dir := t.TempDir()
	abs := filepath.Join(dir, "elsewhere", "secrets")
	os.MkdirAll(filepath.Dir(abs), 0o755)
	os.WriteFile(abs, []byte("POSTGRES_PASSWORD=$POSTGRES_PASSWORD\n"), 0o600)
	app := t.TempDir()
	os.MkdirAll(filepath.Join(app, "config"), 0o755)
	deploy := strings.Replace(base, "%IMAGE%", "postgres:16", 1)
	deploy = strings.Replace(deploy, "%CMD%", "postgres", 1)
	deploy = strings.Replace(deploy, `"%PORT%"`, `"[fd00::2]:5432:5432"`, 1)
	deploy = "secrets_path: " + abs + "\n" + deploy
	os.WriteFile(filepath.Join(app, "config", "deploy.yml"), []byte(deploy), 0o644)
	p, err := Build(kamal.DirSource(app), Options{ReplicaHost: "192.0.2.3", ReplicaIP: "fd00::3"})
	if err != nil {
		t.Fatal(err)
	}
	if u := ConnectAdvice(StackPython, ConnectInput{Nodes: p.Cluster.Nodes, User: "u", DB: "d"}); !strings.Contains(u, "@[fd00::2]:5432,[fd00::3]:5432/") {
		t.Errorf("the connection URL lacks bracketed IPv6 hosts:\n%s", u)
	}
	edited := false
	for _, c := range p.Changes {
		if c.Path == abs {
			edited = true
		}
		if strings.HasPrefix(c.Path, ".kamal") || strings.Contains(c.Path, filepath.Join(app, "elsewhere")) {
			t.Errorf("the secrets went to %s instead of %s", c.Path, abs)
		}
	}
	if !edited {
		t.Errorf("the absolute secrets file %s was not edited", abs)
	}
}

// Issue 19 item 7: an IPv6 node's address and port are written
// [addr]:port in the messages that name them.
func TestIPv6AddressesAreBracketedInMessages(t *testing.T) {
	src := app("postgres:16", "[fd00::2]:5432:5432", "postgres")
	p, err := Build(src, Options{ReplicaHost: "192.0.2.3", ReplicaIP: "fd00::3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Changes {
		src[c.Path] = c.New
	}
	src["config/deploy.yml"] = strings.Replace(src["config/deploy.yml"], "[fd00::3]:5432:5432", "[fd00::4]:5433:5432", 1)
	_, err = LoadDeployed(src, Options{})
	if err == nil || !strings.Contains(err.Error(), "node db-replica is at [fd00::4]:5433, the setup has [fd00::3]:5432") {
		t.Errorf("deploy.yml moved to another IPv6 address: %v", err)
	}
}

// Issue 10 item 13: an image with its own entrypoint (Bitnami's) is
// refused at its image line, with or without --accessory, never accepted
// with a boot script that cannot start.
func TestForeignPostgresImageIsRefused(t *testing.T) {
	for _, o := range []Options{replica, {Accessory: "db", ReplicaHost: "192.0.2.3", ReplicaIP: "10.0.0.3"}} {
		_, err := Build(app("bitnami/postgresql:16", "10.0.0.2:5432:5432", "postgres"), o)
		var r *Refusal
		if !errors.As(err, &r) || r.Where != "config/deploy.yml:13" || !strings.Contains(r.Error(), "Bitnami") || !strings.Contains(r.Fix, "postgres:16") {
			t.Errorf("--accessory %q: %v", o.Accessory, err)
		}
	}
}

// Issue 10, the smaller items: CRLF files keep CRLF on every line; a BOM,
// an unusable --replica-host, and a leading-zero address are refused; the
// same server written two ways is still the same server.
func TestSmallerInputRules(t *testing.T) {
	ok := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	crlf := mapSource{}
	for k, v := range ok {
		crlf[k] = strings.ReplaceAll(v, "\n", "\r\n")
	}
	p, err := Build(crlf, replica)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Changes {
		if !c.Exists {
			continue
		}
		if lone := strings.Count(c.New, "\n") - strings.Count(c.New, "\r\n"); lone != 0 {
			t.Errorf("%s: %d lines end in a bare LF in a CRLF file", c.Path, lone)
		}
	}
	bom := mapSource{"config/deploy.yml": "\ufeff" + ok["config/deploy.yml"], ".kamal/secrets": ok[".kamal/secrets"]}
	if _, err := Build(bom, replica); err == nil || !strings.Contains(err.Error(), "config/deploy.yml:1: the file starts with a UTF-8 byte-order mark") {
		t.Errorf("BOM: %v", err)
	}
	for host, want := range map[string]string{"192.0.2.3\nrm -rf /": "not a server name", "192.0.2.030": "leading zero"} {
		_, err := Build(ok, Options{ReplicaHost: host, ReplicaIP: "10.0.0.3"})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--replica-host %q: %v", host, err)
		}
	}
	if _, err := Build(ok, Options{ReplicaHost: "192.0.2.9", ReplicaIP: "::ffff:10.0.0.2"}); err == nil || !strings.Contains(err.Error(), "same server") {
		t.Errorf("the primary's IP written as IPv4-mapped IPv6 was not taken for the same server: %v", err)
	}
}

func TestListValuedHostAndPortAreNamedAsLists(t *testing.T) {
	ok := app("postgres:16", "10.0.0.2:5432:5432", "postgres")["config/deploy.yml"]
	for what, deploy := range map[string]string{
		"host": strings.Replace(ok, "    host: 192.0.2.2\n", "    host:\n      - 192.0.2.2\n", 1),
		"port": strings.Replace(ok, `    port: "10.0.0.2:5432:5432"`+"\n", "    port:\n      - 10.0.0.2:5432:5432\n", 1),
	} {
		_, err := Build(mapSource{"config/deploy.yml": deploy}, replica)
		if err == nil || strings.Contains(err.Error(), "ERB") || !strings.Contains(err.Error(), "list") {
			t.Errorf("%s as a list: %v", what, err)
		}
	}
}

// Issue 11: init writes the cluster model as data (cluster.json) and the
// live commands read it back from there, cross-checked with deploy.yml;
// an older init's setup (no cluster.json) is still read, and says so.
func TestClusterModelIsWrittenAndReadAsData(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	p, err := Build(src, replica)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Changes {
		src[c.Path] = c.New
	}
	if !strings.Contains(src["config/understudy/cluster.json"], `"version": 1`) {
		t.Fatalf("no versioned cluster.json:\n%s", src["config/understudy/cluster.json"])
	}
	d, err := LoadDeployed(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d.Cluster) != fmt.Sprint(p.Cluster) || d.Legacy != "" {
		t.Errorf("read back %+v\nwrote     %+v (legacy %q)", d.Cluster, p.Cluster, d.Legacy)
	}
	moved := mapSource{}
	for k, v := range src {
		moved[k] = v
	}
	moved["config/deploy.yml"] = strings.Replace(src["config/deploy.yml"], "10.0.0.3:5432:5432", "10.0.0.4:5432:5432", 1)
	if _, err := LoadDeployed(moved, Options{}); err == nil || !strings.Contains(err.Error(), "disagree") || !strings.Contains(err.Error(), "db-replica") {
		t.Errorf("deploy.yml edited after init: %v", err)
	}
	legacy := mapSource{}
	for k, v := range src {
		legacy[k] = v
	}
	delete(legacy, "config/understudy/cluster.json")
	d, err = LoadDeployed(legacy, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.Legacy, "older understudy") || fmt.Sprint(d.Cluster.Nodes) != fmt.Sprint(p.Cluster.Nodes) || d.Cluster.WALCap != p.Cluster.WALCap {
		t.Errorf("legacy read: %+v (%q)", d.Cluster, d.Legacy)
	}
}

// Issue 10: converting a simple env: to clear/secret keeps every line as
// written, inline comments included.
func TestSimpleEnvConversionKeepsComments(t *testing.T) {
	d := app("postgres:16", "10.0.0.2:5432:5432", "postgres")["config/deploy.yml"]
	d = strings.Replace(d, "    env:\n      secret:\n        - POSTGRES_PASSWORD\n", "    env: # the db's env\n      POSTGRES_USER: app # who owns the db\n      POSTGRES_PASSWORD: literal\n", 1)
	p, err := Build(mapSource{"config/deploy.yml": d}, replica)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Changes {
		if c.Path == "config/deploy.yml" && !strings.Contains(c.New, "    env: # the db's env\n      clear:\n        POSTGRES_USER: app # who owns the db\n        POSTGRES_PASSWORD: literal\n") {
			t.Errorf("the conversion lost a comment:\n%s", c.New)
		}
	}
}

// changed is the new text of one of a plan's files ("" if unchanged).
func changed(p *Plan, path string) string {
	for _, c := range p.Changes {
		if c.Path == path {
			return c.New
		}
	}
	return ""
}

// Issue 18: a standby accessory whose image is of another major than the
// primary's is refused by init, at its image line, naming both images and
// the fix; after init, LoadDeployed gives each node's image to the live
// commands (apply refuses, check reports).
func TestStandbyOfAnotherMajor(t *testing.T) {
	src := app("postgres:17", "10.0.0.2:5432:5432", "postgres")
	src["config/deploy.yml"] += "  db-replica:\n    image: postgres:18\n    host: 192.0.2.3\n    port: 10.0.0.3:5432:5432\n    directories:\n      - data:/var/lib/postgresql\n"
	_, err := Build(src, replica)
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("want a refusal, got %v", err)
	}
	if r.Where != "config/deploy.yml:23" {
		t.Errorf("refused at %s, want the standby's image line (config/deploy.yml:23)", r.Where)
	}
	for _, want := range []string{"db-replica's image postgres:18 is PostgreSQL 18", "db's image postgres:17 is PostgreSQL 17"} {
		if !strings.Contains(r.Error(), want) {
			t.Errorf("%q lacks %q", r.Error(), want)
		}
	}
	if !strings.Contains(r.Fix, "give db-replica the image postgres:17") {
		t.Errorf("fix: %s", r.Fix)
	}
	// The same major under another tag is the same PostgreSQL.
	same := app("postgres:17", "10.0.0.2:5432:5432", "postgres")
	same["config/deploy.yml"] += "  db-replica:\n    image: postgres:17.6-trixie\n    host: 192.0.2.3\n    port: 10.0.0.3:5432:5432\n    directories:\n      - data:/var/lib/postgresql/data\n"
	p, err := Build(same, replica)
	if err != nil {
		t.Fatalf("a standby on postgres:17.6-trixie: %v", err)
	}
	for _, c := range p.Changes {
		same[c.Path] = c.New
	}
	same["config/deploy.yml"] = strings.Replace(same["config/deploy.yml"], "image: postgres:17.6-trixie", "image: postgres:18", 1)
	d, err := LoadDeployed(same, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Images["db"].Major != 17 || d.Images["db-replica"].Major != 18 || d.Images["db-replica"].Ref != "postgres:18" {
		t.Errorf("images read back: %+v", d.Images)
	}
}
