package setup

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/understudy-dev/understudy/kamal"
)

// planSecret adds REPLICATION_PASSWORD (and, with --backup, the backup
// secrets) to the secrets file that holds the database password, written the
// same way that password is fetched: Kamal 2 commits .kamal/secrets, so it
// may only hold references (Kamal: lib/kamal/secrets.rb). It never reads or
// generates a secret itself.
func planSecret(src kamal.Source, cfg *kamal.Config, prim *kamal.Accessory, o Options, p *Plan, extraNames []string) (*FileChange, error) {
	sec, err := kamal.LoadSecrets(src, cfg.SecretsPath(), o.Destination)
	if err != nil {
		return nil, err
	}
	for _, ref := range prim.Env().Secret {
		if f, l := sec.Lookup(ref.Secret); f == nil {
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s: secret %s is not defined in %s; kamal will refuse to boot the accessory until it is", ref.Val.Pos(), ref.Secret, strings.Join(sec.Paths, " or ")))
		} else if strings.Contains(ref.Secret, "PASSWORD") && !kamal.IsReference(l.Raw) {
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s:%d: %s holds a password in plain text, in a file Kamal 2 expects you to commit; fetch it instead, e.g. %s=$%s from your environment or a password manager", f.Path, l.Line, ref.Secret, ref.Secret, ref.Secret))
		}
	}
	var names []string
	for _, n := range append([]string{PasswordSecret}, extraNames...) {
		if f, l := sec.Lookup(n); f != nil {
			if n == PasswordSecret {
				p.SecretHowTo = fmt.Sprintf("%s is already defined in %s:%d; it must hold the replication password", PasswordSecret, f.Path, l.Line)
			}
			continue
		}
		names = append(names, n)
	}
	if len(names) == 0 {
		return nil, nil
	}

	// Find how the database password is fetched.
	dbSecret := ""
	for _, ref := range prim.Env().Secret {
		if ref.Name == "POSTGRES_PASSWORD" {
			dbSecret = ref.Secret
		}
	}
	var file *kamal.SecretsFile
	var line *kamal.SecretLine
	if dbSecret != "" {
		file, line = sec.Lookup(dbSecret)
	}
	target := cfg.SecretsPath()
	if o.Destination != "" {
		target += "." + o.Destination
	}
	text := ""
	if file != nil {
		target, text = file.Path, file.Text
	} else if t, err := src.ReadFile(target); err == nil {
		text = t
	}

	var newLines []string
	var extra *fetchEdit
	for _, name := range names {
		newLine, how, fetch := secretReference(line, file, dbSecret, name)
		if fetch != nil {
			extra = fetch
		}
		newLines = append(newLines, newLine)
		if name == PasswordSecret {
			p.SecretHowTo = fmt.Sprintf("%s reads %s; %s", target, newLine, how)
		} else {
			p.Notes = append(p.Notes, fmt.Sprintf("%s reads %s; %s", target, newLine, backupSecretHow(name, how)))
		}
	}
	block := strings.Join(newLines, "\n")
	var out string
	if line != nil {
		out = insertAfterLine(text, line.Line, block)
	} else {
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		out = text + block + "\n"
	}
	if extra != nil {
		out = extra.apply(out, dbSecret, names)
	}
	if strings.Contains(text, "\r\n") { // keep a CRLF file CRLF
		out = strings.ReplaceAll(strings.ReplaceAll(out, "\r\n", "\n"), "\n", "\r\n")
	}
	return &FileChange{Path: target, New: out}, nil
}

// secretReference is the line that fetches the secret name the way the
// database password's line does, and what the user must do for it.
func secretReference(line *kamal.SecretLine, file *kamal.SecretsFile, dbSecret, name string) (newLine, how string, fetch *fetchEdit) {
	raw := "$" + name
	how = fmt.Sprintf("generate one with `understudy password` and keep it where you keep POSTGRES_PASSWORD: export %s in the environment you run kamal from (shell profile, direnv, or your CI's secret store). It must stay the same from run to run", name)
	if line != nil && kamal.IsReference(line.Raw) {
		switch {
		case strings.Contains(line.Raw, dbSecret) && strings.Contains(line.Raw, "kamal secrets extract"):
			raw = strings.Replace(line.Raw, dbSecret, name, 1)
			fetch = findFetch(file, dbSecret)
			how = fmt.Sprintf("add a secret named %s to the same store your `kamal secrets fetch` line reads (generate the value there, or with `understudy password`)", name)
		case strings.Contains(line.Raw, dbSecret):
			raw = strings.Replace(line.Raw, dbSecret, name, 1)
			v := strings.TrimSpace(strings.TrimPrefix(strings.Trim(raw, `"`), "$"))
			v = strings.Trim(v, "{}")
			how = fmt.Sprintf("generate one with `understudy password` and export it as %s where %s comes from (shell profile, direnv, or your CI's secret store). It must stay the same from run to run", v, strings.Trim(strings.TrimPrefix(strings.Trim(line.Raw, `"`), "$"), "{}"))
		case opRE.MatchString(line.Raw):
			field := strings.ReplaceAll(strings.ToLower(name), "_", "-")
			if name == PasswordSecret {
				field = "replication-password"
			}
			raw = opRE.ReplaceAllString(line.Raw, "${1}"+field)
			how = fmt.Sprintf("add a password field named %s to that 1Password item (%s); let 1Password generate it", field, opRE.FindStringSubmatch(line.Raw)[0])
		}
	}
	return name + "=" + raw, how, fetch
}

