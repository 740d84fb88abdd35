package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/understudy-dev/understudy/pgops"
)

// PGSource is how the agent reaches its local PostgreSQL: a socket
// directory (the lab) or an address (a Kamal server's private IP), as the
// monitoring role. The password is never part of a connection string.
type PGSource struct {
	Host     string // a socket directory, or an address
	Port     int
	User     string
	Password string // "" where the login is trusted (the lab's local socket)
	Database string // default postgres
}

// Observer holds one connection to the local PostgreSQL and reads it
// under a deadline. Not safe for concurrent use: one loop owns it.
type Observer struct {
	src   PGSource
	conn  *pgx.Conn
	sysid string // the connected cluster's system identifier
}

// NewObserver makes an observer; it connects on first use.
func NewObserver(src PGSource) *Observer {
	if src.Database == "" {
		src.Database = "postgres"
	}
	return &Observer{src: src}
}

func (o *Observer) config() (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		quoteConn(o.src.Host), o.src.Port, quoteConn(o.src.User), quoteConn(o.src.Database)))
	if err != nil {
		return nil, err
	}
	cfg.Password = o.src.Password
	cfg.RuntimeParams["application_name"] = "understudy-agent"
	// The session must never hold anything up: no statement may run long.
	cfg.RuntimeParams["statement_timeout"] = "5s"
	cfg.RuntimeParams["lock_timeout"] = "1s"
	// One observation is a single simple query; no prepared statements to
	// lose when the connection is replaced.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return cfg, nil
}

func quoteConn(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// Probe reads the server's role within ctx's deadline. A server that does
// not answer in time, refuses, or fails the query gives an error (and the
// connection is dropped, to be made again next time).
func (o *Observer) Probe(ctx context.Context) (pgops.RoleProbe, error) {
	if o.conn == nil || o.conn.IsClosed() {
		cfg, err := o.config()
		if err != nil {
			return pgops.RoleProbe{}, err
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return pgops.RoleProbe{}, describe(ctx, err)
		}
		o.conn = c
		if o.sysid, err = pgops.SystemIdentifier(ctx, c); err != nil {
			o.Close()
			return pgops.RoleProbe{}, describe(ctx, err)
		}
	}
	p, err := pgops.ReadRoleProbe(ctx, o.conn)
	if err != nil {
		o.Close()
		return p, describe(ctx, err)
	}
	p.SystemID = o.sysid
	return p, nil
}

// Details reads what /metrics and /status show beyond the role: the
// walsenders and slots, and when the timeline began.
func (o *Observer) Details(ctx context.Context, p pgops.RoleProbe) (Details, error) {
	d := Details{}
	if o.conn == nil || o.conn.IsClosed() {
		return d, errors.New("not connected")
	}
	var err error
	if !p.InRecovery {
		if d.Replication, err = pgops.ReadReplication(ctx, o.conn); err != nil {
			o.Close()
			return d, describe(ctx, err)
		}
	}
	if d.Slots, err = pgops.ReadSlots(ctx, o.conn); err != nil {
		o.Close()
		return d, describe(ctx, err)
	}
	if d.TimelineStarted, err = pgops.TimelineStarted(ctx, o.conn, p.Timeline); err != nil {
		o.Close()
		return d, describe(ctx, err)
	}
	return d, nil
}

// Close drops the connection.
func (o *Observer) Close() {
	if o.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		o.conn.Close(ctx)
		cancel()
		o.conn = nil
	}
}

// ErrNoAnswer: the server did not answer within the deadline.
var ErrNoAnswer = errors.New("no answer within the deadline")

// describe turns a connection or query error into a short reason with no
// secret in it (pgx's messages name the host, port and user, never the
// password).
func describe(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ErrNoAnswer
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrNoAnswer
	}
	return err
}
