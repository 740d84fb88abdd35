package setup

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/understudy-dev/understudy/pgconf"
	"github.com/understudy-dev/understudy/router"
)

// What an app must be told to find the primary after a role change, per
// stack: the settings each framework really takes, and what each
// survives. Measured with real clients (docs/connecting.md): a multi-host
// DATABASE_URL breaks Rails 6.1 (its URL parser rejects a comma in the
// host), node-postgres (no multi-host support), dj-database-url and
// Laravel's DB_URL; postgres.js takes it but its read-write check accepts
// a hot standby (PostgreSQL 14+), so it needs target_session_attrs=primary.
// A primary whose server vanishes (packets dropped) hangs every open
// connection until a timeout the app sets; ruby-pg < 1.6, psycopg 3.1,
// Laravel, postgres.js and node-postgres cannot get past it without the
// router.

// Stack is an app framework or driver `understudy connect` knows.
type Stack string

const (
	StackRails      Stack = "rails"
	StackDjango     Stack = "django"
	StackLaravel    Stack = "laravel"
	StackNode       Stack = "node"
	StackPostgresJS Stack = "postgresjs"
	StackGo         Stack = "go"
	StackPython     Stack = "python"
	StackPHP        Stack = "php"
)

// Stacks in the order the table lists them.
var Stacks = []Stack{StackRails, StackDjango, StackPython, StackLaravel, StackPHP, StackNode, StackPostgresJS, StackGo}

// ParseStack reads --stack.
func ParseStack(s string) (Stack, error) {
	for _, st := range Stacks {
		if string(st) == strings.ToLower(strings.TrimSpace(s)) {
			return st, nil
		}
	}
	var names []string
	for _, st := range Stacks {
		names = append(names, string(st))
	}
	return "", fmt.Errorf("--stack %q: give one of %s", s, strings.Join(names, ", "))
}

// Survival is what a stack's settings survive, in words.
type Survival struct {
	Stack      Stack
	Name       string // as people say it
	Switchover string // a switchover, or an emergency promote with a refusing old primary
	Vanished   string // the primary's server unreachable (packets dropped)
}

// SurvivalTable is the measured table (docs/connecting.md), without the router.
var SurvivalTable = []Survival{
	{StackRails, "Rails (ActiveRecord + ruby-pg)", "follows by itself", "needs the router (ruby-pg before 1.6 never tries the second host while the first is black-holed)"},
	{StackDjango, "Django (psycopg2)", "follows by itself", "follows after ~8 s (tcp_user_timeout); Django on psycopg 3.1 needs the router"},
	{StackPython, "Python, psycopg2 / psycopg 3", "follows by itself", "psycopg2: after ~8 s (tcp_user_timeout); psycopg 3.1: needs the router"},
	{StackLaravel, "Laravel", "follows by itself (with PGTARGETSESSIONATTRS)", "needs the router (no way to pass tcp_user_timeout)"},
	{StackPHP, "PHP PDO", "follows by itself", "follows after ~8 s (tcp_user_timeout, PDO::ATTR_TIMEOUT)"},
	{StackNode, "Node, node-postgres (and Prisma)", "needs the router (no multi-host support)", "needs the router"},
	{StackPostgresJS, "Node, postgres.js", "follows by itself (only with target_session_attrs=primary)", "needs the router"},
	{StackGo, "Go, pgx", "follows by itself", "follows after ~7 s (per-request context deadlines)"},
}

// ConnectInput is what the settings are made of.
type ConnectInput struct {
	Nodes  []pgconf.Node // the nodes, as the app reaches them
	User   string        // the database user
	DB     string        // the database
	Router *RouterEndpoint
}

// RouterEndpoint is where the app reaches the router.
type RouterEndpoint struct {
	Host         string // Kamal: the router's container name on the kamal network
	Port, ROPort int
}

// KamalRouter is a Kamal app's router endpoint for a plan's router.
func KamalRouter(rp *RouterPlan) *RouterEndpoint {
	if rp == nil {
		return nil
	}
	return &RouterEndpoint{Host: rp.Host, Port: router.DefaultPort, ROPort: router.DefaultROPort}
}

