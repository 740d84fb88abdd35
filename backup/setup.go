package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/understudy-dev/understudy/atomicfile"
	"github.com/understudy-dev/understudy/pgops"
)

// Setup is a Kamal app's backup setup as data: config/understudy/backup.json,
// written by `understudy init --backup`, mounted into the backup accessory
// for the agent, and read back by the live commands on the operator's
// machine. It names the secrets (environment variables, which Kamal fills
// from .kamal/secrets), never holds one.
type Setup struct {
	Accessory string   `json:"accessory"` // the backup accessory's name in deploy.yml
	Major     int      `json:"postgres_major"`
	Storage   S3Config `json:"storage"`
	Sources   []Source `json:"sources"` // every node, at the address and port it publishes
	User      string   `json:"replication_user"`
	// StateDir is the accessory's own volume: the spool, the passfile, the
	// agent's status file.
	StateDir  string `json:"state_dir"`
	SpoolCap  int64  `json:"spool_cap_bytes"`
	BaseEvery string `json:"base_every"` // a Go duration, e.g. "24h"
	// DrillEvery: the agent restores the latest backup into scratch space
	// in StateDir this often and records the drill ("" or "0": never).
	DrillEvery string      `json:"drill_every,omitempty"`
	DrillCheck string      `json:"drill_check,omitempty"` // SQL run on the drill's copy
	Retention  Policy      `json:"retention"`
	Secrets    SecretNames `json:"secrets"`
}

// SecretNames are the environment variables the agent reads its secrets
// from, and the .kamal/secrets keys behind them.
type SecretNames struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	EncryptionKey   string `json:"encryption_key"`
	Replication     string `json:"replication_password"`
}

// DefaultSecretNames are the names init writes.
var DefaultSecretNames = SecretNames{
	AccessKeyID:     "BACKUP_S3_ACCESS_KEY_ID",
	SecretAccessKey: "BACKUP_S3_SECRET_ACCESS_KEY",
	EncryptionKey:   "BACKUP_ENCRYPTION_KEY",
	Replication:     "REPLICATION_PASSWORD",
}

// Names lists the secrets in the order init writes them.
func (n SecretNames) Names() []string {
	return []string{n.Replication, n.AccessKeyID, n.SecretAccessKey, n.EncryptionKey}
}

// MarshalSetup renders the setup as the file init writes. Pure.
func MarshalSetup(s Setup) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.Encode(s) // a struct of plain fields: cannot fail
	return b.String()
}

// ParseSetup reads backup.json and checks what the agent depends on.
func ParseSetup(b []byte) (Setup, error) {
	var s Setup
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("not a backup setup: %v", err)
	}
	return s, s.Validate()
}

// Validate checks what the agent depends on.
func (s Setup) Validate() error {
	if err := s.Storage.Validate(); err != nil {
		return err
	}
	switch {
	case s.Accessory == "":
		return errors.New("no accessory named")
	case len(s.Sources) == 0:
		return errors.New("no sources")
	case s.User == "":
		return errors.New("no replication_user")
	case !filepath.IsAbs(s.StateDir):
		return fmt.Errorf("state_dir %q is not an absolute path", s.StateDir)
	}
	if _, err := s.baseEvery(); err != nil {
		return err
	}
	if _, err := s.drillEvery(); err != nil {
		return err
	}
	for _, n := range s.Secrets.Names() {
		if n == "" {
			return errors.New("a secret's name is missing under \"secrets\"")
		}
	}
	return nil
}

func (s Setup) baseEvery() (time.Duration, error) { return period("base_every", s.BaseEvery) }

func (s Setup) drillEvery() (time.Duration, error) { return period("drill_every", s.DrillEvery) }

func period(name, v string) (time.Duration, error) {
	if v == "" || v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute {
		return 0, fmt.Errorf("%s %q: want a duration of a minute or more, e.g. \"24h\"", name, v)
	}
	return d, nil
}

// Spool is where WAL waits for its upload.
func (s Setup) Spool() string { return filepath.Join(s.StateDir, "spool") }

// Secrets are the setup's secrets, read from the environment.
type Secrets struct {
	AccessKeyID, SecretAccessKey, Replication string
	Key                                       *Key
	DBUser                                    string // POSTGRES_USER: the cluster's bootstrap superuser, for drills
}

// ReadSecrets takes the setup's secrets from env (os.LookupEnv in the
// accessory; the resolved .kamal/secrets on the operator's machine). A
// missing one is named with where it comes from.
func (s Setup) ReadSecrets(env func(string) (string, bool), needReplication bool) (Secrets, error) {
	var out Secrets
	var missing []string
	get := func(name string) string {
		v, ok := env(name)
		if !ok || v == "" {
			missing = append(missing, name)
		}
		return v
	}
	out.AccessKeyID = get(s.Secrets.AccessKeyID)
	out.SecretAccessKey = get(s.Secrets.SecretAccessKey)
	keyText := get(s.Secrets.EncryptionKey)
	if needReplication {
		out.Replication = get(s.Secrets.Replication)
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("the backup secrets %s are not set: define them in .kamal/secrets (as references, e.g. %s=$%s) and run `kamal accessory reboot %s`", strings.Join(missing, ", "), missing[0], missing[0], s.Accessory)
	}
	k, err := ParseKey(keyText)
	if err != nil {
		return out, fmt.Errorf("%s: %w", s.Secrets.EncryptionKey, err)
	}
	out.Key = k
	out.DBUser = "postgres"
	if u, ok := env("POSTGRES_USER"); ok && u != "" {
		out.DBUser = u
	}
	return out, nil
}

