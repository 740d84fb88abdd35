package backup

import (
	"os"

	"golang.org/x/sys/unix"
)

// growPipe makes a pipe 1 MiB (Linux's default limit for F_SETPIPE_SZ,
// fcntl(2)) instead of 64 KiB, so pg_basebackup writes ahead while a chunk
// is being sealed.
func growPipe(f *os.File) { unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20) }