// RouterURL is the single-host URL through the router.
func (in ConnectInput) RouterURL(readOnly bool) string {
	r := in.Router
	port, attrs := r.Port, "?target_session_attrs=read-write"
	if readOnly {
		port, attrs = r.ROPort, ""
	}
	return fmt.Sprintf("postgres://%s:<POSTGRES_PASSWORD>@%s/%s%s", in.User, net.JoinHostPort(r.Host, strconv.Itoa(port)), in.DB, attrs)
}

func (in ConnectInput) hostList() (hosts, ports string) {
	var hs, ps []string
	same := true
	for _, n := range in.Nodes {
		hs = append(hs, n.Addr)
		ps = append(ps, strconv.Itoa(n.Port))
		same = same && n.Port == in.Nodes[0].Port
	}
	if same {
		return strings.Join(hs, ","), ps[0]
	}
	return strings.Join(hs, ","), strings.Join(ps, ",")
}

func (in ConnectInput) uriHosts() string {
	var hs []string
	for _, n := range in.Nodes {
		hs = append(hs, net.JoinHostPort(n.Addr, strconv.Itoa(n.Port)))
	}
	return strings.Join(hs, ",")
}

// ConnectAdvice is what a stack takes, and what it survives. Pure.
func ConnectAdvice(stack Stack, in ConnectInput) string {
	var s Survival
	for _, x := range SurvivalTable {
		if x.Stack == stack {
			s = x
		}
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	if in.Router != nil {
		w("%s, through the router (%s): one host that follows the primary.", s.Name, in.Router.Host)
		switch stack {
		case StackRails:
			w("  DATABASE_URL=%s", in.RouterURL(false))
			w("  (reads from the standby: DATABASE_REPLICA_URL=%s, as a replica: true database in database.yml)", in.RouterURL(true))
		case StackPostgresJS:
			w("  DATABASE_URL=%s", strings.Replace(in.RouterURL(false), "read-write", "primary", 1))
		case StackLaravel:
			w("  DB_HOST=%s  DB_PORT=%d  (or DB_URL=%s)", in.Router.Host, in.Router.Port, in.RouterURL(false))
			w("  and PGTARGETSESSIONATTRS=read-write in the app's env")
		default:
			w("  DATABASE_URL=%s", in.RouterURL(false))
			w("  reads from the standby: %s", in.RouterURL(true))
		}
		w("It survives a switchover, an emergency promote and a vanished primary server: the router cuts the sessions of a node that stops being the primary, and the app's next connection reaches the new one. No redeploy.")
		return b.String()
	}
	hosts, ports := in.hostList()
	w("%s, without the router:", s.Name)
	switch stack {
	case StackRails:
		w("  Unset DATABASE_URL (Rails merges it into every database config at boot, and cannot parse a multi-host URL). config/database.yml:")
		w("    production:")
		w("      primary:")
		w("        adapter: postgresql")
		w("        host: %s", hosts)
		w("        port: %q   # quoted: YAML would read 5432,5433 as one number", ports)
		w("        database: %s", in.DB)
		w("        username: %s", in.User)
		w("        password: <%%= ENV[\"POSTGRES_PASSWORD\"] %%>")
		w("        target_session_attrs: read-write")
		w("        connect_timeout: 2")
		w("        tcp_user_timeout: 5000")
		w("  or the same as Kamal env: PGHOST=%s PGPORT=%s PGTARGETSESSIONATTRS=read-write PGCONNECT_TIMEOUT=2 and DATABASE_URL=postgres:///%s", hosts, ports, in.DB)
	case StackDjango:
		w("  settings.py (dj-database-url rejects a multi-host URL; write the dict):")
		w("    DATABASES[\"default\"] = {\"ENGINE\": \"django.db.backends.postgresql\", \"HOST\": %q, \"PORT\": %q,", hosts, ports)
		w("        \"NAME\": %q, \"USER\": %q, \"PASSWORD\": os.environ[\"POSTGRES_PASSWORD\"],", in.DB, in.User)
		w("        \"OPTIONS\": {\"target_session_attrs\": \"read-write\", \"connect_timeout\": 2, \"tcp_user_timeout\": 5000}}")
	case StackPython:
		w("  psycopg2 / psycopg: postgresql://%s:<POSTGRES_PASSWORD>@%s/%s?target_session_attrs=read-write&connect_timeout=2&tcp_user_timeout=5000", in.User, in.uriHosts(), in.DB)
	case StackLaravel:
		w("  .env: DB_HOST=%s DB_PORT=%s, and PGTARGETSESSIONATTRS=read-write in the app's env (Laravel passes no target_session_attrs; libpq reads it)", hosts, ports)
		w("  config/database.php, pgsql: 'options' => [PDO::ATTR_TIMEOUT => 2]")
		w("  Never DB_URL with several hosts: Laravel parses it into a wrong host and keeps writing to whichever node it reached.")
	case StackPHP:
		w("  new PDO('pgsql:host=%s;port=%s;dbname=%s;target_session_attrs=read-write;tcp_user_timeout=5000', '%s', $password, [PDO::ATTR_TIMEOUT => 2])", hosts, ports, in.DB, in.User)
		w("  (PDO ignores connect_timeout in the DSN: PDO::ATTR_TIMEOUT is the one it uses)")
	case StackNode:
		w("  node-postgres has no multi-host support and no target_session_attrs: nothing it can be given follows a role change.")
		w("  Set up the router: understudy init --router, then understudy apply; then understudy connect --stack node.")
	case StackPostgresJS:
		w("  postgres('postgres://%s:<POSTGRES_PASSWORD>@%s/%s?target_session_attrs=primary&connect_timeout=2')", in.User, in.uriHosts(), in.DB)
		w("  (primary, not read-write: postgres.js's read-write check accepts a hot standby on PostgreSQL 14 and later)")
	case StackGo:
		w("  pgxpool.New(ctx, \"postgres://%s:<POSTGRES_PASSWORD>@%s/%s?target_session_attrs=read-write&connect_timeout=2\")", in.User, in.uriHosts(), in.DB)
		w("  and a context deadline on every request (pgx has no tcp_user_timeout)")
	}
	w("Survives a switchover or an emergency promote: %s.", s.Switchover)
	w("The primary's server unreachable (a powered-off VM, a partition): %s.", s.Vanished)
	return b.String()
}

// ConnectTable renders the survival table as Markdown (docs/connecting.md).
func ConnectTable() string {
	var b strings.Builder
	b.WriteString("| stack (`--stack`) | switchover / dead and refusing primary | primary's server unreachable |\n|---|---|---|\n")
	for _, s := range SurvivalTable {
		fmt.Fprintf(&b, "| %s (`%s`) | %s | %s |\n", s.Name, s.Stack, s.Switchover, s.Vanished)
	}
	return b.String()
}

// DeployedConnect is the connection input of a deployed Kamal app.
func DeployedConnect(d *Deployed) ConnectInput {
	user := d.DBUser
	if d.DBUserSecret != "" {
		user = "<" + d.DBUserSecret + ">"
	}
	db := user
	if a := d.Config.Accessory(d.Cluster.InitialPrimary); a != nil {
		if v, ok := a.Env().Clear["POSTGRES_DB"]; ok {
			if s, ok := d.Config.Str(v); ok && s != "" {
				db = s
			}
		}
		for _, s := range a.Env().Secret {
			if s.Name == "POSTGRES_DB" {
				db = "<" + s.Secret + ">"
			}
		}
	}
	in := ConnectInput{Nodes: d.Cluster.Nodes, User: user, DB: db}
	if d.Router != nil {
		in.Router = &RouterEndpoint{Host: d.Config.Service() + "-" + d.Router.Name, Port: router.DefaultPort, ROPort: router.DefaultROPort}
	}
	return in
}