// Open opens the setup's bucket with the secrets.
func (s Setup) Open(sec Secrets) (*S3, error) {
	return OpenS3(s.Storage, sec.AccessKeyID, sec.SecretAccessKey)
}

// Passfile is a libpq password file for the replication user on every
// source (PostgreSQL docs, libpq-pgpass.html: host:port:database:user:password,
// with ':' and '\' escaped). Pure.
func (s Setup) Passfile(password string) string {
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	var b strings.Builder
	for _, src := range s.Sources {
		fmt.Fprintf(&b, "%s:%d:*:%s:%s\n", esc.Replace(src.Host), src.Port, esc.Replace(s.User), esc.Replace(password))
	}
	return b.String()
}

// AgentConfig is the agent's configuration in the accessory: it writes the
// passfile (0600, in the state directory) and finds PostgreSQL's tools.
func (s Setup) AgentConfig(sec Secrets, log io.Writer) (AgentConfig, error) {
	if err := os.MkdirAll(s.StateDir, 0o755); err != nil { // the spool (0700) and passfile (0600) are inside
		return AgentConfig{}, fmt.Errorf("making the backup state directory %s: %w", s.StateDir, err)
	}
	pass := filepath.Join(s.StateDir, "pgpass")
	if err := atomicfile.Write(pass, []byte(s.Passfile(sec.Replication)), 0o600); err != nil {
		return AgentConfig{}, fmt.Errorf("writing the replication passfile: %w", err)
	}
	bin, err := FindPGBin(s.Major)
	if err != nil {
		return AgentConfig{}, err
	}
	every, _ := s.baseEvery()
	cfg := AgentConfig{Sources: s.Sources, User: s.User, Env: []string{"PGPASSFILE=" + pass}, BinDir: bin,
		Spool: s.Spool(), SpoolCap: s.SpoolCap, BaseEvery: every, Policy: s.Retention, Log: log}
	if drills, _ := s.drillEvery(); drills > 0 {
		d, err := s.DrillSchedule(sec, bin)
		if err != nil {
			return cfg, err
		}
		d.Every = drills
		cfg.Drill = &d
	}
	return cfg, nil
}

// DrillSchedule is how the accessory runs drills: into scratch space in
// the state directory, with the image's PostgreSQL, as the postgres user.
func (s Setup) DrillSchedule(sec Secrets, bin string) (DrillSchedule, error) {
	cred, err := PostgresCred()
	if err != nil {
		return DrillSchedule{}, err
	}
	return DrillSchedule{Check: s.DrillCheck, BinDir: bin, Dir: filepath.Join(s.StateDir, "drills"), Cred: cred, User: sec.DBUser}, nil
}

// FindPGBin finds PostgreSQL's programs for a major version:
// $UNDERSTUDY_PG_BINDIR when its programs are of that major, Debian's
// /usr/lib/postgresql/<major>/bin, else PATH (the official image puts that
// same directory there) when its pg_ctl is of that major.
func FindPGBin(major int) (string, error) {
	if d := os.Getenv("UNDERSTUDY_PG_BINDIR"); d != "" && programMajor(filepath.Join(d, "pg_ctl")) == major {
		return d, nil
	}
	d := fmt.Sprintf("/usr/lib/postgresql/%d/bin", major)
	if _, err := os.Stat(filepath.Join(d, "pg_receivewal")); err == nil {
		return d, nil
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil && programMajor(p) == major {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("PostgreSQL %d's programs are not in %s nor on PATH: install postgresql-%d (or postgresql, when it is your distribution's major), or set UNDERSTUDY_PG_BINDIR to a directory holding them (backups are restored with the same major version they were taken with)", major, d, major)
}

// programMajor asks a PostgreSQL program its major version (0: it cannot say).
func programMajor(prog string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, prog, "--version").Output()
	if err != nil {
		return 0
	}
	m, _ := pgops.ParseProgramVersion(string(out))
	return m
}

// errNoPostgresUser names the package that makes the user: any major's
// server package does (postgresql-common's postinst), so the
// distribution's own, whatever its major.
var errNoPostgresUser = errors.New("running as root, and there is no postgres user to run PostgreSQL as: install your distribution's PostgreSQL (sudo apt-get install postgresql), which creates it, or run as an ordinary user")

// PostgresCred is who PostgreSQL runs as when understudy runs as root
// (postgres refuses root): the postgres user. Nil when not root.
func PostgresCred() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errNoPostgresUser
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
