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
	src  PGSource
	conn *pgx.Conn
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

// connect makes the connection when there is none.
func (o *Observer) connect(ctx context.Context) error {
	if o.conn != nil && !o.conn.IsClosed() {
		return nil
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return describe(ctx, err)
	}
	o.conn = c
	return nil
}

// Probe reads the server's role within ctx's deadline. A server that does
// not answer in time, refuses, or fails the query gives an error (and the
// connection is dropped, to be made again next time).
func (o *Observer) Probe(ctx context.Context) (pgops.RoleProbe, error) {
	if err := o.connect(ctx); err != nil {
		return pgops.RoleProbe{}, err
	}
	p, err := pgops.ReadRoleProbe(ctx, o.conn)
	if err != nil {
		o.Close()
		return p, describe(ctx, err)
	}
	return p, nil
}

// Slow reads what the slow loop keeps: the files (control file, fence
// note), the walsenders and slots, and when the timeline began.
func (o *Observer) Slow(ctx context.Context, timeline pgops.Timeline) (pgops.NodeFiles, Details, error) {
	var d Details
	if err := o.connect(ctx); err != nil {
		return pgops.NodeFiles{}, d, err
	}
	fail := func(err error) (pgops.NodeFiles, Details, error) {
		o.Close()
		return pgops.NodeFiles{}, d, describe(ctx, err)
	}
	f, err := pgops.ReadNodeFiles(ctx, o.conn)
	if err != nil {
		return fail(err)
	}
	standby, err := pgops.InRecovery(ctx, o.conn)
	if err != nil {
		return fail(err)
	}
	if !standby { // a standby's walsenders (the backup agent's) are not replicas of the cluster
		if d.Replication, err = pgops.ReadReplication(ctx, o.conn); err != nil {
			return fail(err)
		}
	}
	if d.Slots, err = pgops.ReadSlots(ctx, o.conn); err != nil {
		return fail(err)
	}
	if timeline == 0 {
		timeline = f.CheckpointTimeline
	}
	if d.TimelineStarted, err = pgops.TimelineStarted(ctx, o.conn, timeline); err != nil {
		return fail(err)
	}
	return f, d, nil
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
