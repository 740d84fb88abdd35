package setup

import (
	"strings"
	"testing"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/kamal"
)

func withBackup(o Options, bo BackupOptions) Options {
	o.Backup = &bo
	return o
}

var s3Flags = BackupOptions{Endpoint: "https://s3.eu-central-1.amazonaws.com", Bucket: "app-backups"}

// init --backup adds the backup accessory (the primary's image, on the
// standby's server, host network), backup.json as data, and the backup
// secrets as references; a second run changes nothing, and the live
// commands read the same setup back.
func TestBackupAccessoryIsAddedOnceAndReadBack(t *testing.T) {
	src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
	o := withBackup(replica, s3Flags)
	p, err := Build(src, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Changes {
		src[c.Path] = c.New
	}
	again, err := Build(src, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range again.Changes {
		t.Errorf("second init --backup changes %s:\n%s", c.Path, c.New)
	}
	cfg, err := kamal.Load(src, "config/deploy.yml", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateKamal(cfg); err != nil {
		t.Fatal(err)
	}
	a := cfg.Accessory("db-backup")
	if a == nil {
		t.Fatalf("no db-backup accessory:\n%s", src["config/deploy.yml"])
	}
	for k, want := range map[string]string{"image": "postgres:16", "host": replica.ReplicaHost, "network": "host", "cmd": BackupCmd} {
		if got, _ := a.Str(k); got != want {
			t.Errorf("db-backup %s = %q, want %q", k, got, want)
		}
	}
	if a.Field("port") != nil {
		t.Error("the backup accessory publishes a port")
	}
	var secrets []string
	for _, s := range a.Env().Secret {
		secrets = append(secrets, s.Secret)
	}
	if got := strings.Join(secrets, " "); got != "REPLICATION_PASSWORD BACKUP_S3_ACCESS_KEY_ID BACKUP_S3_SECRET_ACCESS_KEY BACKUP_ENCRYPTION_KEY" {
		t.Errorf("db-backup's secrets: %s", got)
	}
	for _, ref := range []string{"BACKUP_S3_ACCESS_KEY_ID=$BACKUP_S3_ACCESS_KEY_ID\n", "BACKUP_S3_SECRET_ACCESS_KEY=$BACKUP_S3_SECRET_ACCESS_KEY\n", "BACKUP_ENCRYPTION_KEY=$BACKUP_ENCRYPTION_KEY\n"} {
		if !strings.Contains(src[".kamal/secrets"], ref) {
			t.Errorf(".kamal/secrets lacks %q:\n%s", ref, src[".kamal/secrets"])
		}
	}
	// The primary is still db: the backup accessory runs a postgres image
	// but is not a candidate.
	if again.Primary != "db" {
		t.Errorf("primary %q", again.Primary)
	}
	d, err := LoadDeployed(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Backup == nil || d.BackupHost != replica.ReplicaHost || d.BackupText != src["config/understudy/backup.json"] {
		t.Fatalf("LoadDeployed: backup %+v on %q", d.Backup, d.BackupHost)
	}
	s := *d.Backup
	if s.Storage.Bucket != "app-backups" || s.Storage.Prefix != "app" || s.Major != 16 || s.User != "replicator" || s.Retention.KeepBases != DefaultKeepBases {
		t.Errorf("setup read back: %+v", s)
	}
	if len(s.Sources) != 2 || s.Sources[0] != (backup.Source{Name: "db", Host: "10.0.0.2", Port: 5432}) || s.Sources[1] != (backup.Source{Name: "db-replica", Host: "10.0.0.3", Port: 5432}) {
		t.Errorf("sources %+v", s.Sources)
	}
	// Without --backup, a later init leaves the backups as they are.
	plain, err := Build(src, replica)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Changes) != 0 {
		t.Errorf("init without --backup changes %s", plain.Changes[0].Path)
	}
}

func TestBackupRefusals(t *testing.T) {
	cases := []struct {
		name, where, want string
		bo                BackupOptions
		deploy            func(string) string
	}{
		{"no endpoint", "--backup-endpoint", "want a URL", BackupOptions{Bucket: "b"}, nil},
		{"a path in the endpoint", "--backup-endpoint", "no path", BackupOptions{Endpoint: "https://s3.example.com/b", Bucket: "b"}, nil},
		{"no bucket", "--backup-endpoint", "want a bucket name", BackupOptions{Endpoint: "https://s3.example.com"}, nil},
		{"another server", "--backup-host", "neither node's server", BackupOptions{Endpoint: "https://s3.example.com", Bucket: "b", Host: "192.0.2.99"}, nil},
		{"a name taken", "config/deploy.yml:", "was not made by understudy", s3Flags, func(s string) string {
			return s + "  db-backup:\n    image: someone/backup\n    host: 192.0.2.3\n"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := app("postgres:16", "10.0.0.2:5432:5432", "postgres")
			if tc.deploy != nil {
				src["config/deploy.yml"] = tc.deploy(src["config/deploy.yml"])
			}
			_, err := Build(src, withBackup(replica, tc.bo))
			r, ok := err.(*Refusal)
			if !ok {
				t.Fatalf("want a refusal, got %v", err)
			}
			if !strings.HasPrefix(r.Where, tc.where) || !strings.Contains(r.Problem, tc.want) || r.Fix == "" {
				t.Errorf("refusal %q / %q / %q", r.Where, r.Problem, r.Fix)
			}
		})
	}
}

// The backup secrets are fetched the way the database password is.
func TestBackupSecretsFollowThePasswordsStore(t *testing.T) {
	src := app("postgres:17", "10.0.0.2:5432:5432", "postgres")
	src[".kamal/secrets"] = "SECRETS=$(kamal secrets fetch --adapter bitwarden --account a POSTGRES_PASSWORD)\nPOSTGRES_PASSWORD=$(kamal secrets extract POSTGRES_PASSWORD $SECRETS)\n"
	p, err := Build(src, withBackup(replica, s3Flags))
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, c := range p.Changes {
		if c.Path == ".kamal/secrets" {
			got = c.New
		}
	}
	want := "SECRETS=$(kamal secrets fetch --adapter bitwarden --account a POSTGRES_PASSWORD REPLICATION_PASSWORD MONITOR_PASSWORD BACKUP_S3_ACCESS_KEY_ID BACKUP_S3_SECRET_ACCESS_KEY BACKUP_ENCRYPTION_KEY)\n" +
		"POSTGRES_PASSWORD=$(kamal secrets extract POSTGRES_PASSWORD $SECRETS)\n" +
		"REPLICATION_PASSWORD=$(kamal secrets extract REPLICATION_PASSWORD $SECRETS)\n" +
		"MONITOR_PASSWORD=$(kamal secrets extract MONITOR_PASSWORD $SECRETS)\n" +
		"BACKUP_S3_ACCESS_KEY_ID=$(kamal secrets extract BACKUP_S3_ACCESS_KEY_ID $SECRETS)\n" +
		"BACKUP_S3_SECRET_ACCESS_KEY=$(kamal secrets extract BACKUP_S3_SECRET_ACCESS_KEY $SECRETS)\n" +
		"BACKUP_ENCRYPTION_KEY=$(kamal secrets extract BACKUP_ENCRYPTION_KEY $SECRETS)\n"
	if got != want {
		t.Errorf("secrets:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "understudy backup keygen") {
		t.Errorf("the notes do not say where the encryption key comes from:\n%s", strings.Join(p.Notes, "\n"))
	}
}
