package setup

import (
	"fmt"
	"path"
	"strings"

	"github.com/understudy-dev/understudy/backup"
	"github.com/understudy-dev/understudy/kamal"
)

// BackupOptions are init's --backup-* flags: where the backups go.
type BackupOptions struct {
	Endpoint  string // --backup-endpoint: https://s3.eu-central-1.amazonaws.com, https://<account>.r2.cloudflarestorage.com, ...
	Region    string // --backup-region
	Bucket    string // --backup-bucket
	Prefix    string // --backup-prefix, default <service>[/<destination>]
	PathStyle bool   // --backup-path-style
	Host      string // --backup-host: a node's server, default the standby's
	KeepBases int    // --backup-keep: base backups kept, default 7
	SpoolCap  int64  // --backup-spool-cap
	// DrillEvery: scheduled restore drills in the accessory (--backup-drill-every,
	// default a week; "0" for none); DrillCheck: SQL run on each drill's copy.
	DrillEvery, DrillCheck string
}

// The backup accessory: the nodes' own image (so pg_receivewal and
// pg_basebackup match the server), on the host network (its replication
// logins come from the server's own address, which pg_hba.conf lets in),
// running the understudy binary that apply puts in its bin directory.
const (
	BackupSetupFile   = "backup.json" // in GeneratedDir
	BackupEnv         = "UNDERSTUDY_BACKUP"
	BackupBinDir      = "/understudy/bin"
	BackupBinary      = BackupBinDir + "/understudy"
	BackupSetupPath   = MountDir + "/backup.json"
	BackupStateDir    = "/var/lib/understudy-backup"
	BackupBinHostDir  = "bin"   // directories: entry, under the accessory's service directory
	BackupStateVolume = "state" // likewise
	DefaultKeepBases  = 7
	DefaultSpoolCap   = 1 << 30
	DefaultDrillEvery = "168h"
)

// BackupCmd is the backup accessory's cmd.
var BackupCmd = BackupBinary + " backup agent --config " + BackupSetupPath

// BackupName is the backup accessory's name for a primary.
func BackupName(primary string) string { return primary + "-backup" }

