// Package examples holds example Kamal apps: teamyap is the app of the
// replication guide understudy grew from (its config/deploy.yml before
// replication). The demo copies it to a temporary directory.
package examples

import "embed"

//go:embed all:teamyap
var FS embed.FS
