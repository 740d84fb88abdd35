package setup

import "testing"

func TestParseImage(t *testing.T) {
	cases := []struct {
		ref      string
		postgres bool
		major    int
		alpine   bool
	}{
		{"postgres:17", true, 17, false},
		{"postgres:17.2-alpine3.21", true, 17, true},
		{"docker.io/library/postgres:16@sha256:abcd", true, 16, false},
		{"mirror.gcr.io/library/postgres:18-trixie", true, 18, false},
		{"postgres@sha256:abcd", true, 0, false},
		{"postgres:latest", true, 0, false},
		{"postgis/postgis:16-3.4", true, 16, false},
		{"timescale/timescaledb:2.17.2-pg17", true, 17, false},
		{"timescale/timescaledb-ha:pg15", true, 15, false},
		{"pgvector/pgvector:pg17", true, 17, false},
		{"redis:7", false, 0, false},
		{"postgres:9.6", true, 0, false},
	}
	for _, c := range cases {
		im := ParseImage(c.ref)
		if im.Postgres != c.postgres || im.Major != c.major || im.Alpine != c.alpine {
			t.Errorf("%s: %+v", c.ref, im)
		}
	}
}
