package release

import (
	"archive/tar"
	"compress/gzip"
	"debug/elf"
	"debug/macho"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"time"
)

// File is one file of an archive or gem: its contents come from Path or Data.
type File struct {
	Name string // slash-separated, relative to the package's root
	Mode int64  // 0o755 or 0o644
	Path string
	Data []byte
}

// Contents is what p's archive holds beside its README: the executable for
// p, and the Linux builds for the other machines in libexec/ (for a Linux
// p, its own machine's build is the executable itself). builds maps each
// built platform to its binary; a platform not built is left out. Pure.
func Contents(p Platform, builds map[Platform]string) []File {
	files := []File{{Name: "understudy", Mode: 0o755, Path: builds[p]}}
	return append(files, linuxBuilds(p, builds, LibexecDir)...)
}

// linuxBuilds are the Linux builds that travel with p's executable, in dir.
func linuxBuilds(p Platform, builds map[Platform]string, dir string) []File {
	var out []File
	for _, q := range Platforms {
		if q.GOOS != "linux" || q == p || builds[q] == "" {
			continue
		}
		out = append(out, File{Name: path.Join(dir, LinuxName(q.GOARCH)), Mode: 0o755, Path: builds[q]})
	}
	return out
}

// ArchiveReadme is the README.txt of an archive. Pure.
func ArchiveReadme(version string, p Platform) string {
	return fmt.Sprintf(`understudy %s for %s

Put this directory where you keep tools and understudy on your PATH, e.g.

  sudo mkdir -p /usr/local/lib/understudy
  sudo cp -R . /usr/local/lib/understudy
  sudo ln -sf /usr/local/lib/understudy/understudy /usr/local/bin/understudy

Keep libexec/ beside the executable: it holds the static Linux builds that
`+"`understudy apply`"+` installs on your servers, chosen by each server's machine
type (a symbolic link to the executable is followed to find it).

Check: understudy version
Docs:  https://github.com/understudy-dev/understudy/blob/main/docs/install.md
`, version, p)
}

// WriteTarGz writes files under root/ as a gzipped tar that depends only on
// the files' contents and names: entries in name order, every time mtime,
// owner root, no user or group names, no gzip name or time.
func WriteTarGz(w io.Writer, root string, files []File, mtime time.Time) error {
	files = append([]File(nil), files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed+5) // level 6, gzip(1)'s default
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	mtime = mtime.UTC().Truncate(time.Second)
	dirs := map[string]bool{}
	var addDir func(d string) error
	addDir = func(d string) error {
		if d == "." || dirs[d] {
			return nil
		}
		if err := addDir(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR})
	}
	for _, f := range files {
		name := path.Join(root, f.Name)
		if err := addDir(path.Dir(name)); err != nil {
			return err
		}
		data := f.Data
		if f.Path != "" {
			if data, err = os.ReadFile(f.Path); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: f.Mode, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

// Binary is what a built executable is, read from its headers.
type Binary struct {
	Platform Platform
	// Static: no program interpreter and no shared library needed (Linux:
	// neither PT_INTERP nor DT_NEEDED). Mach-O executables always link
	// libSystem, so it is false for darwin.
	Static bool
	// Signed: a Mach-O with a code signature (LC_CODE_SIGNATURE); macOS on
	// Apple silicon runs no arm64 executable without one (Go's linker signs
	// them ad hoc).
	Signed bool
}

// Inspect reads an executable's headers: ELF for Linux, Mach-O for macOS.
func Inspect(file string) (Binary, error) {
	if f, err := elf.Open(file); err == nil {
		defer f.Close()
		b := Binary{Platform: Platform{GOOS: "linux"}, Static: true}
		switch f.Machine {
		case elf.EM_X86_64:
			b.Platform.GOARCH = "amd64"
		case elf.EM_AARCH64:
			b.Platform.GOARCH = "arm64"
		default:
			b.Platform.GOARCH = f.Machine.String()
		}
		if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
			b.Platform.GOOS = f.OSABI.String()
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b.Static = false
			}
		}
		if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
			b.Static = false
		}
		return b, nil
	}
	f, err := macho.Open(file)
	if err != nil {
		return Binary{}, fmt.Errorf("%s is neither an ELF nor a Mach-O executable", file)
	}
	defer f.Close()
	b := Binary{Platform: Platform{GOOS: "darwin"}}
	switch f.Cpu {
	case macho.CpuAmd64:
		b.Platform.GOARCH = "amd64"
	case macho.CpuArm64:
		b.Platform.GOARCH = "arm64"
	default:
		b.Platform.GOARCH = f.Cpu.String()
	}
	if f.Type != macho.TypeExec {
		return b, fmt.Errorf("%s is a Mach-O file of type %v, not an executable", file, f.Type)
	}
	const lcCodeSignature = 0x1d // <mach-o/loader.h>
	for _, l := range f.Loads {
		if raw := l.Raw(); len(raw) >= 4 && f.ByteOrder.Uint32(raw) == lcCodeSignature {
			b.Signed = true
		}
	}
	return b, nil
}
