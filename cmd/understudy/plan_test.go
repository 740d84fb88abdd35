package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/setup"
)

// init's summary names each node's address and port as a client would
// write them: [addr]:port for IPv6 (issue 19 item 7).
func TestPlanSummaryBracketsIPv6(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "config"), 0o755)
	os.MkdirAll(filepath.Join(dir, ".kamal"), 0o755)
	os.WriteFile(filepath.Join(dir, ".kamal", "secrets"), []byte("POSTGRES_PASSWORD=$POSTGRES_PASSWORD\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "config", "deploy.yml"), []byte(`service: app
image: acme/app
servers:
  - 192.0.2.1
builder:
  arch: amd64
registry:
  username: acme
  password:
    - KAMAL_REGISTRY_PASSWORD
accessories:
  db:
    image: postgres:16
    host: 192.0.2.2
    port: "[fd00::20]:5432:5432"
    env:
      secret:
        - POSTGRES_PASSWORD
    directories:
      - data:/var/lib/postgresql/data
`), 0o644)
	p, err := setup.Build(kamal.DirSource(dir), setup.Options{ReplicaHost: "192.0.2.3", ReplicaIP: "fd00::21"})
	if err != nil {
		t.Fatal(err)
	}
	out := renderPlan(p, false)
	for _, w := range []string{"listening on [fd00::20]:5432\n", "listening on [fd00::21]:5432\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("the summary lacks %q:\n%s", w, out)
		}
	}
}