// planBackup adds (or brings in line) the backup accessory and returns its
// setup. It runs after the nodes are in place.
func planBackup(ed *kamal.Editor, o Options, p *Plan) (backup.Setup, error) {
	bo := *o.Backup
	cfg := ed.Config()
	if bo.Host == "" {
		bo.Host = p.StandbyHost
	}
	if !sameHost(bo.Host, p.StandbyHost) && !sameHost(bo.Host, p.PrimaryHost) {
		return backup.Setup{}, refuse("--backup-host", fmt.Sprintf("%s is neither node's server (%s, %s)", bo.Host, p.PrimaryHost, p.StandbyHost),
			"run the backup accessory on the standby's server (the default: drop --backup-host) or the primary's: pg_hba.conf lets replication logins in only from the nodes' addresses")
	}
	if bo.Prefix == "" {
		svc, _ := cfg.Str(cfg.Root.Get("service"))
		bo.Prefix = strings.Trim(path.Join(svc, o.Destination), "/")
	}
	if bo.KeepBases == 0 {
		bo.KeepBases = DefaultKeepBases
	}
	if bo.SpoolCap == 0 {
		bo.SpoolCap = DefaultSpoolCap
	}
	if bo.DrillEvery == "" {
		bo.DrillEvery = DefaultDrillEvery
	}
	s := backup.Setup{
		Accessory:  BackupName(p.Primary),
		Major:      p.Image.Major,
		Storage:    backup.S3Config{Endpoint: bo.Endpoint, Region: bo.Region, Bucket: bo.Bucket, Prefix: bo.Prefix, PathStyle: bo.PathStyle},
		User:       p.Cluster.ReplUser,
		StateDir:   BackupStateDir,
		SpoolCap:   bo.SpoolCap,
		BaseEvery:  "24h",
		DrillEvery: bo.DrillEvery,
		DrillCheck: bo.DrillCheck,
		Retention:  backup.Policy{KeepBases: bo.KeepBases},
		Secrets:    backup.DefaultSecretNames,
	}
	s.Secrets.Replication = PasswordSecret
	for _, n := range p.Cluster.Nodes {
		s.Sources = append(s.Sources, backup.Source{Name: n.Name, Host: n.Addr, Port: n.Port})
	}
	if err := s.Storage.Validate(); err != nil {
		return s, refuse("--backup-endpoint", err.Error(), "pass --backup-endpoint URL and --backup-bucket NAME (and --backup-prefix PATH to share a bucket)")
	}
	if err := s.Validate(); err != nil {
		return s, refuse("--backup-drill-every", err.Error(), "give a duration such as 168h (a week), or 0 for no scheduled drills")
	}

	p.Notes = append(p.Notes, fmt.Sprintf("%s runs the backup agent on %s: WAL streamed from the standby (slot %s on the node it streams from) and a base backup every %s, sealed with BACKUP_ENCRYPTION_KEY, into %s; `understudy apply` puts the understudy binary on that server and boots it",
		s.Accessory, bo.Host, backup.DefaultSlot, s.BaseEvery, s.Storage.Endpoint+"/"+s.Storage.Bucket+"/"+s.Storage.Prefix))
	name := s.Accessory
	setupFile := path.Join(p.GenDir, BackupSetupFile)
	if a := cfg.Accessory(name); a != nil {
		if _, ours := a.Env().Clear[BackupEnv]; !ours {
			return s, refuse(a.Val.Pos(), fmt.Sprintf("accessory %s exists and was not made by understudy", name),
				"rename or remove it; understudy adds its backup accessory under that name")
		}
		if err := ed.EnsureScalar(name, []string{hostKey(a)}, kamal.Quote(bo.Host)); err != nil {
			return s, err
		}
		for _, kv := range [][2]string{{"network", "host"}, {"cmd", BackupCmd}} {
			if err := ed.EnsureScalar(name, []string{kv[0]}, kamal.Quote(kv[1])); err != nil {
				return s, err
			}
		}
		for _, sec := range s.Secrets.Names() {
			if err := ed.EnsureListItem(name, []string{"env", "secret"}, kamal.Quote(sec), func(v *kamal.Val) bool {
				x, _ := ed.Config().Str(v)
				n, _, _ := strings.Cut(x, ":")
				return n == sec
			}); err != nil {
				return s, err
			}
		}
		return s, nil
	}
	prim := cfg.Accessory(p.Primary)
	img := kamal.AccessoryBody(prim).Get("image")
	if img == nil {
		return s, refuse(prim.Val.Pos(), fmt.Sprintf("accessory %s has no image: of its own", p.Primary), "give it image: postgres:%d", p.Image.Major)
	}
	var secrets kamal.List
	for _, n := range s.Secrets.Names() {
		secrets = append(secrets, kamal.Quote(n))
	}
	// Drills log in to their copy as the cluster's bootstrap superuser,
	// the image's POSTGRES_USER: the backup accessory gets it the way the
	// primary does.
	clear := kamal.Map{{Key: BackupEnv, Val: kamal.Quote(p.Primary)}}
	penv := prim.Env()
	if v, ok := penv.Clear["POSTGRES_USER"]; ok {
		clear = append(clear, kamal.KV{Key: "POSTGRES_USER", Val: kamal.Raw(v.Source())})
	}
	for _, ref := range penv.Secret {
		if ref.Name == "POSTGRES_USER" {
			secrets = append(secrets, kamal.Raw(ref.Val.Source()))
		}
	}
	body := kamal.Map{
		{Key: "image", Val: img},
		{Key: "host", Val: kamal.Quote(bo.Host)},
		{Key: "network", Val: kamal.Quote("host")},
		{Key: "cmd", Val: kamal.Quote(BackupCmd)},
		{Key: "env", Val: kamal.Map{
			{Key: "clear", Val: clear},
			{Key: "secret", Val: secrets},
		}},
		{Key: "files", Val: kamal.List{kamal.Quote(setupFile + ":" + BackupSetupPath)}},
		{Key: "directories", Val: kamal.List{
			kamal.Quote(BackupBinHostDir + ":" + BackupBinDir + ":ro"),
			kamal.Quote(BackupStateVolume + ":" + BackupStateDir),
		}},
		{Key: "options", Val: kamal.Map{{Key: "stop-timeout", Val: kamal.Raw("30")}}},
	}
	after := p.Standby
	if err := ed.AddAccessory(name, after, body); err != nil {
		return s, err
	}
	return s, nil
}
