package live

import (
	"net"
	"slices"

	"github.com/understudy-dev/understudy/pgops"
)

// HBAVerdict is which pg_hba line decides a connection, first match wins
// (auth-pg-hba-conf.html).
type HBAVerdict struct {
	Allowed bool   `json:"allowed"`
	Line    int    `json:"line"`   // 0: no line matches, so the server refuses
	Method  string `json:"method"` // the matching line's method
}

// HBADecides finds the rule that decides a TCP connection without TLS from
// ip as user to database ("replication" for a replication connection).
// Only the rule kinds understudy can judge from the outside are matched:
// group membership (+role) and samehost/samenet never match here.
func HBADecides(rules []pgops.HBARule, database, user, ip string) HBAVerdict {
	addr := net.ParseIP(ip)
	for _, r := range rules {
		if r.Error != "" || (r.Type != "host" && r.Type != "hostnossl") {
			continue
		}
		if !matchDatabase(r.Databases, database, user) || !(slices.Contains(r.Users, "all") || slices.Contains(r.Users, user)) {
			continue
		}
		if !matchAddress(r, addr) {
			continue
		}
		return HBAVerdict{Allowed: r.Method != "reject", Line: r.Line, Method: r.Method}
	}
	return HBAVerdict{}
}

func matchDatabase(dbs []string, database, user string) bool {
	if database == "replication" { // "all" does not cover replication connections
		return slices.Contains(dbs, "replication")
	}
	return slices.Contains(dbs, "all") || slices.Contains(dbs, database) || (slices.Contains(dbs, "sameuser") && database == user)
}

func matchAddress(r pgops.HBARule, ip net.IP) bool {
	switch r.Address {
	case "all":
		return true
	case "", "samehost", "samenet":
		return false
	}
	base := net.ParseIP(r.Address)
	mask := net.ParseIP(r.Netmask)
	if base == nil || mask == nil || ip == nil {
		return false
	}
	if b4, m4, i4 := base.To4(), mask.To4(), ip.To4(); b4 != nil && m4 != nil {
		if i4 == nil {
			return false
		}
		return i4.Mask(net.IPMask(m4)).Equal(b4.Mask(net.IPMask(m4)))
	}
	if base.To4() != nil || ip.To4() != nil {
		return false
	}
	return ip.Mask(net.IPMask(mask)).Equal(base.Mask(net.IPMask(mask)))
}
