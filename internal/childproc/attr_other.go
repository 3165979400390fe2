//go:build !linux

package childproc

import "syscall"

// SysProcAttr: only Linux can tie a child's life to its parent.
func SysProcAttr() *syscall.SysProcAttr { return nil }
