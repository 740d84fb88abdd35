package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/live"
)

// BackupSite is the Kamal target's live.BackupSite: base backups and
// drills run in the backup accessory next to the standby (the nodes'
// image: its PostgreSQL and locales), a restore into a node in a fresh
// container of the node's image on its server, and a restore on this
// machine with this machine's PostgreSQL.
type BackupSite struct {
	Control *Control
	Agent   *BackupAgent
	// In the accessory: the understudy binary and backup.json's path.
	Binary, SetupPath string
	// The bucket and the key, resolved on this machine as Kamal resolves
	// secrets; a restore into a node hands them over on stdin.
	Storage backup.S3Config
	Secrets backup.Secrets
	KeyErr  error
	DataDir string // PGDATA in the nodes' containers
	Major   int
}

var _ live.BackupSite = (*BackupSite)(nil)

// TakeBase runs `understudy backup` in the backup accessory; its output
// comes here as it is written.
func (s *BackupSite) TakeBase(ctx context.Context, out io.Writer) error {
	fmt.Fprintf(out, "base backup, run in the backup accessory %s on %s\n", s.Agent.Name, s.Agent.Host)
	return s.Agent.Exec(ctx, out, s.Binary, "backup", "--config", s.SetupPath)
}

// DrillArgv is `restore drill` in the backup accessory. Pure.
func (s *BackupSite) DrillArgv(o live.DrillOptions) []string {
	argv := []string{s.Binary, "restore", "drill", "--config", s.SetupPath}
	if o.Check != "" {
		argv = append(argv, "--check", o.Check)
	}
	if o.JSON {
		argv = append(argv, "--json")
	}
	return argv
}

// Drill runs `restore drill` in the backup accessory; its exit status
// comes back as a *live.DrillFailed.
func (s *BackupSite) Drill(ctx context.Context, out io.Writer, o live.DrillOptions) (*backup.DrillRecord, error) {
	err := s.Agent.Exec(ctx, out, s.DrillArgv(o)...)
	if code := ExitCode(err); code == 1 || code == 2 {
		return nil, &live.DrillFailed{Code: code, Where: s.Agent.Name}
	}
	return nil, err
}

// NodeData reads the node's data directory on its server.
func (s *BackupSite) NodeData(ctx context.Context, node string) (bool, string, error) {
	return s.Control.NodeDataState(ctx, node, s.DataDir)
}

// Here is a restore on this machine: its PostgreSQL programs of the
// cluster's major, as the postgres user, logging in as the image's
// bootstrap superuser.
func (s *BackupSite) Here() (live.LocalRestore, error) {
	bin, err := backup.FindPGBin(s.Major)
	if err != nil {
		return live.LocalRestore{}, err
	}
	cred, err := backup.PostgresCred()
	return live.LocalRestore{BinDir: bin, Cred: cred, User: s.Control.DBUser}, err
}

// RestoreHereInput is what `restore --here` reads on stdin: never argv,
// env or a file.
type RestoreHereInput struct {
	Storage         backup.S3Config `json:"storage"`
	AccessKeyID     string          `json:"access_key_id"`
	SecretAccessKey string          `json:"secret_access_key"`
	Key             string          `json:"key"`
}

// RestoreHereArgs is `restore --here`'s command line on the node's server.
// Pure.
func (s *BackupSite) RestoreHereArgs(target live.RestoreTarget) []string {
	return []string{"--pgdata", s.DataDir, "--to", target.Text, "--timeline", strconv.Itoa(int(target.Timeline)), "--user", s.Control.DBUser, "--major", strconv.Itoa(s.Major)}
}

// RestoreIntoNode copies understudy to the node's server and runs `restore
// --here` there, in a fresh container of the node's image with its data
// directory; the bucket's secrets and the key go on stdin.
func (s *BackupSite) RestoreIntoNode(ctx context.Context, out io.Writer, node string, target live.RestoreTarget) error {
	if s.Secrets.Key == nil {
		return fmt.Errorf("restoring needs the backup key here: %w", s.KeyErr)
	}
	in, err := json.Marshal(RestoreHereInput{Storage: s.Storage, AccessKeyID: s.Secrets.AccessKeyID, SecretAccessKey: s.Secrets.SecretAccessKey, Key: s.Secrets.Key.String()})
	if err != nil {
		return err
	}
	return s.Control.RestoreNode(ctx, node, s.DataDir, s.RestoreHereArgs(target), bytes.NewReader(in), out)
}
