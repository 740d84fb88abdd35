package pgops_test

import (
	"os"

	"github.com/understudy-dev/understudy/internal/pgtest"
)

func writeAs(env *pgtest.Env, path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Chown(path, env.UID(), env.GID())
}
