package live

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/understudy-dev/understudy/pgops"
)

// Proof is what verify measured on one standby.
type Proof struct {
	Standby string        `json:"standby"`
	Delay   time.Duration `json:"delay_ns"` // canary written on the primary → visible here
	Refusal string        `json:"write_refusal"`
}

// OutsiderProof is a replication login refused from a non-node address.
type OutsiderProof struct {
	From    string `json:"from"`
	Node    string `json:"node"`
	Refusal string `json:"refusal"`
}

// VerifyResult is verify's evidence.
type VerifyResult struct {
	Primary  string          `json:"primary"`
	Proofs   []Proof         `json:"standbys"`
	Outsider []OutsiderProof `json:"outsider,omitempty"`
}

// Verify writes a canary row on the primary and times its arrival on every
// standby, proves each standby refuses writes and, where the control can
// dial from a third address, that every node refuses replication from it
// even with the right password.
func Verify(ctx context.Context, t Target, timeout time.Duration) (*VerifyResult, error) {
	st, err := GatherNodes(ctx, t)
	if err != nil {
		return nil, err
	}
	if st.Primary == "" {
		return nil, errors.New("there is no single writable primary to write a canary on; run `understudy check` to see why")
	}
	res := &VerifyResult{Primary: st.Primary}
	pc, err := t.Control.Conn(ctx, st.Primary)
	if err != nil {
		return nil, fmt.Errorf("connecting to the primary %s: %w", st.Primary, err)
	}
	defer pc.Close(context.WithoutCancel(ctx))
	for _, n := range t.Cluster.Nodes {
		if n.Name == st.Primary {
			continue
		}
		ns := st.Node(n.Name)
		if ns.Role != RoleStandby {
			return res, fmt.Errorf("%s is not running as a standby (%s); run `understudy check`", n.Name, ns.Role)
		}
		sc, err := t.Control.Conn(ctx, n.Name)
		if err != nil {
			return res, fmt.Errorf("connecting to %s: %w", n.Name, err)
		}
		p := Proof{Standby: n.Name}
		p.Delay, err = pgops.Canary(ctx, pc, sc, timeout)
		if err == nil {
			p.Refusal, err = pgops.ProveReadOnly(ctx, sc)
		}
		sc.Close(ctx)
		if err != nil {
			return res, fmt.Errorf("%s: %w", n.Name, err)
		}
		res.Proofs = append(res.Proofs, p)
	}
	if o, ok := t.Control.(Outsider); ok && o.OutsiderAddr() != "" {
		for _, n := range t.Cluster.Nodes {
			refusal, err := replicationLogin(ctx, t, n.Addr, n.Port, o.DialOutsider)
			if err == nil {
				return res, fmt.Errorf("%s accepted a replication login from %s, which is not a node: its pg_hba file lets too much in. Mount understudy's pg_hba file and run `understudy apply`", n.Name, o.OutsiderAddr())
			}
			if refusal == "" {
				return res, fmt.Errorf("trying a replication login on %s from %s: %w", n.Name, o.OutsiderAddr(), err)
			}
			res.Outsider = append(res.Outsider, OutsiderProof{From: o.OutsiderAddr(), Node: n.Name, Refusal: refusal})
		}
	}
	return res, nil
}

// replicationLogin opens a physical replication connection with the right
// password. It returns the server's refusal when pg_hba rejects it.
func replicationLogin(ctx context.Context, t Target, addr string, port int, dial pgconn.DialFunc) (refusal string, err error) {
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=replication sslmode=disable connect_timeout=5", addr, port, t.Cluster.ReplUser))
	if err != nil {
		return "", err
	}
	cfg.Password = t.Password
	cfg.RuntimeParams["replication"] = "true"
	if dial != nil {
		cfg.DialFunc = dial
	}
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		c.Close(ctx)
		return "", nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "28000" { // invalid_authorization_specification: pg_hba said no
		return pgErr.Message, err
	}
	return "", err
}
