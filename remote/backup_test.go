package remote

import (
	"os"
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/kamal"
	"github.com/understudy-dev/understudy/live"
)

func TestAgentFileCommands(t *testing.T) {
	if got := InstallCmd("$PWD/shop-db-backup/bin", "understudy"); got != "/usr/bin/env mkdir -p $PWD/shop-db-backup/bin && cat > $PWD/shop-db-backup/bin/.understudy.new && chmod 755 $PWD/shop-db-backup/bin/.understudy.new && mv -f $PWD/shop-db-backup/bin/.understudy.new $PWD/shop-db-backup/bin/understudy" {
		t.Errorf("InstallCmd: %s", got)
	}
	sum := strings.Repeat("ab", 32)
	got := ParseSums(sum + "  /root/shop-db-backup/bin/understudy\n" + sum + " *shop-db-backup/understudy/backup.json\nsha256sum: x: No such file\n")
	if len(got) != 2 || got["/root/shop-db-backup/bin/understudy"] != sum || got["shop-db-backup/understudy/backup.json"] != sum {
		t.Errorf("ParseSums: %v", got)
	}
	if got := ExecCmd("shop-db-backup", "/understudy/bin/understudy", "backup", "--config", "/understudy/backup.json"); got != "docker exec 'shop-db-backup' '/understudy/bin/understudy' 'backup' '--config' '/understudy/backup.json'" {
		t.Errorf("ExecCmd: %s", got)
	}
}

// A binary the container cannot run is refused before anything is copied.
func TestCheckBinaryRefusesWhatTheContainerCannotRun(t *testing.T) {
	notELF := t.TempDir() + "/understudy"
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if err := checkBinary(notELF, "x86_64"); err == nil || !strings.Contains(err.Error(), "--agent-binary") {
		t.Errorf("a script: %v", err)
	}
	// /bin/sh is a dynamically linked ELF of this machine.
	if err := checkBinary("/bin/sh", "x86_64"); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") && !strings.Contains(err.Error(), "built for") {
		t.Errorf("a dynamic binary: %v", err)
	}
}

func TestRestoreNodeCmd(t *testing.T) {
	got := RestoreNodeCmd("postgres:17", kamal.Directory{HostPath: "$PWD/shop-db/data", ContainerPath: "/var/lib/postgresql/data"}, "$PWD/.understudy/bin",
		[]string{"--pgdata", "/var/lib/postgresql/data", "--to", "2026-12-01 10:15:30"})
	want := "/usr/bin/env mkdir -p $PWD/shop-db/data && docker run --rm -i --network host --volume $PWD/shop-db/data:/var/lib/postgresql/data " +
		"--volume $PWD/.understudy/bin:/understudy/bin:ro --entrypoint /understudy/bin/understudy 'postgres:17' restore --here '--pgdata' '/var/lib/postgresql/data' '--to' '2026-12-01 10:15:30'"
	if got != want {
		t.Errorf("RestoreNodeCmd:\n%s\nwant:\n%s", got, want)
	}
	if got := ListCmd("$PWD/shop-db/data"); got != "ls -A $PWD/shop-db/data 2>/dev/null | head -5; true" {
		t.Errorf("ListCmd: %s", got)
	}
}

// The Kamal site's command lines: the drill in the backup accessory with
// its flags, and restore --here with the target as the user gave it (no
// secret: those go on stdin).
func TestBackupSiteCommandLines(t *testing.T) {
	s := &BackupSite{Control: &Control{DBUser: "shop"}, Binary: "/understudy/bin/understudy", SetupPath: "/understudy/backup.json", DataDir: "/var/lib/postgresql/data", Major: 17}
	got := strings.Join(s.DrillArgv(live.DrillOptions{Check: "SELECT count(*) FROM orders", JSON: true}), " | ")
	if want := "/understudy/bin/understudy | restore | drill | --config | /understudy/backup.json | --check | SELECT count(*) FROM orders | --json"; got != want {
		t.Errorf("drill argv:\n got %s\nwant %s", got, want)
	}
	if got := strings.Join(s.DrillArgv(live.DrillOptions{}), " "); got != "/understudy/bin/understudy restore drill --config /understudy/backup.json" {
		t.Errorf("plain drill argv: %s", got)
	}
	got = strings.Join(s.RestoreHereArgs(live.RestoreTarget{Target: backup.Target{Timeline: 2}, Text: "2026-12-01 10:15:30"}), " | ")
	if want := "--pgdata | /var/lib/postgresql/data | --to | 2026-12-01 10:15:30 | --timeline | 2 | --user | shop | --major | 17"; got != want {
		t.Errorf("restore --here args:\n got %s\nwant %s", got, want)
	}
}
