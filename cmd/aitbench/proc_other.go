//go:build !linux

package main

import "syscall"

// sysProcAttr: only Linux can tie a child's life to the harness.
func sysProcAttr() *syscall.SysProcAttr { return nil }
