package setup

import (
	"regexp"
	"strconv"
	"strings"
)

// Image is what understudy needs to know about an accessory's image.
type Image struct {
	Ref      string
	Name     string // last path element, e.g. "postgres", "postgis"
	Tag      string // without the digest
	Postgres bool   // the official image or one built on it
	Major    int    // 0 when the reference does not say
	Alpine   bool
	// Foreign names a PostgreSQL image with an entrypoint of its own
	// (Bitnami, Crunchy, Spilo...): not the official image's
	// docker-entrypoint.sh and PGDATA, which the boot script hands over to.
	Foreign string
}

// foreignImages are PostgreSQL images known not to be built on the
// official one, by repository path or name.
var foreignImages = []struct{ match, who string }{
	{"bitnami/", "Bitnami's image"},
	{"bitnamilegacy/", "Bitnami's image"},
	{"crunchydata/", "Crunchy Data's image"},
	{"zalando/spilo", "Spilo (Patroni)"},
	{"cloudnative-pg/", "CloudNativePG's operand image"},
	{"postgresql-repmgr", "a repmgr image"},
}

// Images built FROM the official postgres image (so the same entrypoint,
// PGDATA and tools): PostGIS, TimescaleDB, pgvector and friends.
var postgresFamily = map[string]bool{
	"postgres": true, "postgis": true, "timescaledb": true, "timescaledb-ha": true,
	"pgvector": true, "timescaledb-postgis": true,
}

var (
	pgTagRE      = regexp.MustCompile(`(?:^|[-_.])pg-?(\d{2})(?:$|[-_.])`)
	leadingVerRE = regexp.MustCompile(`^(\d{1,2})(?:\.\d+)*(?:$|[-_])`)
)

// ParseImage reads an image reference: [registry/][path/]name[:tag][@digest].
func ParseImage(ref string) Image {
	im := Image{Ref: ref}
	r := ref
	if i := strings.Index(r, "@"); i >= 0 {
		r = r[:i]
	}
	last := r
	if i := strings.LastIndex(r, "/"); i >= 0 {
		last = r[i+1:]
	}
	name, tag, _ := strings.Cut(last, ":")
	im.Name, im.Tag = name, tag
	im.Postgres = postgresFamily[name]
	for _, f := range foreignImages {
		if strings.Contains(r, f.match) {
			im.Postgres, im.Foreign = false, f.who
		}
	}
	im.Alpine = strings.Contains(tag, "alpine")
	if g := pgTagRE.FindStringSubmatch(tag); g != nil {
		im.Major, _ = strconv.Atoi(g[1])
	} else if g := leadingVerRE.FindStringSubmatch(tag); g != nil && (name == "postgres" || name == "postgis" || im.Foreign != "") {
		im.Major, _ = strconv.Atoi(g[1])
	}
	if im.Major >= 1 && im.Major < 10 { // 9.6 and older: not a current major
		im.Major = 0
	}
	return im
}

// DefaultPGDATA is where the official image keeps the cluster.
// postgres:18 moved it (the postgres image's docs: PGDATA for 18).
func DefaultPGDATA(major int) string {
	if major >= 18 {
		return "/var/lib/postgresql/" + strconv.Itoa(major) + "/docker"
	}
	return "/var/lib/postgresql/data"
}
