package main

import "golang.org/x/sys/unix"

// ioctlReadTermios reads a terminal's settings (tcgetattr(3)); failing, the
// file is not a terminal.
const ioctlReadTermios = unix.TIOCGETA
