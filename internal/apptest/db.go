package apptest

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-dev/understudy/pgops"
)

// NodeExpr is what `writes.node` records: the node that took the write, as
// the server itself says. understudy's boot script starts each node with
// cluster_name set to its name; a server started otherwise is named by the
// address and port the connection reached.
const NodeExpr = `coalesce(nullif(current_setting('cluster_name'), ''), host(inet_server_addr()) || ':' || inet_server_port(), 'local socket')`

// Schema creates the table the writers insert into.
const Schema = `CREATE TABLE IF NOT EXISTS writes (
	id bigserial PRIMARY KEY,
	client text NOT NULL,
	seq bigint NOT NULL,
	node text NOT NULL DEFAULT ` + NodeExpr + `,
	at timestamptz NOT NULL DEFAULT clock_timestamp()
)`

// Row is one row of `writes` as the final primary has it.
type Row struct {
	Client string
	Seq    int64
	Node   string
}

// Prepare makes the database the writers use, on the primary admin is
// connected to as a superuser: the app role (its password sent as a SCRAM
// verifier, never in clear), its database, and `writes` owned by it.
// Running it again changes nothing but the password.
func Prepare(ctx context.Context, admin *pgx.Conn, s Settings) error {
	salt := make([]byte, 16)
	rand.Read(salt)
	verifier, err := pgops.SCRAMVerifier(s.Password, salt, 4096)
	if err != nil {
		return err
	}
	role := pgx.Identifier{s.User}.Sanitize()
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", s.User).Scan(&exists); err != nil {
		return fmt.Errorf("looking up role %s: %w", s.User, err)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf("%s ROLE %s LOGIN PASSWORD %s", verb, role, literal(verifier))); err != nil {
		return fmt.Errorf("%s role %s: %w", strings.ToLower(verb), s.User, err)
	}
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", s.Database).Scan(&exists); err != nil {
		return fmt.Errorf("looking up database %s: %w", s.Database, err)
	}
	if !exists {
		if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", pgx.Identifier{s.Database}.Sanitize(), role)); err != nil {
			return fmt.Errorf("creating database %s: %w", s.Database, err)
		}
	}
	c, err := inDatabase(ctx, admin, s.Database)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	for _, q := range []string{"SET ROLE " + role, Schema, "RESET ROLE"} {
		if _, err := c.Exec(ctx, q); err != nil {
			return fmt.Errorf("creating the writes table in %s: %w", s.Database, err)
		}
	}
	return nil
}

// ReadRows reads every row of `writes` from the node admin is connected to
// (as a superuser), in the settings' database.
func ReadRows(ctx context.Context, admin *pgx.Conn, s Settings) ([]Row, error) {
	c, err := inDatabase(ctx, admin, s.Database)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	rows, err := c.Query(ctx, "SELECT client, seq, node FROM writes")
	if err != nil {
		return nil, fmt.Errorf("reading writes from %s: %w", s.Database, err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Row, error) {
		var w Row
		err := r.Scan(&w.Client, &w.Seq, &w.Node)
		return w, err
	})
}

// inDatabase opens a second connection like admin's, to another database.
func inDatabase(ctx context.Context, admin *pgx.Conn, database string) (*pgx.Conn, error) {
	cfg := admin.Config().Copy()
	cfg.Database = database
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to database %s on %s: %w", database, cfg.Host, err)
	}
	return c, nil
}

func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
