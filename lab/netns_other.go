//go:build !linux

package lab

import (
	"errors"
	"os"
)

// enterNetNS: network namespaces are Linux's; a lab with --netns runs on
// Linux only (understudy builds for macOS drive Kamal servers, not labs).
func enterNetNS(*os.File) error {
	return errors.New("network namespaces exist only on Linux: run the lab with --netns on a Linux machine")
}
