package failover

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/understudy-dev/understudy/pgconf"
)

// OperatorClientName is the common name of the certificate a client on the
// operator's machine presents (members check only that the CA signed it).
const OperatorClientName = "understudy-client"

// OperatorStore opens the failover keys from outside the members, for
// switchover, promote and `failover pause|resume|status` (the lab's
// machine, or the operator's for a Kamal app): an etcd client to every
// member's client URL, so it still works with one member gone, its
// certificate derived from the secret in a temporary directory that is
// removed once the client has read it. dial opens the client's TCP
// connections (nil: directly). close ends the client.
func OperatorStore(f *pgconf.Failover, secret []byte, dial Dialer) (st *Store, close func(), err error) {
	if f == nil {
		return nil, nil, fmt.Errorf("this cluster has no failover")
	}
	dir, err := os.MkdirTemp("", "understudy-failover-client-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir) // NewClient reads the files; nothing keeps them
	// Members skip the SAN check on clients; the address only fills the
	// certificate.
	tlsf, err := WriteTLS(dir, secret, OperatorClientName, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now())
	if err != nil {
		return nil, nil, err
	}
	spec := SpecFor(f, f.Witness, "")
	var urls []string
	for _, m := range spec.Members {
		urls = append(urls, spec.ClientURL(m))
	}
	c, err := NewClient(urls, tlsf, dial)
	if err != nil {
		return nil, nil, err
	}
	return NewStore(c, f.Token, SettingsFor(f)), func() { c.Close() }, nil
}