// backupSecretHow rewrites the generic advice for what each backup secret holds.
func backupSecretHow(name, how string) string {
	switch name {
	case "BACKUP_ENCRYPTION_KEY":
		return "it holds the key `understudy backup keygen` prints (not a password: generate it with that command); without it no backup can be restored, so keep a copy outside the servers"
	case FailoverSecret:
		return "it holds the secret `understudy failover secret` prints (not a password: generate it with that command), from which the etcd members derive their TLS; keep it where POSTGRES_PASSWORD is, the same from run to run (a new one takes a rolling restart of the agents and the witness)"
	case "BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY":
		return "it holds your object storage's API key (create one with access to the bucket only), stored where POSTGRES_PASSWORD is"
	}
	return how
}

var opRE = regexp.MustCompile(`(op://[^/\s)]+/[^/\s)]+/)[^/\s)]+`)

func insertAfterLine(text string, line int, s string) string {
	lines := strings.SplitAfter(text, "\n")
	var b strings.Builder
	for i, l := range lines {
		b.WriteString(l)
		if i == line-1 {
			if !strings.HasSuffix(l, "\n") {
				b.WriteString("\n")
			}
			b.WriteString(s + "\n")
		}
	}
	return b.String()
}

// fetchEdit adds a name to a `kamal secrets fetch` line.
type fetchEdit struct{ line int }

func findFetch(f *kamal.SecretsFile, name string) *fetchEdit {
	for _, l := range f.Lines {
		if strings.Contains(l.Raw, "kamal secrets fetch") && regexp.MustCompile(`\b`+regexp.QuoteMeta(name)+`\b`).MatchString(l.Raw) {
			return &fetchEdit{line: l.Line}
		}
	}
	return nil
}

func (e *fetchEdit) apply(text, after string, names []string) string {
	lines := strings.Split(text, "\n")
	if e.line-1 < len(lines) {
		re := regexp.MustCompile(`\b` + regexp.QuoteMeta(after) + `\b`)
		l := lines[e.line-1]
		var add []string
		for _, n := range names {
			if !regexp.MustCompile(`\b` + regexp.QuoteMeta(n) + `\b`).MatchString(l) {
				add = append(add, n)
			}
		}
		if loc := re.FindStringIndex(l); loc != nil && len(add) > 0 {
			lines[e.line-1] = l[:loc[1]] + " " + strings.Join(add, " ") + l[loc[1]:]
		}
	}
	return strings.Join(lines, "\n")
}

// appAdvice suggests the app's connection settings: a multi-host URL that
// always lands on the writable node (libpq docs, target_session_attrs).
func (p *Plan) appAdvice(src kamal.Source, cfg *kamal.Config, prim *kamal.Accessory) {
	sec, _ := kamal.LoadSecrets(src, cfg.SecretsPath(), cfg.Destination)
	env := prim.Env()
	value := func(name, fallback string) string {
		if v, ok := env.Clear[name]; ok {
			if s, ok := cfg.Str(v); ok {
				return s
			}
		}
		for _, ref := range env.Secret {
			if ref.Name == name && sec != nil {
				if _, l := sec.Lookup(ref.Secret); l != nil {
					if s, ok := kamal.Literal(l.Raw); ok {
						return s
					}
				}
				return "<" + name + ">"
			}
		}
		return fallback
	}
	user := value("POSTGRES_USER", "postgres")
	db := value("POSTGRES_DB", user)
	p.Connect = ConnectInput{Nodes: p.Cluster.Nodes, User: user, DB: db, Router: KamalRouter(p.Router)}
	if p.Router != nil {
		p.AppURL = p.Connect.RouterURL(false)
	}
}
