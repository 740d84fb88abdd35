package apptest

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Endpoint is where a writer connects: the router, or one node.
type Endpoint struct {
	Host string
	Port int
}

func (e Endpoint) String() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// Settings are the database settings an app is given. With one endpoint
// (the router) every stack gets a single-host URL; with several (the
// nodes) each stack gets what it takes for a host list (app-clients.md).
type Settings struct {
	Endpoints                []Endpoint
	Database, User, Password string
	// TargetSessionAttrs: "" is read-write, except for postgres.js, whose
	// read-write check accepts a PostgreSQL >= 14 hot standby: primary.
	TargetSessionAttrs string
	ConnectTimeout     time.Duration // 0: 2 s
	TCPUserTimeout     time.Duration // 0: not set
	QueryTimeout       time.Duration // pgx only: a per-write context deadline; 0: none
}

// AppSettings are the settings the tests give apps: the app role and
// database Prepare creates, a fresh password.
func AppSettings(endpoints ...Endpoint) Settings {
	b := make([]byte, 12)
	rand.Read(b)
	return Settings{Endpoints: endpoints, Database: "appdb", User: "app", Password: fmt.Sprintf("app-%x", b)}
}

// Config is what one writer is started with: environment variables and
// files in its config directory (name → content).
type Config struct {
	Env   map[string]string
	Files map[string]string
}

// Config renders the settings for a client, the way that stack is told
// them; configDir is where the writer finds the Files. Pure.
func (s Settings) Config(c Client, configDir string) (Config, error) {
	if len(s.Endpoints) == 0 {
		return Config{}, fmt.Errorf("%s: no endpoint to connect to", c)
	}
	if s.Database == "" || s.User == "" {
		return Config{}, fmt.Errorf("%s: the settings need a database and a user", c)
	}
	cfg := Config{Env: map[string]string{}, Files: map[string]string{}}
	switch c {
	case ActiveRecord:
		if len(s.Endpoints) == 1 {
			// One host (the router): Rails' DATABASE_URL, merged into database.yml.
			cfg.Files["database.yml"] = "production:\n  url: <%= ENV[\"DATABASE_URL\"] %>\n"
			cfg.Env["DATABASE_URL"] = s.url("postgres", s.tsa(c))
		} else {
			cfg.Files["database.yml"] = s.databaseYML()
			cfg.Env["APP_DB_PASSWORD"] = s.Password
		}
		cfg.Env["APPTEST_DATABASE_YML"] = configDir + "/database.yml"
	case Psycopg2, Psycopg3, PGX, PostgresJS:
		cfg.Env["DATABASE_URL"] = s.url("postgresql", s.tsa(c))
		if c == PGX && s.QueryTimeout > 0 {
			cfg.Env["APPTEST_QUERY_TIMEOUT_MS"] = strconv.FormatInt(s.QueryTimeout.Milliseconds(), 10)
		}
	case NodePostgres:
		if len(s.Endpoints) > 1 {
			return Config{}, fmt.Errorf("node-postgres takes one host only (a host list fails with \"TypeError: Invalid URL\", and it has no target_session_attrs): give it the router's address")
		}
		cfg.Env["DATABASE_URL"] = s.url("postgres", s.tsa(c))
	case PDO:
		hosts, ports := s.lists()
		dsn := fmt.Sprintf("pgsql:host=%s;port=%s;dbname=%s;target_session_attrs=%s", hosts, ports, s.Database, s.tsa(c))
		if s.TCPUserTimeout > 0 {
			dsn += fmt.Sprintf(";tcp_user_timeout=%d", s.TCPUserTimeout.Milliseconds())
		}
		cfg.Env["APP_DB_DSN"] = dsn
		cfg.Env["APP_DB_USER"] = s.User
		cfg.Env["APP_DB_PASSWORD"] = s.Password
		// pdo_pgsql passes PDO::ATTR_TIMEOUT to libpq as connect_timeout,
		// after the DSN's own (default 30 s).
		cfg.Env["APP_DB_TIMEOUT"] = strconv.Itoa(s.connectTimeoutSeconds())
	default:
		return Config{}, fmt.Errorf("no writer for client %q (there are: %v)", c, All)
	}
	return cfg, nil
}

func (s Settings) tsa(c Client) string {
	if s.TargetSessionAttrs != "" {
		return s.TargetSessionAttrs
	}
	if c == PostgresJS {
		return "primary"
	}
	return "read-write"
}

func (s Settings) connectTimeoutSeconds() int {
	if s.ConnectTimeout <= 0 {
		return 2
	}
	return max(1, int(s.ConnectTimeout.Round(time.Second)/time.Second))
}

// lists are libpq's comma-separated host and port lists.
func (s Settings) lists() (string, string) {
	var hosts, ports []string
	for _, e := range s.Endpoints {
		hosts = append(hosts, e.Host)
		ports = append(ports, strconv.Itoa(e.Port))
	}
	return strings.Join(hosts, ","), strings.Join(ports, ",")
}

// url is a libpq connection URI: every endpoint as host:port, the
// password escaped, the options as query parameters.
func (s Settings) url(scheme, tsa string) string {
	var hosts []string
	for _, e := range s.Endpoints {
		hosts = append(hosts, e.String())
	}
	q := url.Values{}
	q.Set("target_session_attrs", tsa)
	q.Set("connect_timeout", strconv.Itoa(s.connectTimeoutSeconds()))
	if s.TCPUserTimeout > 0 {
		q.Set("tcp_user_timeout", strconv.FormatInt(s.TCPUserTimeout.Milliseconds(), 10))
	}
	return scheme + "://" + url.UserPassword(s.User, s.Password).String() + "@" + strings.Join(hosts, ",") + "/" + url.PathEscape(s.Database) + "?" + q.Encode()
}

// databaseYML is a Rails database.yml with libpq host and port lists (the
// port list quoted: unquoted, YAML 1.1 reads 5432,5433 as one integer),
// the password read from the environment as a Rails app does.
func (s Settings) databaseYML() string {
	hosts, ports := s.lists()
	opts := map[string]string{
		"target_session_attrs": s.tsa(ActiveRecord),
		"connect_timeout":      strconv.Itoa(s.connectTimeoutSeconds()),
	}
	if s.TCPUserTimeout > 0 {
		opts["tcp_user_timeout"] = strconv.FormatInt(s.TCPUserTimeout.Milliseconds(), 10)
	}
	var b strings.Builder
	b.WriteString("production:\n  adapter: postgresql\n")
	fmt.Fprintf(&b, "  host: %s\n  port: %s\n", strconv.Quote(hosts), strconv.Quote(ports))
	fmt.Fprintf(&b, "  database: %s\n  username: %s\n", strconv.Quote(s.Database), strconv.Quote(s.User))
	b.WriteString("  password: <%= ENV.fetch(\"APP_DB_PASSWORD\").to_json %>\n")
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %s\n", k, opts[k])
	}
	return b.String()
}
