//go:build !linux

package backup

import (
	"os"
	"syscall"
)

// growPipe: only Linux lets a pipe grow (base backups run on Linux servers;
// this is for builds of understudy for the operator's macOS).
func growPipe(*os.File) {}

// dieWithParent: only Linux has a parent-death signal.
func dieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
