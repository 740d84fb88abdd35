package remote

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeShell answers uname -m and records what runs, with its input.
type fakeShell struct {
	mu       sync.Mutex
	machine  map[string]string
	cmds     []string
	stdin    map[string][]byte
	sumsSays string
}

func (f *fakeShell) Exec(_ context.Context, host, cmd string, stdin io.Reader) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, host+": "+cmd)
	if stdin != nil {
		b, _ := io.ReadAll(stdin)
		if f.stdin == nil {
			f.stdin = map[string][]byte{}
		}
		f.stdin[host] = b
	}
	switch {
	case cmd == "uname -m":
		return []byte(f.machine[host] + "\n"), nil
	case strings.HasPrefix(cmd, "sha256sum "):
		return []byte(f.sumsSays), nil
	}
	return nil, nil
}

// builds records the machines asked for and answers with one file.
type builds struct {
	file  string
	asked []string
}

func (b *builds) Linux(_ context.Context, goarch string) (string, error) {
	b.asked = append(b.asked, goarch)
	return b.file, nil
}

func TestGOARCH(t *testing.T) {
	for m, want := range map[string]string{"x86_64": "amd64", "aarch64": "arm64", "arm64\n": "arm64"} {
		if got, err := GOARCH(m); err != nil || got != want {
			t.Errorf("GOARCH(%q) = %q, %v", m, got, err)
		}
	}
	if _, err := GOARCH("riscv64"); err == nil || !strings.Contains(err.Error(), `x86_64 and aarch64`) {
		t.Errorf("riscv64: %v", err)
	}
}

// The build is chosen by each server's uname -m, read once per host, and
// checked before anything is copied: here /bin/sh, dynamically linked.
func TestUnderstudyForAsksEachServersMachine(t *testing.T) {
	sh := &fakeShell{machine: map[string]string{"a": "aarch64", "b": "x86_64", "c": "riscv64"}}
	b := &builds{file: "/bin/sh"}
	c := &Control{Shell: sh, Builds: b}
	ctx := context.Background()
	if _, err := c.UnderstudyFor(ctx, "a"); err == nil || !strings.Contains(err.Error(), "a: ") {
		t.Errorf("an x86_64 /bin/sh for an aarch64 server: %v", err)
	}
	_, err := c.UnderstudyFor(ctx, "b")
	if err == nil || !strings.Contains(err.Error(), "linked against the C library") || !strings.Contains(err.Error(), "reinstall understudy") {
		t.Errorf("a dynamic binary for an x86_64 server: %v", err)
	}
	c.UnderstudyFor(ctx, "b")
	if _, err := c.UnderstudyFor(ctx, "c"); err == nil || !strings.Contains(err.Error(), `"riscv64"`) {
		t.Errorf("a riscv64 server: %v", err)
	}
	if got := strings.Join(b.asked, " "); got != "arm64 amd64 amd64" {
		t.Errorf("builds asked for %q", got)
	}
	unames := 0
	for _, cmd := range sh.cmds {
		if strings.HasSuffix(cmd, "uname -m") {
			unames++
		}
	}
	if unames != 3 {
		t.Errorf("uname -m ran %d times for 3 hosts:\n%s", unames, strings.Join(sh.cmds, "\n"))
	}
	if _, err := (&Control{Shell: sh}).UnderstudyFor(ctx, "a"); err == nil {
		t.Error("no Builds: no error")
	}
}

// InstallUnderstudy streams the chosen file into an atomic install;
// UnderstudyCurrent compares the server's sha256sum with the local file's.
func TestInstallUnderstudy(t *testing.T) {
	exe := staticELF(t, elf.EM_X86_64)
	sh := &fakeShell{machine: map[string]string{"db": "x86_64"}}
	c := &Control{Shell: sh, Builds: &builds{file: exe}}
	got, err := c.InstallUnderstudy(context.Background(), "db", "$PWD/.understudy/bin")
	if err != nil || got != exe {
		t.Fatalf("InstallUnderstudy: %q %v", got, err)
	}
	want, _ := os.ReadFile(exe)
	if string(sh.stdin["db"]) != string(want) || !strings.Contains(sh.cmds[len(sh.cmds)-1], InstallCmd("$PWD/.understudy/bin", "understudy")) {
		t.Errorf("the copy: %d bytes sent, commands %v", len(sh.stdin["db"]), sh.cmds)
	}
	sum, _ := fileSum(exe)
	sh.sumsSays = sum + "  .understudy/bin/understudy\n"
	if ok, _, err := c.UnderstudyCurrent(context.Background(), "db", "$PWD/.understudy/bin"); !ok || err != nil {
		t.Errorf("UnderstudyCurrent after the copy: %v %v", ok, err)
	}
	sh.sumsSays = strings.Repeat("0", 64) + "  .understudy/bin/understudy\n"
	if ok, _, _ := c.UnderstudyCurrent(context.Background(), "db", "$PWD/.understudy/bin"); ok {
		t.Error("UnderstudyCurrent with another file there")
	}
}

// staticELF writes the smallest executable ELF header debug/elf reads: one
// PT_LOAD segment, no interpreter, no dynamic section.
func staticELF(t *testing.T, m elf.Machine) string {
	var b bytes.Buffer
	le := binary.LittleEndian
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(m), Version: uint32(elf.EV_CURRENT), Entry: 0x400000,
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1}
	copy(h.Ident[:], []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)})
	binary.Write(&b, le, h)
	binary.Write(&b, le, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: 0x400000, Paddr: 0x400000, Filesz: 120, Memsz: 120, Align: 0x1000})
	file := filepath.Join(t.TempDir(), "understudy")
	if err := os.WriteFile(file, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkBinary(file, "x86_64"); m == elf.EM_X86_64 && err != nil {
		t.Fatalf("the hand-made static ELF: %v", err)
	}
	return file
}
