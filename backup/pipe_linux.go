package backup

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// growPipe makes a pipe 1 MiB (Linux's default limit for F_SETPIPE_SZ,
// fcntl(2)) instead of 64 KiB, so pg_basebackup writes ahead while a chunk
// is being sealed.
func growPipe(f *os.File) { unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20) }

// dieWithParent makes a child get SIGTERM when this process dies (its
// parent-death signal, prctl(2) PR_SET_PDEATHSIG): an agent killed with
// SIGKILL leaves no pg_receivewal holding its slot, no pg_basebackup
// streaming to nobody.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
